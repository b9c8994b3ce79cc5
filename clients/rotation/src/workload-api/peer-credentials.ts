import { existsSync } from 'node:fs';
import type { Socket } from 'node:net';
import { constants } from 'node:os';
import { join } from 'node:path';

/**
 * Who is on the other end of a Workload API connection, as the kernel says (SO_PEERCRED, man 7
 * unix): the credentials of the process that called connect(2), which nothing it sends can change.
 * Read by services/ca/native/peer_credentials.c; Node has no API for them.
 */
export interface PeerCredentials {
  readonly pid: number;
  readonly uid: number;
  readonly gid: number;
  /** -1 when the kernel has no SO_PEERPIDFD (Linux < 6.5) */
  readonly pidfd: number;
}

export interface PeerCredentialReader {
  /**
   * The kernel's credentials of the process that connected `socket` (a net.Socket of a Unix-domain
   * server), read once at accept. Throws when they cannot be read: not a Unix-domain socket, no
   * descriptor (closed), or the connecting process has already gone.
   */
  read(socket: Socket): PeerCredentials;
  /**
   * The caller's executable as the kernel resolves it (/proc/<pid>/exe), or undefined when it cannot
   * be known for sure (the process has exited, so its pid may name another one now; or `peer` was
   * released, or did not come from this reader's `read`). Without a pidfd (kernel < 6.5) the pid is
   * not checked: the path is that of whichever process holds the pid now.
   */
  executable(peer: PeerCredentials): string | undefined;
  /** Closes the pidfd (call when the connection closes). Idempotent. */
  release(peer: PeerCredentials): void;
  /**
   * Whether the process at the other end of `socket` has closed it, asked of the kernel without
   * reading (a connection whose HTTP/2 session stopped reading would never see it otherwise).
   * False when the socket has no descriptor any more.
   */
  hungUp(socket: Socket): boolean;
}

/** The module, relative to the repository root (the Dockerfile copies it there beside dist/). */
export const PEER_CREDENTIAL_MODULE = 'services/ca/native/build/Release/baton_peer_credentials.node';

/** From clients/rotation/src/workload-api (ts-run tests) or dist/clients/rotation/src/workload-api. */
const CANDIDATES = [
  join(__dirname, '..', '..', '..', '..'),
  join(__dirname, '..', '..', '..', '..', '..'),
].map((root) => join(root, PEER_CREDENTIAL_MODULE));

/** What peer_credentials.c exports. */
interface NativePeerCredentials {
  peerCredentials(fd: number): { pid: number; uid: number; gid: number; pidfd: number };
  executablePath(pid: number, pidfd: number): string | null;
  closeFd(fd: number): void;
  peerHungUp(fd: number): boolean;
}

/**
 * The reader over the native module at `moduleFile` (default: the build's, from either root), or
 * null when it is missing, does not load, or the platform is not Linux. Never throws: the caller
 * decides, and the Workload API server refuses to start without a reader (there is no fallback).
 */
export function loadPeerCredentialReader(moduleFile?: string): PeerCredentialReader | null {
  if (process.platform !== 'linux') return null;
  const file = moduleFile ?? CANDIDATES.find((f) => existsSync(f));
  if (file === undefined || !existsSync(file)) return null;
  try {
    // process.dlopen is what require() does for a .node file, without a module name computed at
    // run time (the import-rules test allows one such require, for pki/native-ec.ts); it loads
    // only a shared object, never one of our sources.
    const module = { exports: {} as Partial<NativePeerCredentials> };
    process.dlopen(module, file, constants.dlopen.RTLD_NOW);
    const native = module.exports;
    if (
      typeof native.peerCredentials !== 'function' ||
      typeof native.executablePath !== 'function' ||
      typeof native.closeFd !== 'function' ||
      typeof native.peerHungUp !== 'function'
    ) {
      return null;
    }
    return readerOver(native as NativePeerCredentials);
  } catch {
    // Built for another platform or Node ABI, or not a module at all.
    return null;
  }
}

function readerOver(native: NativePeerCredentials): PeerCredentialReader {
  // The peers this reader handed out and has not released. Only they are answered and closed: a
  // closed pidfd's number is soon another descriptor's, and a copied object would close it twice.
  const open = new WeakSet<PeerCredentials>();
  // A peer dropped without release (a bug, or a connection torn down on an odd path) must not
  // leak its pidfd for the life of the agent. It is unreachable then, so its pidfd is still ours.
  const unreleased = new FinalizationRegistry<number>((pidfd) => native.closeFd(pidfd));

  return {
    read(socket) {
      const fd = fdOf(socket);
      if (fd === undefined) throw new Error('the socket has no file descriptor (not connected, or closed)');
      const { pid, uid, gid, pidfd } = native.peerCredentials(fd);
      const peer: PeerCredentials = Object.freeze({ pid, uid, gid, pidfd });
      open.add(peer);
      if (pidfd >= 0) unreleased.register(peer, pidfd, peer);
      return peer;
    },
    executable(peer) {
      if (!open.has(peer)) return undefined;
      return native.executablePath(peer.pid, peer.pidfd) ?? undefined;
    },
    release(peer) {
      if (!open.delete(peer)) return;
      if (peer.pidfd < 0) return;
      unreleased.unregister(peer);
      native.closeFd(peer.pidfd);
    },
    hungUp(socket) {
      const fd = fdOf(socket);
      return fd !== undefined && native.peerHungUp(fd);
    },
  };
}

/**
 * `_handle.fd` is Node's internal (libuv's descriptor of the Pipe handle), but the only way to the
 * socket's descriptor: node:net has no public accessor. Undefined once the handle is closed.
 */
function fdOf(socket: Socket): number | undefined {
  const fd = (socket as unknown as { _handle?: { fd?: unknown } | null })._handle?.fd;
  return typeof fd === 'number' && Number.isInteger(fd) && fd >= 0 ? fd : undefined;
}
