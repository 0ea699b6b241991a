import { CertificateRequestError, generateCertificates } from '../tls/cert.js';
import { EXIT_FAILURE, EXIT_OK, EXIT_USAGE, type CommandOutput } from './io.js';

/** Long enough not to surprise a disconnected site soon; override with --days. */
export const DEFAULT_CERT_DAYS = 825;

export interface CertOptions {
  hosts: string[];
  ips: string[];
  outDir: string;
  days?: number;
  /** The port clients use, for the printed certs.d paths; default 5000. */
  port?: number;
  stdout?: CommandOutput;
  stderr?: CommandOutput;
}

/** `airlock cert`: writes a CA and a server certificate, then prints how to trust them. Returns the exit code. */
export async function runCert(options: CertOptions): Promise<number> {
  const stdout = options.stdout ?? process.stdout;
  const stderr = options.stderr ?? process.stderr;
  try {
    const result = await generateCertificates({
      hosts: options.hosts,
      ips: options.ips,
      outDir: options.outDir,
      days: options.days ?? DEFAULT_CERT_DAYS,
      port: options.port,
    });
    stdout.write(result.instructions);
    return EXIT_OK;
  } catch (e) {
    stderr.write(`airlock cert: ${(e as Error).message}\n`);
    return e instanceof CertificateRequestError ? EXIT_USAGE : EXIT_FAILURE;
  }
}
