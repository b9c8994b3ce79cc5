import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { loadPackageDefinition, type ServiceDefinition } from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
import { Root, type Type } from 'protobufjs';
import { toPem } from '../../../../common/src/der';
import { readConcatenated } from '../../../../common/src/der-reader';
import { bufferId, entriesFor, gate, heldFor, type Outcome } from './responses';
import type { WorkloadCaller } from './selectors';
import type { HeldSvid, WorkloadApiView } from './workload-api-state';

/**
 * Envoy's Secret Discovery Service (SDS, xDS v3) on the Workload API socket, as SPIRE's agent
 * serves it, so that Envoy takes its certificates from Baton without files: the same callers
 * (named by the kernel, matched by the same selectors), the same SVIDs, bundle and CRLs.
 *
 * Resource names, as SPIRE's (its default_svid_name and default_bundle_name):
 *   - a SPIFFE ID of the caller's entries → a `tls_certificate` secret: the SVID chain and key (PEM);
 *   - `default` → the caller's first SVID, under that name;
 *   - `spiffe://<trust domain>` or `ROOTCA` → a `validation_context` secret: the roots, and the
 *     CRLs (Envoy then checks every certificate of a chain against them);
 *   - none asked → every SVID (by SPIFFE ID) and the bundle (by trust domain).
 * A name the caller is not entitled to is refused (InvalidArgument), so a misconfigured Envoy says
 * so at once instead of waiting for a secret that never comes.
 *
 * The stream is xDS state of the world: a response carries every secret asked for, with a new
 * version_info and nonce; a request carrying the nonce of the last response is its ACK (or NACK,
 * with error_detail) and needs no answer unless the names changed; a change the caller can see
 * brings a new response.
 */

export const SECRET_TYPE_URL = 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret';
export const DEFAULT_SVID_NAME = 'default';
export const DEFAULT_BUNDLE_NAME = 'ROOTCA';
export const MAX_RESOURCE_NAMES = 64;
const MAX_RESOURCE_NAME_CHARS = 2048;

const PROTO_ROOT = join('clients', 'rotation', 'src', 'workload-api', 'envoy-proto');
/** From clients/rotation/src/workload-api (ts-run tests) or dist/clients/rotation/src/workload-api. */
export const ENVOY_PROTO_DIR =
  [join(__dirname, '..', '..', '..', '..'), join(__dirname, '..', '..', '..', '..', '..')]
    .map((root) => join(root, PROTO_ROOT))
    .find((d) => existsSync(d)) ?? join(__dirname, 'envoy-proto');

let service: ServiceDefinition | undefined;
let secretType: Type | undefined;

/** `envoy.service.secret.v3.SecretDiscoveryService`. */
export function sdsService(): ServiceDefinition {
  if (!service) {
    const definition = loadSync('envoy/service/secret/v3/sds.proto', {
      keepCase: true,
      longs: String,
      enums: String,
      defaults: true,
      oneofs: true,
      includeDirs: [ENVOY_PROTO_DIR],
    });
    // biome-ignore lint/suspicious/noExplicitAny: the loaded package's shape follows the proto
    service = (loadPackageDefinition(definition) as any).envoy.service.secret.v3.SecretDiscoveryService
      .service as ServiceDefinition;
  }
  return service;
}

/** The Secret message type, to pack secrets into google.protobuf.Any (protobufjs, as grpc-js uses). */
function secretMessage(): Type {
  if (!secretType) {
    // Imports are found under ENVOY_PROTO_DIR, as protoc's -I would (protobufjs resolves them
    // against the importing file's directory otherwise); google/protobuf/* is protobufjs's own.
    const root = new Root();
    root.resolvePath = (_origin, target) =>
      target.startsWith('google/protobuf/') ? target : join(ENVOY_PROTO_DIR, target);
    root.loadSync('envoy/extensions/transport_sockets/tls/v3/secret.proto');
    secretType = root.lookupType('envoy.extensions.transport_sockets.tls.v3.Secret');
  }
  return secretType;
}

export interface DiscoveryRequest {
  version_info: string;
  node?: { id: string; cluster: string } | null;
  resource_names: string[];
  type_url: string;
  response_nonce: string;
  error_detail?: { code: number; message: string } | null;
}

export interface DiscoveryResponse {
  version_info: string;
  resources: { type_url: string; value: Buffer }[];
  canary: boolean;
  type_url: string;
  nonce: string;
}

/** Why a request's names are refused, or undefined: at most MAX_RESOURCE_NAMES, each bounded. */
export function badResourceNames(names: readonly string[]): string | undefined {
  if (names.length > MAX_RESOURCE_NAMES) return `at most ${MAX_RESOURCE_NAMES} resource names`;
  if (names.some((n) => typeof n !== 'string' || n === '' || n.length > MAX_RESOURCE_NAME_CHARS))
    return `resource names are non-empty, at most ${MAX_RESOURCE_NAME_CHARS} characters`;
  return undefined;
}

