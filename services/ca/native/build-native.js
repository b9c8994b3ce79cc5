#!/usr/bin/env node
/*
 * Builds Baton's two native modules (binding.gyp) with one node-gyp run, as part of `npm run build`:
 *   - the ECDSA verifier (ec_verify.c), optional: without it node:crypto verifies instead, about
 *     95 us slower per CSR;
 *   - the peer credentials of a Unix socket (peer_credentials.c), with no fallback: without it the
 *     agent's Workload API socket refuses to start (the CA server itself does not need it).
 * A machine without a compiler or Node's headers gets a warning, not a failed build, so that the CA
 * still builds there, unless BATON_REQUIRE_NATIVE=1 (CI and the Dockerfile set it): then a missing
 * module fails the build, so a broken addon cannot hide behind a fallback or a warning.
 * Skips the compiler when every module is newer than every source.
 */
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const here = __dirname;
const modules = [
  {
    name: 'baton_ec_verify',
    what: 'native ECDSA verifier',
    without: 'CSRs are verified with node:crypto instead (slower, same checks)',
  },
  {
    name: 'baton_peer_credentials',
    what: 'peer-credential module',
    without: "the agent's Workload API socket refuses to start (there is no fallback)",
  },
].map((m) => ({ ...m, file: path.join(here, 'build', 'Release', `${m.name}.node`) }));
const sources = ['binding.gyp', 'ec_verify.c', 'peer_credentials.c'].map((f) => path.join(here, f));
const required = process.env.BATON_REQUIRE_NATIVE === '1';

function mtime(file) {
  try {
    return fs.statSync(file).mtimeMs;
  } catch {
    return -1;
  }
}

const newestSource = Math.max(...sources.map(mtime));
if (modules.every((m) => mtime(m.file) > newestSource)) process.exit(0);

// npm runs scripts with npm_config_node_gyp pointing at its own bundled node-gyp; outside npm, look
// for npm's copy beside this Node.
const gyp = [
  process.env.npm_config_node_gyp,
  path.join(
    path.dirname(process.execPath),
    '..',
    'lib',
    'node_modules',
    'npm',
    'node_modules',
    'node-gyp',
    'bin',
    'node-gyp.js',
  ),
].find((f) => f && fs.existsSync(f));

let failure;
if (!gyp) {
  failure = 'node-gyp was not found (it comes with npm)';
} else {
  // Outside npm (which passes its `nodedir` setting on), use the headers installed beside this Node
  // when there are any, rather than let node-gyp download them.
  const prefix = path.join(path.dirname(process.execPath), '..');
  const local = fs.existsSync(path.join(prefix, 'include', 'node', 'node_api.h'));
  const args = [gyp, 'rebuild', ...(!process.env.npm_config_nodedir && local ? [`--nodedir=${prefix}`] : [])];
  const run = spawnSync(process.execPath, args, { cwd: here, encoding: 'utf8' });
  if (run.error) failure = run.error.message;
  else if (run.status !== 0) {
    failure = `node-gyp exited ${run.status}:\n${`${run.stdout}${run.stderr}`.trim().split('\n').slice(-15).join('\n')}`;
  }
}
const relative = (file) =>
  path
    .relative(path.join(here, '..', '..', '..'), file)
    .split(path.sep)
    .join('/');
// `rebuild` starts from an empty build/, so a module there now is this run's, even when the run
// failed on the other one.
const built = modules.filter((m) => fs.existsSync(m.file));
for (const m of built) console.log(`${m.what} built: ${relative(m.file)}`);
const missing = modules.filter((m) => !built.includes(m));
if (missing.length === 0) process.exit(0);
if (failure === undefined)
  failure = `node-gyp did not make ${missing.map((m) => relative(m.file)).join(', ')}`;
console.warn(
  `warning: not built: ${missing.map((m) => `the ${m.what} (${m.name}.node), so ${m.without}`).join('; ')}.\n` +
    `They need python3, make, a C compiler and Node's headers. ${failure}`,
);
process.exit(required ? 1 : 0);
