import { existsSync, readFileSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';
import type { ZodError } from 'zod';
import { configSchema, type Config, type ConfigInput } from './schema.js';

export const DEFAULT_CONFIG_FILE = 'config/airlock.yaml';

/** A config problem a person can fix: where it is and why it is wrong. */
export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ConfigError';
  }
}

/** Values from the command line; they win over the environment, which wins over the file. */
export interface ConfigOverrides {
  config?: string;
  listen?: string;
  storage?: string;
  logLevel?: string;
}

function describeZodError(err: ZodError, source: string): string {
  const lines = err.issues.map((issue) => {
    const key = issue.path.length ? issue.path.join('.') : '(top level)';
    const reason = issue.code === 'unrecognized_keys' ? `unknown key(s) ${issue.keys.map((k) => `"${k}"`).join(', ')}` : issue.message;
    return `  ${key}: ${reason}`;
  });
  return `invalid configuration in ${source}:\n${lines.join('\n')}`;
}

/** Validates a config object (as from YAML or code) and applies defaults. */
export function parseConfig(input: unknown, source = 'configuration'): Config {
  const result = configSchema.safeParse(input ?? {});
  if (!result.success) throw new ConfigError(describeZodError(result.error, source));
  return result.data;
}

/** Reads the YAML config file; a missing default file means "embedded defaults". */
function readConfigFile(path: string, explicit: boolean): { input: ConfigInput; source: string } {
  if (!existsSync(path)) {
    if (explicit) throw new ConfigError(`config file ${path} does not exist`);
    return { input: {}, source: 'embedded defaults' };
  }
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new ConfigError(`cannot read config file ${path}: ${(e as Error).message}`);
  }
  let doc: unknown;
  try {
    doc = parseYaml(text);
  } catch (e) {
    throw new ConfigError(`config file ${path} is not valid YAML: ${(e as Error).message}`);
  }
  if (doc !== null && doc !== undefined && (typeof doc !== 'object' || Array.isArray(doc))) {
    throw new ConfigError(`config file ${path} must hold a YAML mapping at the top level`);
  }
  return { input: (doc ?? {}) as ConfigInput, source: path };
}

/**
 * Builds the effective config: file (--config, else AIRLOCK_CONFIG, else config/airlock.yaml),
 * then AIRLOCK_* environment variables, then command-line flags.
 */
export function loadConfig(flags: ConfigOverrides = {}, env: NodeJS.ProcessEnv = process.env): Config {
  const explicitPath = flags.config ?? env.AIRLOCK_CONFIG;
  const { input, source } = readConfigFile(explicitPath ?? DEFAULT_CONFIG_FILE, explicitPath !== undefined);
  const merged: Record<string, unknown> = { ...input };
  const log = { ...((merged.log as object | undefined) ?? {}) } as Record<string, unknown>;

  if (env.AIRLOCK_LISTEN) merged.listen = env.AIRLOCK_LISTEN;
  if (env.AIRLOCK_STORAGE) merged.storage = env.AIRLOCK_STORAGE;
  if (env.AIRLOCK_LOG_LEVEL) log.level = env.AIRLOCK_LOG_LEVEL;
  if (flags.listen !== undefined) merged.listen = flags.listen;
  if (flags.storage !== undefined) merged.storage = flags.storage;
  if (flags.logLevel !== undefined) log.level = flags.logLevel;
  if (Object.keys(log).length) merged.log = log;
  applyAwsEnvironment(merged, env);

  return parseConfig(merged, source);
}

/**
 * blobs.s3 takes what the file leaves out from the standard AWS_* variables, as every AWS tool
 * does: credentials need not sit in a config file. Each key is filled only when absent, so the file
 * still wins; a pairing mistake (a key id without its secret) is then reported by the schema.
 */
function applyAwsEnvironment(merged: Record<string, unknown>, env: NodeJS.ProcessEnv): void {
  const blobs = merged.blobs as { s3?: unknown } | undefined;
  if (!blobs || typeof blobs !== 'object' || !blobs.s3 || typeof blobs.s3 !== 'object') return;
  const s3 = { ...(blobs.s3 as Record<string, unknown>) };
  const fill: [string, string | undefined][] = [
    ['accessKeyId', env.AWS_ACCESS_KEY_ID],
    ['secretAccessKey', env.AWS_SECRET_ACCESS_KEY],
    ['region', env.AWS_REGION || env.AWS_DEFAULT_REGION],
  ];
  for (const [key, value] of fill) if (s3[key] === undefined && value) s3[key] = value;
  merged.blobs = { ...blobs, s3 };
}
