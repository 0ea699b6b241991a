import { createPrivateKey, createPublicKey, webcrypto } from 'node:crypto';
import { mkdir, readFile, stat } from 'node:fs/promises';
import { isIP } from 'node:net';
import { join, resolve } from 'node:path';
import * as x509 from '@peculiar/x509';
import { writeFileAtomically } from '../auth/secret-files.js';

/**
 * A private certificate authority and a server certificate signed by it, for registries that have no
 * certificate from a public CA (the usual case behind an air gap). Clients trust ca.crt once; the
 * server certificate can then be re-issued (new names, renewal) without touching the clients again.
 */

export interface CertificateRequest {
  /** DNS names clients use to reach the registry (a '*.' wildcard is allowed); IPs given here count as IPs. */
  hosts: string[];
  ips: string[];
  outDir: string;
  /** Validity of newly created certificates. */
  days: number;
  /** Port clients use, for the trust instructions only (`certs.d/<host>:<port>`); default 5000. */
  port?: number;
}

export interface GeneratedCertificates {
  caCert: string;
  caKey: string;
  serverCert: string;
  serverKey: string;
  /** True when ca.crt/ca.key already existed in outDir and signed the new server certificate. */
  reusedCa: boolean;
  /** What to do next: configure airlock, trust ca.crt on clients and clusters. */
  instructions: string;
}

/** The request cannot be fulfilled as given (bad name, missing names, half a CA present). */
export class CertificateRequestError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'CertificateRequestError';
  }
}

