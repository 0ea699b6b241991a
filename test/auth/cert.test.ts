import { execFileSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { readFileSync, rmSync, statSync } from 'node:fs';
import { createServer, get, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { CertificateRequestError, generateCertificates } from '../../src/tls/cert.js';
import { tempDir } from './helpers.js';

let dir: string;
let cleanup: () => void;
let server: Server | undefined;
beforeEach(() => ({ dir, cleanup } = tempDir('airlock-cert-')));
afterEach(async () => {
  await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
  server = undefined;
  cleanup();
});

/** An HTTPS server on 127.0.0.1 presenting the generated server certificate. */
async function serve(outDir: string): Promise<number> {
  server = createServer({ cert: readFileSync(join(outDir, 'server.crt')), key: readFileSync(join(outDir, 'server.key')) }, (_req, res) => res.end('ok'));
  await new Promise<void>((resolve) => server!.listen(0, '127.0.0.1', resolve));
  return (server.address() as AddressInfo).port;
}

/** GET / trusting only `ca`; resolves to the body or rejects with the TLS error. */
function fetchTrusting(port: number, ca: Buffer | undefined, servername?: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = get({ host: '127.0.0.1', port, path: '/', ca, servername, agent: false }, (res) => {
      let body = '';
      res.on('data', (c) => (body += c));
      res.on('end', () => resolve(body));
    });
    req.on('error', reject);
  });
}

function openssl(): string | undefined {
  try {
    return execFileSync('openssl', ['version'], { encoding: 'utf8' });
  } catch {
    return undefined;
  }
}

