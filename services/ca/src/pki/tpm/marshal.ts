import { BatonError } from '../../ground/errors';

/**
 * The TPM's wire format (TCG TPM 2.0 Library Part 1 §18 "Marshalling"): big-endian integers, and
 * TPM2B structures as a 2-byte size followed by that many bytes. Baton reads what a node sends with
 * this bounded reader: every read checks that the bytes are there, every TPM2B has a maximum size
 * (its structure's union size in Part 2), and the caller ends with `end()`, so trailing bytes are
 * refused. Every refusal is ERR_BAD_REQUEST naming the structure: nothing else is ever thrown.
 *
 * There is no maintained TPM 2.0 library on npm (the IBM and Microsoft TSS ports are unmaintained
 * and pull native builds), so Baton reads the few structures it needs itself and leaves the
 * cryptographic primitives to node:crypto.
 */
export class TpmReader {
  #offset = 0;

  constructor(
    private readonly buf: Buffer,
    /** The structure being read, for messages: "TPM2B_PUBLIC". */
    readonly what: string,
  ) {}

  malformed(why: string): BatonError {
    return new BatonError('ERR_BAD_REQUEST', `malformed ${this.what}: ${why}`);
  }

  get offset(): number {
    return this.#offset;
  }

  #take(n: number): Buffer {
    if (this.buf.length - this.#offset < n) throw this.malformed('truncated');
    const out = this.buf.subarray(this.#offset, this.#offset + n);
    this.#offset += n;
    return out;
  }

  u8(): number {
    return this.#take(1)[0]!;
  }

  u16(): number {
    return this.#take(2).readUInt16BE(0);
  }

  u32(): number {
    return this.#take(4).readUInt32BE(0);
  }

  u64(): bigint {
    return this.#take(8).readBigUInt64BE(0);
  }

  bytes(n: number): Buffer {
    return this.#take(n);
  }

  /** A TPM2B: its 2-byte size, at most `max`, then the bytes (a copy-free view). */
  tpm2b(max: number, field: string): Buffer {
    const size = this.u16();
    if (size > max) throw this.malformed(`${field} is ${size} bytes, more than ${max}`);
    return this.#take(size);
  }

  /** Part 1 §18: a structure is exactly its bytes; anything after it is an error, not padding. */
  end(): void {
    if (this.#offset !== this.buf.length) throw this.malformed('trailing bytes');
  }
}

export function u16(n: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(n);
  return b;
}

export function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n);
  return b;
}

/** A TPM2B: the 2-byte size of `content`, then `content`. */
export function tpm2b(content: Buffer): Buffer {
  if (content.length > 0xffff) throw new BatonError('ERR_INTERNAL', 'a TPM2B holds at most 65535 bytes');
  return Buffer.concat([u16(content.length), content]);
}
