# syntax=docker/dockerfile:1
# Build stage: compiles TypeScript and the better-sqlite3 native addon.
FROM node:20-bookworm-slim AS build
RUN apt-get update && apt-get install -y --no-install-recommends python3 make g++ && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund --ignore-scripts && npm rebuild better-sqlite3
COPY tsconfig.json ./
COPY src ./src
RUN npx tsc -p tsconfig.json && npm prune --omit=dev

# Runtime stage: only the compiled code, production dependencies and the default config.
FROM node:20-bookworm-slim
ENV NODE_ENV=production \
    AIRLOCK_STORAGE=/var/lib/airlock \
    AIRLOCK_LISTEN=0.0.0.0:5000
WORKDIR /opt/airlock
COPY --from=build /src/node_modules ./node_modules
COPY --from=build /src/dist ./dist
COPY package.json ./
COPY config ./config
RUN groupadd --system --gid 10001 airlock \
 && useradd --system --uid 10001 --gid airlock --home-dir /var/lib/airlock --shell /usr/sbin/nologin airlock \
 && mkdir -p /var/lib/airlock && chown airlock:airlock /var/lib/airlock
USER 10001:10001
VOLUME /var/lib/airlock
EXPOSE 5000
HEALTHCHECK --interval=30s --timeout=5s CMD node -e "fetch('http://127.0.0.1:5000/healthz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"
ENTRYPOINT ["node", "dist/cli.js"]
CMD ["serve"]
