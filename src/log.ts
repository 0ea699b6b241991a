import { pino, destination, type DestinationStream, type Logger } from 'pino';

export type { Logger };

/** JSON logs on stdout; credentials never reach them. */
export function createLogger(level: string, dest?: DestinationStream): Logger {
  return pino(
    {
      level,
      base: { service: 'airlock' },
      redact: {
        paths: [
          'req.headers.authorization',
          'req.headers.cookie',
          'res.headers["www-authenticate"]',
          'headers.authorization',
          'password',
          'token',
          '*.password',
          '*.token',
        ],
        censor: '[redacted]',
      },
    },
    dest ?? destination({ sync: false }),
  );
}