const crypto = webcrypto;
type CryptoKey = webcrypto.CryptoKey;
type CryptoKeyPair = webcrypto.CryptoKeyPair;
const EC_KEY: webcrypto.EcKeyGenParams = { name: 'ECDSA', namedCurve: 'P-256' };
const SIGNING: webcrypto.EcdsaParams = { name: 'ECDSA', hash: 'SHA-256' };
const DAY_MS = 86_400_000;
/** Tolerates clocks a few minutes behind ours on the nodes that check the certificate. */
const BACKDATE_MS = 5 * 60_000;
const DNS_NAME_RE = /^(\*\.)?([a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*$/;

interface SubjectNames {
  dnsNames: string[];
  ipAddresses: string[];
}

function validateNames(request: CertificateRequest): SubjectNames {
  const dnsNames: string[] = [];
  const ipAddresses: string[] = [];
  for (const host of request.hosts) {
    if (isIP(host)) ipAddresses.push(host);
    else if (host.length <= 253 && DNS_NAME_RE.test(host)) dnsNames.push(host.toLowerCase());
    else throw new CertificateRequestError(`"${host}" is not a valid DNS name`);
  }
  for (const ip of request.ips) {
    if (!isIP(ip)) throw new CertificateRequestError(`"${ip}" is not a valid IP address`);
    ipAddresses.push(ip);
  }
  if (dnsNames.length + ipAddresses.length === 0) {
    throw new CertificateRequestError('name at least one host or IP address clients will use to reach the registry');
  }
  if (!Number.isInteger(request.days) || request.days < 1) throw new CertificateRequestError('days must be a positive whole number');
  return { dnsNames: [...new Set(dnsNames)], ipAddresses: [...new Set(ipAddresses)] };
}

interface Authority {
  cert: x509.X509Certificate;
  privateKey: CryptoKey;
}

/**
 * A random positive 128-bit serial number with a minimal DER encoding. Left to @peculiar/x509, one
 * serial in 512 starts with a 0x00 byte followed by one below 0x80: a non-minimal DER INTEGER that
 * OpenSSL 3 refuses to parse ("illegal padding"), so Node and skopeo then fail to trust the registry.
 */
function serialNumber(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[0] = (bytes[0]! % 0x7f) + 1; // 0x01..0x7f: no leading zero, high bit clear
  return Buffer.from(bytes).toString('hex');
}

function validity(days: number): { notBefore: Date; notAfter: Date } {
  const now = Date.now();
  return { notBefore: new Date(now - BACKDATE_MS), notAfter: new Date(now + days * DAY_MS) };
}

/** Distinguished names may only hold characters of the DN syntax; a CN is at most 64 characters. */
function commonName(value: string): string {
  return value.replace(/[,+"\\<>;=]/g, '_').slice(0, 64);
}

async function createAuthority(days: number): Promise<Authority> {
  const keys = (await crypto.subtle.generateKey(EC_KEY, true, ['sign', 'verify'])) as CryptoKeyPair;
  const stamp = new Date().toISOString().slice(0, 10);
  const cert = await x509.X509CertificateGenerator.createSelfSigned(
    {
      name: `CN=airlock registry CA ${stamp}, O=airlock`,
      keys,
      serialNumber: serialNumber(),
      signingAlgorithm: SIGNING,
      ...validity(days),
      extensions: [
        // pathLength 0: this CA signs server certificates, never other CAs.
        new x509.BasicConstraintsExtension(true, 0, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
        await x509.SubjectKeyIdentifierExtension.create(keys.publicKey, false, crypto),
      ],
    },
    crypto,
  );
  return { cert, privateKey: keys.privateKey };
}

/** WebCrypto parameters for an existing PKCS#8 key, as far as airlock can sign with it. */
function importParamsFor(pem: string, file: string): webcrypto.EcKeyImportParams | webcrypto.RsaHashedImportParams {
  const key = createPrivateKey(pem);
  if (key.asymmetricKeyType === 'ec') {
    const curves: Record<string, string> = { prime256v1: 'P-256', secp384r1: 'P-384', secp521r1: 'P-521' };
    const namedCurve = curves[key.asymmetricKeyDetails?.namedCurve ?? ''];
    if (namedCurve) return { name: 'ECDSA', namedCurve };
  }
  if (key.asymmetricKeyType === 'rsa') return { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' };
  throw new CertificateRequestError(`${file} holds a key type airlock cannot sign with (use EC P-256/384/521 or RSA)`);
}

/** Reuses ca.crt + ca.key from an earlier run, so clients that already trust the CA keep working. */
async function loadAuthority(certFile: string, keyFile: string): Promise<Authority> {
  const certPem = await readFile(certFile, 'utf8');
  const keyPem = await readFile(keyFile, 'utf8');
  const cert = new x509.X509Certificate(certPem);
  const keyObject = createPrivateKey(keyPem);
  const certSpki = Buffer.from(cert.publicKey.rawData);
  const keySpki = createPublicKey(keyObject).export({ type: 'spki', format: 'der' });
  if (!certSpki.equals(keySpki)) throw new CertificateRequestError(`${keyFile} is not the private key of ${certFile}`);
  const pkcs8 = keyObject.export({ type: 'pkcs8', format: 'der' });
  const privateKey = await crypto.subtle.importKey('pkcs8', pkcs8, importParamsFor(keyPem, keyFile), false, ['sign']);
  return { cert, privateKey };
}

async function createServerCertificate(authority: Authority, names: SubjectNames, days: number): Promise<{ cert: x509.X509Certificate; keyPem: string }> {
  const keys = (await crypto.subtle.generateKey(EC_KEY, true, ['sign', 'verify'])) as CryptoKeyPair;
  const sans: x509.JsonGeneralName[] = [
    ...names.dnsNames.map((value) => ({ type: 'dns' as const, value })),
    ...names.ipAddresses.map((value) => ({ type: 'ip' as const, value })),
  ];
  const cert = await x509.X509CertificateGenerator.create(
    {
      subject: `CN=${commonName(names.dnsNames[0] ?? names.ipAddresses[0]!)}`,
      issuer: authority.cert.subjectName,
      serialNumber: serialNumber(),
      publicKey: keys.publicKey,
      signingKey: authority.privateKey,
      signingAlgorithm: authority.privateKey.algorithm.name === 'ECDSA' ? SIGNING : { name: 'RSASSA-PKCS1-v1_5' },
      ...validity(days),
      extensions: [
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
        new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth], false),
        // Clients match the host name against these only; the CN is ignored by modern TLS stacks.
        new x509.SubjectAlternativeNameExtension(sans, false),
        await x509.SubjectKeyIdentifierExtension.create(keys.publicKey, false, crypto),
        await x509.AuthorityKeyIdentifierExtension.create(authority.cert.publicKey, false, crypto),
      ],
    },
    crypto,
  );
  const pkcs8 = await crypto.subtle.exportKey('pkcs8', keys.privateKey);
  return { cert, keyPem: x509.PemConverter.encode(pkcs8, 'PRIVATE KEY') };
}

async function exists(file: string): Promise<boolean> {
  try {
    await stat(file);
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw e;
  }
}

/**
 * Writes ca.crt, ca.key (0600), server.crt, server.key (0600) into outDir. An existing CA pair in outDir
 * is reused rather than replaced: replacing it would silently break every client that trusts it.
 */
export async function generateCertificates(request: CertificateRequest): Promise<GeneratedCertificates> {
  const names = validateNames(request);
  const outDir = resolve(request.outDir);
  const paths = {
    caCert: join(outDir, 'ca.crt'),
    caKey: join(outDir, 'ca.key'),
    serverCert: join(outDir, 'server.crt'),
    serverKey: join(outDir, 'server.key'),
  };
  await mkdir(outDir, { recursive: true });

  const [haveCaCert, haveCaKey] = await Promise.all([exists(paths.caCert), exists(paths.caKey)]);
  if (haveCaCert !== haveCaKey) {
    throw new CertificateRequestError(
      `${outDir} holds ${haveCaCert ? 'ca.crt but no ca.key' : 'ca.key but no ca.crt'}; restore the missing file or move the other away to create a new CA`,
    );
  }
  const reusedCa = haveCaCert && haveCaKey;
  const authority = reusedCa ? await loadAuthority(paths.caCert, paths.caKey) : await createAuthority(request.days);
  const server = await createServerCertificate(authority, names, request.days);

  if (!reusedCa) {
    const caKeyPem = x509.PemConverter.encode(await crypto.subtle.exportKey('pkcs8', authority.privateKey), 'PRIVATE KEY');
    await writeFileAtomically(paths.caKey, caKeyPem, 0o600);
    await writeFileAtomically(paths.caCert, authority.cert.toString('pem') + '\n', 0o644);
  }
  await writeFileAtomically(paths.serverKey, server.keyPem, 0o600);
  await writeFileAtomically(paths.serverCert, server.cert.toString('pem') + '\n', 0o644);

  const instructions = trustInstructions({ ...names, port: request.port ?? 5000, ...paths, reusedCa });
  return { ...paths, reusedCa, instructions };
}

/** `host:port` as clients write it (and as certs.d directories are named); port 443 is implied. */
function registryAddress(host: string, port: number): string {
  const h = isIP(host) === 6 ? `[${host}]` : host;
  return port === 443 ? h : `${h}:${port}`;
}

export function trustInstructions(options: SubjectNames & { port: number; caCert: string; caKey: string; serverCert: string; serverKey: string; reusedCa: boolean }): string {
  const { port, caCert } = options;
  const addresses = [...options.dnsNames.filter((n) => !n.startsWith('*.')), ...options.ipAddresses].map((h) => registryAddress(h, port));
  const wildcards = options.dnsNames.filter((n) => n.startsWith('*.'));
  const certsDirs = (root: string) => addresses.flatMap((a) => [`    mkdir -p ${root}/${a}`, `    cp ${caCert} ${root}/${a}/ca.crt`]);
  // OpenShift's configmap keys cannot hold ':', so the port is written as '..'.
  const configMapKeys = addresses.map((a) => `--from-file=${a.replace(/:(\d+)$/, '..$1')}=${caCert}`);
  const lines = [
    options.reusedCa ? `Reused the existing CA: ${caCert} (clients that trust it need nothing new).` : `Created a new CA: ${caCert}`,
    `  CA private key:      ${options.caKey} (mode 0600; keep it safe — it is needed to issue new server certificates)`,
    `  server certificate:  ${options.serverCert} for ${[...options.dnsNames, ...options.ipAddresses].join(', ')}`,
    `  server private key:  ${options.serverKey} (mode 0600)`,
    '',
    'Serve HTTPS with it — in the airlock config file:',
    `  tls: { cert: ${options.serverCert}, key: ${options.serverKey} }`,
    '',
    `Trust the CA on every client (the directory name is the address clients use${wildcards.length ? `; for ${wildcards.join(', ')} use each concrete name` : ''}):`,
    '  CRI-O, podman, skopeo, buildah (cluster nodes, workstations):',
    ...certsDirs('/etc/containers/certs.d'),
    '    or, for one skopeo/podman command: --cert-dir DIR (skopeo copy: --src-cert-dir / --dest-cert-dir), DIR holding ca.crt',
    '  Docker:',
    ...certsDirs('/etc/docker/certs.d'),
    '  System-wide, for oc, oc-mirror and curl (RHEL/Fedora; Debian/Ubuntu: /usr/local/share/ca-certificates + update-ca-certificates):',
    `    cp ${caCert} /etc/pki/ca-trust/source/anchors/airlock-ca.crt && update-ca-trust`,
    '',
    'OpenShift (every node trusts the registry for image pulls):',
    `  oc create configmap registry-cas -n openshift-config ${configMapKeys.join(' ')}`,
    `  oc patch image.config.openshift.io/cluster --patch '{"spec":{"additionalTrustedCA":{"name":"registry-cas"}}}' --type=merge`,
  ];
  return lines.join('\n') + '\n';
}
