#!/usr/bin/env node

// The `baton` command: runs the compiled build (npm ci builds it through `prepare`).
const { existsSync } = require('node:fs');
const { join } = require('node:path');

const entry = join(__dirname, '..', 'dist', 'services', 'ca', 'src', 'cli', 'main.js');
if (!existsSync(entry)) {
  process.stderr.write('baton: the build is missing: run `npm run build` first\n');
  process.exit(1);
}
require(entry)
  .main(process.argv.slice(2))
  .then(
    (code) => process.exit(code),
    (e) => {
      process.stderr.write(`baton: ${e?.message ? e.message : String(e)}\n`);
      process.exit(1);
    },
  );
