import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { loadPackageDefinition, type ServiceDefinition } from '@grpc/grpc-js';
import { loadSync, type Options, type PackageDefinition } from '@grpc/proto-loader';

/**
 * The SPIFFE Workload API service definition, loaded from workload.proto beside this file (written
 * from the specification; see its header). proto-loader keeps the protobuf field names (keepCase),
 * so messages are plain objects with `spiffe_id`, `x509_svid`, … and bytes as Buffers.
 */

const PROTO = join('clients', 'rotation', 'src', 'workload-api', 'workload.proto');

/** From clients/rotation/src/workload-api (ts-run tests) or dist/clients/rotation/src/workload-api. */
export const WORKLOAD_PROTO_FILE =
  [join(__dirname, '..', '..', '..', '..'), join(__dirname, '..', '..', '..', '..', '..')]
    .map((root) => join(root, PROTO))
    .find((f) => existsSync(f)) ?? join(__dirname, 'workload.proto');

export const PROTO_LOADER_OPTIONS: Options = {
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
};

/** The metadata every Workload API call carries (SPIFFE Workload Endpoint §4, "Transport"). */
export const WORKLOAD_METADATA_KEY = 'workload.spiffe.io';

let definition: PackageDefinition | undefined;
let cached: ServiceDefinition | undefined;

/** workload.proto as proto-loader reads it (what gRPC server reflection describes). */
export function workloadApiDefinition(): PackageDefinition {
  definition ??= loadSync(WORKLOAD_PROTO_FILE, PROTO_LOADER_OPTIONS);
  return definition;
}

/** The `SpiffeWorkloadAPI` service (no protobuf package, as in the specification). */
export function workloadApiService(): ServiceDefinition {
  if (!cached) {
    const loaded = loadPackageDefinition(workloadApiDefinition()) as unknown as {
      SpiffeWorkloadAPI: { service: ServiceDefinition };
    };
    cached = loaded.SpiffeWorkloadAPI.service;
  }
  return cached;
}

// Message shapes as proto-loader hands them over with PROTO_LOADER_OPTIONS.

export interface X509SvidMessage {
  spiffe_id: string;
  /** DER certificates, concatenated, the leaf first. */
  x509_svid: Buffer;
  /** PKCS#8 DER. */
  x509_svid_key: Buffer;
  /** DER roots, concatenated. */
  bundle: Buffer;
  hint: string;
}

export interface X509SvidResponse {
  svids: X509SvidMessage[];
  crl: Buffer[];
  federated_bundles: Record<string, Buffer>;
}

export interface X509BundlesResponse {
  crl: Buffer[];
  bundles: Record<string, Buffer>;
}

export interface JwtSvidRequestMessage {
  audience: string[];
  spiffe_id: string;
}

export interface JwtSvidMessage {
  spiffe_id: string;
  svid: string;
  hint: string;
}

export interface JwtBundlesResponse {
  bundles: Record<string, Buffer>;
}

export interface ValidateJwtSvidRequest {
  audience: string;
  svid: string;
}

/**
 * google.protobuf.Value. protobufjs brings its own definition of the well-known types, whose
 * fields are camelCase whatever `keepCase` says: a snake_case key would be dropped silently.
 */
export type StructValue =
  | { nullValue: 'NULL_VALUE' }
  | { numberValue: number }
  | { stringValue: string }
  | { boolValue: boolean }
  | { structValue: StructMessage }
  | { listValue: { values: StructValue[] } };

export interface StructMessage {
  fields: Record<string, StructValue>;
}

/** A JSON value as google.protobuf.Value: what ValidateJWTSVID answers its claims in. */
export function toStructValue(v: unknown): StructValue {
  if (v === null || v === undefined) return { nullValue: 'NULL_VALUE' };
  if (typeof v === 'number') return { numberValue: v };
  if (typeof v === 'string') return { stringValue: v };
  if (typeof v === 'boolean') return { boolValue: v };
  if (Array.isArray(v)) return { listValue: { values: v.map(toStructValue) } };
  return { structValue: toStruct(v as Record<string, unknown>) };
}

export function toStruct(o: Record<string, unknown>): StructMessage {
  return { fields: Object.fromEntries(Object.entries(o).map(([k, v]) => [k, toStructValue(v)])) };
}
