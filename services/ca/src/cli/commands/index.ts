import type { Command } from '../command';
import { agent, agentTpmId } from './agent';
import { adminIssue } from './admin-issue';
import { adminRecover } from './admin-recover';
import { auditList, auditVerify } from './audit';
import { auditCheckpoint, auditExport, auditPrune } from './audit-retention';
import { caImport } from './ca-import';
import { caInit } from './ca-init';
import { caRotate } from './ca-rotate';
import { caStatusCommand } from './ca-status';
import { entryCreate, entryDelete, entryList } from './entry';
import { migrate } from './migrate';
import { nodeList, nodeShow } from './node';
import { certList, certRevoke, crlShow, nodeRevoke } from './revocation';
import { server } from './server';
import { tokenCreate } from './token';
import { nodeEnroll, tpmCaAdd, tpmCaList } from './tpm';

/** Every command of `baton`, in the order `baton --help` lists them. */
export const COMMANDS: Command[] = [
  caInit,
  caImport,
  caRotate,
  caStatusCommand,
  server,
  migrate,
  adminRecover,
  adminIssue,
  tokenCreate,
  nodeList,
  nodeShow,
  nodeRevoke,
  nodeEnroll,
  tpmCaAdd,
  tpmCaList,
  certList,
  certRevoke,
  crlShow,
  entryCreate,
  entryList,
  entryDelete,
  agent,
  agentTpmId,
  auditList,
  auditVerify,
  auditCheckpoint,
  auditExport,
  auditPrune,
];
