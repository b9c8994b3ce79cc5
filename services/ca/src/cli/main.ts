import { parseArgs } from 'node:util';
import { type BatonErrorCode, BatonError } from '../ground/errors';
import { type Command, type CommandContext, helpText } from './command';
import { COMMANDS } from './commands';

/** Exit codes (CONTRACT "Command line"): 0 success, 1 runtime error, 2 usage error. */
const USAGE_CODES: BatonErrorCode[] = ['ERR_USAGE', 'ERR_CONFIG_INVALID'];

function overview(): string {
  const lines = COMMANDS.map(
    (c) => `  ${c.words.join(' ').padEnd(18)} ${c.summary.split('. ')[0]!.replace(/\.$/, '')}`,
  );
  return `usage: baton <command> [options]\n\ncommands:\n${lines.join('\n')}\n\nRun \`baton <command> --help\` for a command's options.\n`;
}

function findCommand(argv: string[]): { command?: Command; rest: string[] } {
  let best: Command | undefined;
  for (const c of COMMANDS) {
    if (c.words.every((w, i) => argv[i] === w) && (!best || c.words.length > best.words.length)) best = c;
  }
  return { command: best, rest: best ? argv.slice(best.words.length) : argv };
}

function stopSignal(): Promise<string> {
  return new Promise((resolve) => {
    for (const s of ['SIGTERM', 'SIGINT'] as const) process.once(s, () => resolve(s));
  });
}

export async function main(
  argv: string[],
  io = { stdout: process.stdout, stderr: process.stderr },
): Promise<number> {
  const { command, rest } = findCommand(argv);
  if (!command) {
    if (argv.length === 0 || argv[0] === '--help' || argv[0] === 'help' || argv[0] === '-h') {
      io.stdout.write(overview());
      return argv.length === 0 ? 2 : 0;
    }
    io.stderr.write(`baton: unknown command "${argv[0]}" (see baton --help)\n`);
    return 2;
  }
  let parsed: ReturnType<typeof parseArgs>;
  try {
    parsed = parseArgs({
      args: rest,
      options: {
        ...Object.fromEntries(
          Object.entries(command.options).map(([k, o]) => [
            k,
            { type: o.type, multiple: o.multiple ?? false },
          ]),
        ),
        help: { type: 'boolean' },
      },
      strict: true,
      allowPositionals: true,
    });
  } catch (e) {
    io.stderr.write(
      `baton: ${(e as Error).message.split('\n')[0]} (see baton ${command.words.join(' ')} --help)\n`,
    );
    return 2;
  }
  if (parsed.values.help) {
    io.stdout.write(helpText(command));
    return 0;
  }
  const maxArgs = (command.args ?? []).length;
  const minArgs = (command.args ?? []).filter((a) => !a.endsWith('?')).length;
  if (parsed.positionals.length < minArgs || parsed.positionals.length > maxArgs) {
    io.stderr.write(
      `baton: expected ${(command.args ?? []).join(' ') || 'no arguments'} (see baton ${command.words.join(' ')} --help)\n`,
    );
    return 2;
  }
  const ctx: CommandContext = {
    flags: parsed.values as CommandContext['flags'],
    positionals: parsed.positionals,
    env: process.env,
    stdout: io.stdout,
    stderr: io.stderr,
    stopSignal: stopSignal(),
  };
  try {
    return (await command.run(ctx)) ?? 0;
  } catch (e) {
    // One clear line, never a stack trace (CONTRACT "Command line").
    if (e instanceof BatonError) {
      io.stderr.write(`baton: ${e.message} (${e.code})\n`);
      return USAGE_CODES.includes(e.code) ? 2 : 1;
    }
    const err = e as NodeJS.ErrnoException;
    io.stderr.write(
      `baton: ${err?.message?.split('\n')[0] ?? String(e)}${err?.code ? ` (${err.code})` : ''}\n`,
    );
    if (process.env.BATON_DEBUG) io.stderr.write(`${err?.stack}\n`);
    return 1;
  }
}

if (require.main === module) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (e) => {
      process.stderr.write(`baton: ${(e as Error).message}\n`);
      process.exit(1);
    },
  );
}
