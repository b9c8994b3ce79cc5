import type { Knex } from 'knex';

/**
 * Why: issue 18 (profile). `ca init --public-http-url`: the plain-HTTP publication URL that CRL
 * Distribution Points and OCSP URLs point at (RFC 5280 §4.2.1.13 wants http or ldap there: a CRL
 * fetched over TLS whose validation needs that CRL is circular). Null: they point at the public
 * (https) URL, as before.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.alterTable('installation', (t) => {
    t.text('public_http_url').nullable();
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.alterTable('installation', (t) => {
    t.dropColumn('public_http_url');
  });
}
