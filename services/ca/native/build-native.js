#!/usr/bin/env node
/*
 * Builds the optional native ECDSA verifier (ec_verify.c) with node-gyp, as part of `npm run build`.
 * Baton works without it (node:crypto verifies instead, about 95 us slower per CSR), so a machine
 * without a compiler or Node's headers gets a warning, not a failed build, unless
 * BATON_REQUIRE_NATIVE=1 (CI sets it, so a broken addon cannot hide behind the fallback).
 * Skips the compiler when the module is newer than its sources.
 */
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const here = __dirname;
const output = path.join(here, 'build', 'Release', 'baton_ec_verify.node');
const sources = ['binding.gyp', 'ec_verify.c'].map((f) => path.join(here, f));
const required = process.env.BATON_REQUIRE_NATIVE === '1';

function mtime(file) {
  try {
    return fs.statSync(file).mtimeMs;
  } catch {
    return -1;
  }
}

if (mtime(output) > Math.max(...sources.map(mtime))) process.exit(0);

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
  else if (run.status !== 0 || !fs.existsSync(output)) {
    failure = `node-gyp exited ${run.status}:\n${`${run.stdout}${run.stderr}`.trim().split('\n').slice(-15).join('\n')}`;
  }
}
if (failure === undefined) {
  console.log('native ECDSA verifier built: services/ca/native/build/Release/baton_ec_verify.node');
  process.exit(0);
}
console.warn(
  `warning: the native ECDSA verifier was not built, so CSRs are verified with node:crypto (slower, same checks).\n` +
    `It needs python3, make, a C compiler and Node's headers. ${failure}`,
);
process.exit(required ? 1 : 0);
