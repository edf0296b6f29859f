import { readFile } from 'node:fs/promises';
import { createSecureContext } from 'node:tls';
import { StartupError } from './startup-error.js';

/** PEM certificate chain and private key of both listeners. */
export interface TlsFiles {
  certFile: string;
  keyFile: string;
}

export interface TlsMaterial {
  cert: Buffer;
  key: Buffer;
}

/** The TLS files named by PAMGATE_TLS_CERT and PAMGATE_TLS_KEY, or null for plain HTTP; one without the other is an error. */
export function tlsFilesFromEnv(env: NodeJS.ProcessEnv): TlsFiles | null {
  const certFile = env['PAMGATE_TLS_CERT'] || undefined;
  const keyFile = env['PAMGATE_TLS_KEY'] || undefined;
  if (certFile === undefined && keyFile === undefined) return null;
  if (certFile === undefined || keyFile === undefined) {
    const missing = certFile === undefined ? 'PAMGATE_TLS_CERT' : 'PAMGATE_TLS_KEY';
    throw new StartupError(`${missing} is not set: set both PAMGATE_TLS_CERT and PAMGATE_TLS_KEY (PEM files) for HTTPS, or neither for plain HTTP`);
  }
  return { certFile, keyFile };
}

/**
 * Reads and checks the certificate and key (that they parse and belong together), so a bad pair
 * is refused here — at start, or on SIGHUP with the old pair kept — and never half-installed.
 */
export async function readTls(files: TlsFiles): Promise<TlsMaterial> {
  const cert = await readPem(files.certFile, 'PAMGATE_TLS_CERT', 'certificate');
  const key = await readPem(files.keyFile, 'PAMGATE_TLS_KEY', 'private key');
  try {
    createSecureContext({ cert, key });
  } catch (err) {
    throw new StartupError(`TLS certificate ${files.certFile} and key ${files.keyFile} cannot be used together (${(err as Error).message}); point PAMGATE_TLS_CERT and PAMGATE_TLS_KEY at a matching PEM certificate chain and key`);
  }
  return { cert, key };
}

async function readPem(file: string, variable: string, what: string): Promise<Buffer> {
  try {
    return await readFile(file);
  } catch (err) {
    const reason = (err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (err as NodeJS.ErrnoException).code === 'EACCES' ? 'permission denied' : (err as Error).message;
    throw new StartupError(`cannot read the TLS ${what} ${file}: ${reason}; set ${variable} to a readable PEM file`);
  }
}
