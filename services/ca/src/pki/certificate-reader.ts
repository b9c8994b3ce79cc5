import { BatonError } from '../ground/errors';
import { children, decodeOid, readWhole, type Tlv } from './der-reader';

export interface CertificateFields {
  tbsRaw: Buffer;
  serialHex: string;
  issuerRaw: Buffer;
  subjectRaw: Buffer;
  spkiRaw: Buffer;
  notBefore: Date;
  notAfter: Date;
  extensions: { oid: string; critical: boolean; value: Buffer }[];
}

/** RFC 5280 §4.1.2.5.1/2: UTCTime YYMMDDHHMMSSZ (50–99 → 19xx) or GeneralizedTime YYYYMMDDHHMMSSZ. */
export function decodeTime(el: Tlv): Date {
  const s = el.value.toString('latin1');
  const m =
    el.tag === 0x17
      ? /^(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})Z$/.exec(s)
      : /^(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})Z$/.exec(s);
  if (!m || (el.tag !== 0x17 && el.tag !== 0x18)) throw new BatonError('ERR_BAD_REQUEST', 'malformed time');
  let year = Number(m[1]);
  if (el.tag === 0x17) year += year >= 50 ? 1900 : 2000;
  const d = new Date(
    Date.UTC(year, Number(m[2]) - 1, Number(m[3]), Number(m[4]), Number(m[5]), Number(m[6])),
  );
  // Date.UTC rolls out-of-range fields over (month 13 is next January): refuse them instead.
  if (d.toISOString().replace(/\D/g, '').slice(0, 14) !== `${year}`.padStart(4, '0') + m.slice(2).join('')) {
    throw new BatonError('ERR_BAD_REQUEST', 'malformed time');
  }
  return d;
}

/** Reads the fields Baton needs from a certificate, without building an object model. */
export function readCertificate(der: Buffer): CertificateFields {
  const what = 'certificate';
  const [tbs] = children(readWhole(der, what), what);
  if (tbs?.tag !== 0x30) throw new BatonError('ERR_BAD_REQUEST', 'malformed certificate');
  const f = children(tbs, what);
  let i = 0;
  if (f[0]?.tag === 0xa0) i++;
  const [serial, , issuer, validity, subject, spki] = f.slice(i);
  if (!serial || !issuer || !validity || !subject || !spki)
    throw new BatonError('ERR_BAD_REQUEST', 'malformed certificate');
  const [nb, na] = children(validity, what);
  if (!nb || !na) throw new BatonError('ERR_BAD_REQUEST', 'malformed certificate validity');
  const extensions: CertificateFields['extensions'] = [];
  const extsWrapper = f.slice(i + 6).find((e) => e.tag === 0xa3);
  if (extsWrapper) {
    const [list] = children(extsWrapper, what);
    for (const ext of list ? children(list, what) : []) {
      const parts = children(ext, what);
      const critical = parts.length === 3 && parts[1]!.value[0] === 0xff;
      extensions.push({ oid: decodeOid(parts[0]!.value), critical, value: parts[parts.length - 1]!.value });
    }
  }
  return {
    tbsRaw: tbs.raw,
    serialHex: serial.value.toString('hex').replace(/^00(?=[89a-f])/, ''),
    issuerRaw: issuer.raw,
    subjectRaw: subject.raw,
    spkiRaw: spki.raw,
    notBefore: decodeTime(nb),
    notAfter: decodeTime(na),
    extensions,
  };
}
