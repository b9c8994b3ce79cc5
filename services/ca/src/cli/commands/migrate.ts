import { loadStorageConfig } from '../../config';
import { migrateLatest, openDatabase } from '../../storage/knex/database';
import { type Command, JSON_OPTION, STORAGE_OPTIONS } from '../command';

export const migrate: Command = {
  words: ['migrate'],
  summary: 'Apply pending database migrations (safe to run from several replicas at once).',
  options: { ...STORAGE_OPTIONS, ...JSON_OPTION },
  async run(ctx) {
    const knex = openDatabase(loadStorageConfig(ctx.flags, ctx.env));
    try {
      const applied = await migrateLatest(knex);
      ctx.stdout.write(
        ctx.flags.json
          ? `${JSON.stringify({ applied })}\n`
          : applied.length
            ? applied.map((m) => `applied ${m}\n`).join('')
            : 'database is up to date\n',
      );
      return 0;
    } finally {
      await knex.destroy();
    }
  },
};
