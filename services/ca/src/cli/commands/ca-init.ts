import { BatonError } from '../../ground/errors';
import { initCa } from '../../ca-service';
import { loadInitConfig } from '../../config';
import { systemClock } from '../../domain/clock';
import { type Command, JSON_OPTION, STORAGE_OPTIONS } from '../command';
import { runUpstreamRequest, writeAdminAndReport } from './ca-import';

export const caInit: Command = {
  words: ['ca', 'init'],
  summary:
    "Initialize the CA: run migrations, create the root (10 years) and signing CA (1 year), write the admin credential to <data-dir>/admin and print the trust domain and the root pin. With --upstream-csr, write the signing CA's CSR for an outside CA instead and stop (then `baton ca import`).",
  options: {
    'trust-domain': {
      type: 'string',
      value: 'TD',
      description: 'trust domain, e.g. prod.example.org (required)',
    },
    'public-url': {
      type: 'string',
      value: 'URL',
      description: 'public https URL of the CA (CRL and OCSP URLs; default https://127.0.0.1:8443)',
    },
    'public-http-url': {
      type: 'string',
      value: 'URL',
      description:
        'plain-HTTP publication URL: CRL Distribution Points and OCSP URLs point here (RFC 5280 4.2.1.13), served by `baton server` (env BATON_PUBLIC_HTTP_URL)',
    },
    'node-ttl': {
      type: 'string',
      value: '24h',
      description: 'default node certificate lifetime (min 1m, max 30d)',
    },
    'workload-ttl': {
      type: 'string',
      value: '1h',
      description: 'default workload certificate lifetime (min 1m, max 7d)',
    },
    'admin-ttl': {
      type: 'string',
      value: '8h',
      description: 'default admin certificate lifetime (min 1m, max 7d)',
    },
    'upstream-csr': {
      type: 'string',
      value: 'FILE',
      description:
        'upstream CA: write the signing CA\'s CSR to FILE for an outside CA to sign and stop; then `baton ca import` (docs/operations.md "Upstream CA")',
    },
    ...STORAGE_OPTIONS,
    ...JSON_OPTION,
  },
  async run(ctx) {
    const cfg = loadInitConfig(ctx.flags, ctx.env);
    if (cfg.upstreamCsr && cfg.kms)
      // The upstream request keeps its key under the KEK; refused rather than silently not in the token.
      throw new BatonError(
        'ERR_USAGE',
        '--upstream-csr does not take --kms yet: the signing CA key would not be in the token',
      );
    if (cfg.upstreamCsr) return runUpstreamRequest(ctx, { ...cfg, upstreamCsr: cfg.upstreamCsr });
    return writeAdminAndReport(ctx, await initCa(cfg, systemClock), cfg.dataDir);
  },
};
