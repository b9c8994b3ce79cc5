import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';

/**
 * Issue 5 item 6: `npm run demo` (the build's dist/examples/demo/run.js; `npm test` builds first)
 * exits 0, tells the story in its output, and leaves neither a process nor a directory behind.
 */

const RUN = join(__dirname, '..', '..', 'dist', 'examples', 'demo', 'run.js');

function runDemo(): Promise<{ status: number | null; out: string }> {
  return new Promise((resolve) => {
    const env = { ...process.env };
    for (const k of Object.keys(env)) if (k.startsWith('BATON_')) delete env[k];
    // The demo's own bound is 60 s; jest runs suites side by side, so this run gets more room.
    const child = spawn(process.execPath, [RUN, '--deadline', '170'], { env });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (out += d));
    child.on('close', (status) => resolve({ status, out }));
  });
}

describe('npm run demo', () => {
  it('exits 0 after every step behaved, and says so as it happens', async () => {
    expect(existsSync(RUN)).toBe(true);
    const { status, out } = await runDemo();
    if (status !== 0) process.stderr.write(out);
    expect(status).toBe(0);
    const lines = [
      /\[worker-1\]\s+→ manager: HTTP 200/,
      /\[worker-2\]\s+→ manager: HTTP 200/,
      /\[rogue\]\s+→ worker-1: refused/,
      /\[rogue\]\s+→ worker-2: refused/,
      /\[ca\]\s+baton node revoke worker-1: revoked node worker-1/,
      /\[manager\]\s+closed the open connection of spiffe:\/\/orchestra\.test\/worker\/worker-1: .*is revoked/,
      /\[manager\]\s+refused spiffe:\/\/orchestra\.test\/worker\/worker-1: .*is revoked/,
      /\[worker-1\]\s+→ manager: refused/,
      /\[agent worker-1\]\s+this node has been revoked/,
      /✓ worker-2 keeps playing/,
      /every step behaved \(\d+ checks\)/,
    ];
    for (const line of lines) expect(out).toMatch(line);
    expect(out).not.toMatch(/✗/);
    // The order of the story: worker-2 is still answered after worker-1 is revoked.
    expect(out.indexOf('✓ worker-2 keeps playing')).toBeGreaterThan(
      out.indexOf('baton node revoke worker-1'),
    );

    const work = /working in (\S+)/.exec(out)![1]!;
    expect(existsSync(work)).toBe(false);
    const ps = spawnSync('ps', ['-eo', 'args'], { encoding: 'utf8' }).stdout;
    expect(ps.split('\n').filter((l) => l.includes(work))).toEqual([]);
  }, 200_000);
});
