import type { IncomingMessage } from 'node:http';
import type { TLSSocket } from 'node:tls';
import type { PeerCertificate } from '../domain/caller';
import { BatonError } from '../ground/errors';

export type { PeerCertificate };

/**
 * The one reader of getPeerCertificate(). TLS requested the certificate without requiring it
 * (authorization is per route), so this is where "no certificate", "not from our CA" and
 * "expired" become 401s. Parsed once per TLS socket; who the caller is (domain/caller.ts) is decided
 * on every request.
 */
const cache = new WeakMap<TLSSocket, PeerCertificate>();

export function peerCertificate(req: Pick<IncomingMessage, 'socket'>): PeerCertificate {
  const socket = req.socket as TLSSocket;
  const cached = cache.get(socket);
  if (cached) return cached;
  const cert = typeof socket.getPeerCertificate === 'function' ? socket.getPeerCertificate() : undefined;
  if (!cert || !cert.raw) throw new BatonError('ERR_NOT_AUTHENTICATED', 'a client certificate is required');
  if (!socket.authorized) {
    const why = String(socket.authorizationError ?? '');
    if (why === 'CERT_HAS_EXPIRED')
      throw new BatonError('ERR_CERT_EXPIRED', 'the client certificate has expired');
    throw new BatonError('ERR_NOT_AUTHENTICATED', 'the client certificate is not issued by this CA');
  }
  const uris = (cert.subjectaltname ?? '')
    .split(', ')
    .filter((n) => n.startsWith('URI:'))
    .map((n) => n.slice(4));
  // SPIFFE X.509-SVID §4.1: exactly one URI SAN.
  if (uris.length !== 1 || !uris[0]!.startsWith('spiffe://')) {
    throw new BatonError('ERR_NOT_AUTHENTICATED', 'the client certificate is not an SVID');
  }
  const pick = (v: string | string[] | undefined) => (Array.isArray(v) ? v[0] : v);
  const peer: PeerCertificate = {
    serial: normalizeSerial(cert.serialNumber),
    spiffeId: uris[0]!,
    subject: { O: pick(cert.subject.O), OU: pick(cert.subject.OU), CN: pick(cert.subject.CN) },
    der: cert.raw,
  };
  cache.set(socket, peer);
  return peer;
}

/** OpenSSL prints the serial in uppercase hex; Baton stores whole bytes in lowercase. */
export function normalizeSerial(hex: string): string {
  const s = hex.toLowerCase();
  return s.length % 2 ? `0${s}` : s;
}
