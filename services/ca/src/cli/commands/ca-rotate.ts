import { localActor } from '../../admin-credentials';
import { openCa } from '../../ca-service';
import { loadStorageConfig } from '../../config';
import { rotateSigningCa } from '../../domain/ca-rotation';
import { systemClock } from '../../domain/clock';
import { publicationUrlOf } from '../../domain/urls';
import { type Command, JSON_OPTION, STORAGE_OPTIONS } from '../command';

export const caRotate: Command = {
  words: ['ca', 'rotate'],
  summary:
    'Create a new signing intermediate under the same root and make it active (direct database and KEK access). Old certificates stay valid; running servers pick the new CA up within their background interval.',
  options: { ...STORAGE_OPTIONS, ...JSON_OPTION },
  async run(ctx) {
    const cfg = loadStorageConfig(ctx.flags, ctx.env);
    const ca = await openCa(cfg);
    try {
      const previous = ca.keyring.signing.record.id;
      const created = await rotateSigningCa(
        {
          clock: systemClock,
          storage: ca.storage,
          kek: ca.custody,
          keyring: ca.keyring,
          installation: ca.installation,
          // Only the new intermediate's CRL Distribution Point is made from it.
          publicUrl: publicationUrlOf(ca.installation),
        },
        localActor(),
      );
      const out = {
        signing_ca_id: created.id,
        previous_ca_id: previous,
        not_after: created.notAfter.toISOString(),
      };
      ctx.stdout.write(
        ctx.flags.json
          ? `${JSON.stringify(out)}\n`
          : `new signing CA ${created.id} (until ${out.not_after}); ${previous} keeps its CRL until its certificates expire\n`,
      );
      return 0;
    } finally {
      await ca.storage.close();
    }
  },
};
