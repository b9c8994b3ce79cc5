/**
 * Which entries a caller of the Workload API gets (CONTRACT "SPIFFE Workload API"): those whose
 * selectors ALL match the caller as the kernel describes it. An entry without selectors is never
 * served on the socket (its SVID goes to files only): matching "everyone" must be said, not
 * implied by an empty list. An unknown selector type or a malformed value matches nothing, so a
 * selector this agent does not understand can only withhold an identity, never grant one.
 */

/** The caller as the kernel names it (SO_PEERCRED, /proc/<pid>/exe). */
export interface WorkloadCaller {
  uid: number;
  /** The primary group. */
  gid: number;
  /**
   * The caller's executable, resolved only when an entry asks for it (it costs a readlink);
   * undefined when it cannot be known for sure (the process has gone).
   */
  executable(): string | undefined;
}

const ID_RE = /^(0|[1-9][0-9]{0,9})$/;

function idOf(value: string): number | undefined {
  if (!ID_RE.test(value)) return undefined;
  const n = Number(value);
  return n <= 0xffff_fffe ? n : undefined;
}

/** One selector against the caller. */
export function selectorMatches(selector: string, caller: WorkloadCaller): boolean {
  if (selector.startsWith('unix:uid:')) return idOf(selector.slice(9)) === caller.uid;
  if (selector.startsWith('unix:gid:')) return idOf(selector.slice(9)) === caller.gid;
  if (selector.startsWith('unix:path:')) {
    const path = selector.slice(10);
    return path.startsWith('/') && caller.executable() === path;
  }
  return false;
}

/** All selectors match, and there is at least one. */
export function entryMatches(selectors: readonly string[], caller: WorkloadCaller): boolean {
  if (selectors.length === 0) return false;
  // uid and gid first: they are free, the executable costs a readlink.
  const ordered = [...selectors].sort(
    (a, b) => Number(a.startsWith('unix:path:')) - Number(b.startsWith('unix:path:')),
  );
  return ordered.every((s) => selectorMatches(s, caller));
}

/** A caller whose executable is looked up once, at first use. */
export function cachedCaller(uid: number, gid: number, executable: () => string | undefined): WorkloadCaller {
  let resolved = false;
  let path: string | undefined;
  return {
    uid,
    gid,
    executable() {
      if (!resolved) {
        path = executable();
        resolved = true;
      }
      return path;
    },
  };
}
