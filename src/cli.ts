#!/usr/bin/env node
// Command-line entry: parses arguments and hands over to a command. Nothing else lives here.
import { parseArgs } from 'node:util';
import { ConfigError, loadConfig } from './config/load.js';
import { startServer } from './server/start.js';

const USAGE = `airlock — container mirror registry for disconnected and firewalled clusters

Usage:
  airlock serve [--config FILE] [--listen HOST:PORT] [--storage DIR] [--log-level LEVEL]
  airlock --help | --version

serve      Run the registry. Config comes from FILE (default config/airlock.yaml, or $AIRLOCK_CONFIG;
           built-in defaults when absent), then AIRLOCK_LISTEN, AIRLOCK_STORAGE, AIRLOCK_LOG_LEVEL,
           then the flags. Defaults: listen 0.0.0.0:5000, storage ./storage, log level info.

Exit codes: 0 ok, 1 runtime failure, 2 bad usage or bad configuration.
`;

type Command = (args: string[]) => Promise<number>;

async function serve(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      config: { type: 'string', short: 'c' },
      listen: { type: 'string', short: 'l' },
      storage: { type: 'string', short: 's' },
      'log-level': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  const config = loadConfig({ config: values.config, listen: values.listen, storage: values.storage, logLevel: values['log-level'] });
  const server = await startServer(config, { parsed: true });
  await new Promise<void>((resolve) => {
    const stop = (signal: string) => {
      server.log.info({ signal }, 'shutting down: finishing in-flight requests');
      server.close().then(resolve, resolve);
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
  });
  return 0;
}

const COMMANDS: Record<string, Command> = { serve };

export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(USAGE);
    return name === undefined ? 2 : 0;
  }
  if (name === '--version') {
    const { createRequire } = await import('node:module');
    process.stdout.write(`${(createRequire(import.meta.url)('../package.json') as { version: string }).version}\n`);
    return 0;
  }
  const command = COMMANDS[name];
  if (!command) {
    process.stderr.write(`airlock: unknown command "${name}"\n\n${USAGE}`);
    return 2;
  }
  try {
    return await command(rest);
  } catch (e) {
    if (e instanceof ConfigError) {
      process.stderr.write(`airlock: ${e.message}\n`);
      return 2;
    }
    if ((e as NodeJS.ErrnoException).code?.startsWith('ERR_PARSE_ARGS')) {
      process.stderr.write(`airlock: ${(e as Error).message}\n\n${USAGE}`);
      return 2;
    }
    process.stderr.write(`airlock: ${(e as Error).stack ?? e}\n`);
    return 1;
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (e) => {
    process.stderr.write(`airlock: ${(e as Error).stack ?? e}\n`);
    process.exitCode = 1;
  },
);