/** Concatenated DER certificates (as the view holds them), each as PEM. */
const certificatesPem = (der: Buffer): string =>
  readConcatenated(der, 'certificates')
    .map((c) => toPem('CERTIFICATE', c.raw))
    .join('');

interface NamedSecret {
  name: string;
  tls_certificate?: { certificate_chain: { inline_bytes: Buffer }; private_key: { inline_bytes: Buffer } };
  validation_context?: { trusted_ca: { inline_bytes: Buffer }; crl?: { inline_bytes: Buffer } };
}

function tlsSecret(name: string, s: HeldSvid): NamedSecret {
  return {
    name,
    tls_certificate: {
      certificate_chain: { inline_bytes: Buffer.from(certificatesPem(s.chainDer)) },
      private_key: { inline_bytes: Buffer.from(toPem('PRIVATE KEY', s.keyDer)) },
    },
  };
}

function bundleSecret(name: string, view: WorkloadApiView): NamedSecret {
  const crls = view.crls.map((c) => toPem('X509 CRL', c)).join('');
  return {
    name,
    validation_context: {
      trusted_ca: { inline_bytes: Buffer.from(certificatesPem(view.bundleDer)) },
      ...(crls ? { crl: { inline_bytes: Buffer.from(crls) } } : {}),
    },
  };
}

/** The secrets asked for by `names` (SotW: all of them in each response), or why not. */
export function sdsOutcome(
  view: WorkloadApiView,
  caller: WorkloadCaller,
  names: readonly string[],
  now: Date,
): Outcome<{ secrets: NamedSecret[] }> {
  const entries = entriesFor(view, caller);
  const refusedCaller = gate(view, entries);
  if (refusedCaller) return refusedCaller;
  const held = heldFor(view, entries, now);
  const entitled = new Set(entries.map((e) => e.spiffeId));
  const bundleNames = new Set([view.trustDomainId, DEFAULT_BUNDLE_NAME]);
  const wanted =
    names.length > 0 ? [...new Set(names)] : [...new Set(held.map((s) => s.spiffeId)), view.trustDomainId];
  const refused = wanted.filter((n) => !bundleNames.has(n) && n !== DEFAULT_SVID_NAME && !entitled.has(n));
  if (refused.length > 0)
    return {
      kind: 'deny',
      invalid: true,
      details: `the caller is not entitled to the secrets ${JSON.stringify(refused)}`,
    };
  const secrets: NamedSecret[] = [];
  // What the response depends on: the names, each SVID's serial, the bundle's and CRLs' identity
  // (an unchanged part keeps its object across views: WorkloadApiState.publish).
  const parts: unknown[] = [wanted, bufferId(view.bundleDer), bufferId(view.crls)];
  for (const name of wanted) {
    if (bundleNames.has(name)) secrets.push(bundleSecret(name, view));
    else {
      const svid = name === DEFAULT_SVID_NAME ? held[0] : held.find((s) => s.spiffeId === name);
      // Entitled, not issued yet (the agent is issuing it): wait for it rather than send less.
      if (!svid) return { kind: 'wait' };
      secrets.push(tlsSecret(name, svid));
      parts.push(svid.serial);
    }
  }
  return { kind: 'send', key: JSON.stringify(parts), message: { secrets } };
}

/** A DiscoveryResponse carrying `secrets`, packed into Any. */
export function discoveryResponse(secrets: NamedSecret[], version: string): DiscoveryResponse {
  const type = secretMessage();
  return {
    version_info: version,
    resources: secrets.map((s) => ({
      type_url: SECRET_TYPE_URL,
      value: Buffer.from(type.encode(type.fromObject(toProtobufJs(s))).finish()),
    })),
    canary: false,
    type_url: SECRET_TYPE_URL,
    nonce: randomBytes(8).toString('hex'),
  };
}

/** protobufjs's own loader uses camelCase field names. */
function toProtobufJs(s: NamedSecret): Record<string, unknown> {
  return {
    name: s.name,
    ...(s.tls_certificate
      ? {
          tlsCertificate: {
            certificateChain: { inlineBytes: s.tls_certificate.certificate_chain.inline_bytes },
            privateKey: { inlineBytes: s.tls_certificate.private_key.inline_bytes },
          },
        }
      : {}),
    ...(s.validation_context
      ? {
          validationContext: {
            trustedCa: { inlineBytes: s.validation_context.trusted_ca.inline_bytes },
            ...(s.validation_context.crl
              ? { crl: { inlineBytes: s.validation_context.crl.inline_bytes } }
              : {}),
          },
        }
      : {}),
  };
}
