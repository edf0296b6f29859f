import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { request } from 'node:https';

export const FIXTURE = (name: string): string => new URL(`../fixtures/${name}`, import.meta.url).pathname;
/** Two self-signed certificates for "localhost": the second one replaces the first in reload tests. */
export const CERT_A = { cert: FIXTURE('localhost-cert.pem'), key: FIXTURE('localhost-key.pem') };
export const CERT_B = { cert: FIXTURE('localhost2-cert.pem'), key: FIXTURE('localhost2-key.pem') };

export interface TlsReply {
  status: number;
  body: string;
  headers: Record<string, string | string[] | undefined>;
  /** sha256 fingerprint of the certificate the server presented. */
  fingerprint: string;
}

/** One HTTPS request on a fresh connection that trusts only `caFiles`, for host name "localhost". */
export function httpsRequest(url: string, opts: { method?: string; headers?: Record<string, string>; body?: string; caFiles: string[] }): Promise<TlsReply> {
  return new Promise((resolve, reject) => {
    const req = request(
      url,
      { method: opts.method ?? 'GET', headers: opts.headers, ca: opts.caFiles.map((f) => readFileSync(f)), servername: 'localhost', checkServerIdentity: () => undefined, agent: false },
      (res) => {
        const fingerprint = (res.socket as import('node:tls').TLSSocket).getPeerCertificate().fingerprint256;
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (body += d));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body, headers: res.headers, fingerprint }));
      },
    );
    req.on('error', reject);
    req.end(opts.body);
  });
}

export function fingerprintOf(certFile: string): string {
  return new X509Certificate(readFileSync(certFile)).fingerprint256;
}