describe('generateCertificates', () => {
  it('writes a CA and a server certificate that a real TLS handshake accepts for the host and the IP', async () => {
    const result = await generateCertificates({ hosts: ['registry.example.test'], ips: ['127.0.0.1'], outDir: dir, days: 30 });
    const ca = readFileSync(result.caCert);
    const port = await serve(dir);

    await expect(fetchTrusting(port, ca, 'registry.example.test')).resolves.toBe('ok');
    // No servername: Node checks the certificate against the IP it connected to.
    await expect(fetchTrusting(port, ca)).resolves.toBe('ok');
    // A name that is not in the certificate is refused…
    await expect(fetchTrusting(port, ca, 'other.example.test')).rejects.toMatchObject({ code: 'ERR_TLS_CERT_ALTNAME_INVALID' });
    // …and so is the certificate when ca.crt is not trusted.
    await expect(fetchTrusting(port, undefined, 'registry.example.test')).rejects.toMatchObject({ code: 'UNABLE_TO_VERIFY_LEAF_SIGNATURE' });
  });

  it('writes the private keys with mode 0600', async () => {
    const result = await generateCertificates({ hosts: ['registry.example.test'], ips: [], outDir: dir, days: 30 });
    expect(statSync(result.caKey).mode & 0o777).toBe(0o600);
    expect(statSync(result.serverKey).mode & 0o777).toBe(0o600);
    expect(readFileSync(result.caKey, 'utf8')).toMatch(/^-----BEGIN PRIVATE KEY-----\n/);
    expect(readFileSync(result.serverCert, 'utf8')).toMatch(/^-----BEGIN CERTIFICATE-----\n/);
  });

  it('makes a CA certificate (CA:TRUE, keyCertSign) and a serverAuth leaf signed by it, valid for the given days', async () => {
    const result = await generateCertificates({ hosts: ['registry.example.test'], ips: [], outDir: dir, days: 30 });
    const ca = new X509Certificate(readFileSync(result.caCert));
    const leaf = new X509Certificate(readFileSync(result.serverCert));
    expect(ca.ca).toBe(true);
    expect(leaf.ca).toBe(false);
    expect(leaf.checkIssued(ca)).toBe(true);
    expect(leaf.verify(ca.publicKey)).toBe(true);
    expect(leaf.keyUsage).toEqual(['1.3.6.1.5.5.7.3.1']);
    const days = (Date.parse(leaf.validTo) - Date.now()) / 86_400_000;
    expect(days).toBeGreaterThan(29.9);
    expect(days).toBeLessThan(30.1);
  });

  it('lists every host and IP as a SAN, and localhost only when asked (node X509Certificate, and openssl x509 -text when installed)', async () => {
    const result = await generateCertificates({ hosts: ['registry.example.test', 'mirror.local', '10.1.2.3'], ips: ['192.168.0.5', '::1'], outDir: dir, days: 30 });
    const leaf = new X509Certificate(readFileSync(result.serverCert));
    expect(leaf.subjectAltName).toBe('DNS:registry.example.test, DNS:mirror.local, IP Address:10.1.2.3, IP Address:192.168.0.5, IP Address:0:0:0:0:0:0:0:1');
    expect(leaf.subjectAltName).not.toContain('localhost');
    expect(leaf.subjectAltName).not.toContain('127.0.0.1');

    if (openssl()) {
      const text = execFileSync('openssl', ['x509', '-in', result.serverCert, '-noout', '-text'], { encoding: 'utf8' });
      expect(text).toMatch(/DNS:registry\.example\.test, DNS:mirror\.local, IP Address:10\.1\.2\.3, IP Address:192\.168\.0\.5, IP Address:0:0:0:0:0:0:0:1/);
      expect(text).toContain('TLS Web Server Authentication');
      const caText = execFileSync('openssl', ['x509', '-in', result.caCert, '-noout', '-text'], { encoding: 'utf8' });
      expect(caText).toMatch(/CA:TRUE/);
      expect(caText).toMatch(/Certificate Sign/);
      execFileSync('openssl', ['verify', '-CAfile', result.caCert, result.serverCert]);
    }
  });

  it('reuses an existing CA, so clients that trust it keep working with a re-issued server certificate', async () => {
    const first = await generateCertificates({ hosts: ['old.example.test'], ips: [], outDir: dir, days: 30 });
    const caBefore = readFileSync(first.caCert, 'utf8');
    const second = await generateCertificates({ hosts: ['new.example.test'], ips: ['127.0.0.1'], outDir: dir, days: 30 });
    expect(first.reusedCa).toBe(false);
    expect(second.reusedCa).toBe(true);
    expect(readFileSync(second.caCert, 'utf8')).toBe(caBefore);
    const port = await serve(dir);
    await expect(fetchTrusting(port, Buffer.from(caBefore), 'new.example.test')).resolves.toBe('ok');
  });

  it('explains how to trust the CA for CRI-O/podman/skopeo, Docker and OpenShift', async () => {
    const result = await generateCertificates({ hosts: ['registry.example.test'], ips: ['10.0.0.5'], outDir: dir, days: 30 });
    const text = result.instructions;
    expect(text).toContain(`cp ${result.caCert} /etc/containers/certs.d/registry.example.test:5000/ca.crt`);
    expect(text).toContain(`cp ${result.caCert} /etc/containers/certs.d/10.0.0.5:5000/ca.crt`);
    expect(text).toContain(`cp ${result.caCert} /etc/docker/certs.d/registry.example.test:5000/ca.crt`);
    expect(text).toContain('--cert-dir');
    expect(text).toContain(`oc create configmap registry-cas -n openshift-config --from-file=registry.example.test..5000=${result.caCert}`);
    expect(text).toContain(`oc patch image.config.openshift.io/cluster --patch '{"spec":{"additionalTrustedCA":{"name":"registry-cas"}}}' --type=merge`);
    expect(text).toContain(`tls: { cert: ${result.serverCert}, key: ${result.serverKey} }`);

    const on443 = await generateCertificates({ hosts: ['registry.example.test'], ips: [], outDir: dir, days: 30, port: 443 });
    expect(on443.instructions).toContain('/etc/containers/certs.d/registry.example.test/ca.crt');
    expect(on443.instructions).toContain(`--from-file=registry.example.test=${result.caCert}`);
  });

  it('refuses bad names, no names, and half a CA', async () => {
    await expect(generateCertificates({ hosts: [], ips: [], outDir: dir, days: 30 })).rejects.toThrow(CertificateRequestError);
    await expect(generateCertificates({ hosts: ['bad host'], ips: [], outDir: dir, days: 30 })).rejects.toThrow(/not a valid DNS name/);
    await expect(generateCertificates({ hosts: [], ips: ['999.1.1.1'], outDir: dir, days: 30 })).rejects.toThrow(/not a valid IP/);
    await expect(generateCertificates({ hosts: ['a.test'], ips: [], outDir: dir, days: 0 })).rejects.toThrow(/days/);
    const { caKey } = await generateCertificates({ hosts: ['a.test'], ips: [], outDir: dir, days: 30 });
    rmSync(caKey);
    await expect(generateCertificates({ hosts: ['a.test'], ips: [], outDir: dir, days: 30 })).rejects.toThrow(/ca.crt but no ca.key/);
  });
});
