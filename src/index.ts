// Public API: start airlock from code with the same config object as the YAML file.
export { startServer, type RunningServer, type StartOptions } from './server/start.js';
export { loadConfig, parseConfig, ConfigError } from './config/load.js';
export type { Config, ConfigInput, UpstreamConfig, AuthConfig } from './config/schema.js';
export { RegistryError, type ErrorCode } from './registry/errors.js';
