import type { Flags } from '../config';

export interface OptionSpec {
  type: 'string' | 'boolean';
  multiple?: boolean;
  description: string;
  /** Shown in help, e.g. "URL" or "24h". */
  value?: string;
}

export interface CommandContext {
  flags: Flags;
  positionals: string[];
  env: Readonly<Record<string, string | undefined>>;
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WritableStream;
  /** Resolves when the process is asked to stop (SIGTERM/SIGINT). */
  stopSignal: Promise<string>;
}

export interface Command {
  /** Words that select the command, e.g. ['ca', 'init']. */
  words: string[];
  summary: string;
  /** Positional arguments, e.g. ['ID']; a trailing '?' marks an optional one. */
  args?: string[];
  options: Record<string, OptionSpec>;
  run(ctx: CommandContext): Promise<number | undefined>;
}

export const STORAGE_OPTIONS: Record<string, OptionSpec> = {
  'data-dir': {
    type: 'string',
    value: 'DIR',
    description: 'data directory (env BATON_DATA_DIR, default ./baton-data)',
  },
  'database-url': {
    type: 'string',
    value: 'URL',
    description: 'postgres:// URL (env BATON_DATABASE_URL); unset: embedded PGlite in <data-dir>',
  },
  kms: {
    type: 'string',
    value: 'URI',
    description:
      'keep the CA and JWT keys in a PKCS#11 token: an RFC 7512 URI with module-path and pin-source or pin-value (env BATON_KMS); unset: KEK-wrapped',
  },
};

export const JSON_OPTION: Record<string, OptionSpec> = {
  json: { type: 'boolean', description: 'machine-readable JSON output' },
};

export function helpText(c: Command): string {
  const args = (c.args ?? []).map((a) => (a.endsWith('?') ? ` [${a.slice(0, -1)}]` : ` ${a}`)).join('');
  const lines = [`usage: baton ${c.words.join(' ')}${args} [options]`, '', c.summary, '', 'options:'];
  const all: Record<string, OptionSpec> = {
    ...c.options,
    help: { type: 'boolean', description: 'show this help' },
  };
  for (const [name, o] of Object.entries(all)) {
    const left = `  --${name}${o.type === 'string' ? ` ${o.value ?? 'VALUE'}` : ''}`;
    lines.push(`${left.padEnd(34)} ${o.description}${o.multiple ? ' (repeatable)' : ''}`);
  }
  return `${lines.join('\n')}\n`;
}

export const ADMIN_OPTIONS: Record<string, OptionSpec> = {
  server: {
    type: 'string',
    value: 'URL',
    description: 'Baton server (env BATON_SERVER, default https://127.0.0.1:8443)',
  },
  'admin-dir': {
    type: 'string',
    value: 'DIR',
    description:
      'admin credential dir with cert.pem, key.pem, bundle.pem (env BATON_ADMIN_DIR, default <data-dir>/admin)',
  },
  'data-dir': {
    type: 'string',
    value: 'DIR',
    description: 'data directory, for the default admin dir (env BATON_DATA_DIR)',
  },
  ...JSON_OPTION,
};

/** Prints rows as aligned columns (the human form of list commands). */
export function table(headers: string[], rows: (string | null | undefined)[][]): string {
  const cells = [headers, ...rows.map((r) => r.map((c) => c ?? '-'))];
  const widths = headers.map((_, i) => Math.max(...cells.map((r) => String(r[i]).length)));
  return `${cells
    .map((r) =>
      r
        .map((c, i) => String(c).padEnd(widths[i]!))
        .join('  ')
        .trimEnd(),
    )
    .join('\n')}\n`;
}
