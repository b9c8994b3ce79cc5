import type { Knex } from 'knex';
import type { Repositories, Storage } from '../../domain/ports';
import { knexCaRepository } from './ca-repository';
import { knexCertificateRepository } from './certificate-repository';
import { db } from './db-errors';
import { knexAuditRepository } from './audit-repository';
import { knexEntryRepository } from './entry-repository';
import { knexIssuanceRepository } from './issuance-repository';
import { runExclusive } from './job-lock';
import { knexJwtKeyRepository } from './jwt-key-repository';
import { knexListCursorKeyRepository } from './list-cursor-key-repository';
import { knexCrlRepository, knexRevocationRepository } from './revocation-repository';
import { knexNodeRepository } from './node-repository';
import { knexNonceRepository, knexTokenRepository } from './token-repository';
import { knexTpmRepository } from './tpm-repository';
import { knexUpstreamRepository } from './upstream-repository';

function repositories(k: Knex | Knex.Transaction): Repositories {
  return {
    revocations: knexRevocationRepository(k),
    crls: knexCrlRepository(k),
    audit: knexAuditRepository(k),
    entries: knexEntryRepository(k),
    cas: knexCaRepository(k),
    upstream: knexUpstreamRepository(k),
    certificates: knexCertificateRepository(k),
    issuances: knexIssuanceRepository(k),
    nodes: knexNodeRepository(k),
    tokens: knexTokenRepository(k),
    nonces: knexNonceRepository(k),
    jwtKeys: knexJwtKeyRepository(k),
    listCursorKey: knexListCursorKeyRepository(k),
    tpm: knexTpmRepository(k),
  };
}

/** The Storage port over knex: PGlite or PostgreSQL, one dialect. */
export function knexStorage(knex: Knex): Storage {
  return {
    ...repositories(knex),
    transaction: (fn) => db(() => knex.transaction((trx) => fn(repositories(trx)))),
    exclusive: (name, fn) => db(() => runExclusive(knex, name, fn)),
    ping: () => db(async () => void (await knex.raw('select 1'))),
    close: () => knex.destroy(),
  };
}
