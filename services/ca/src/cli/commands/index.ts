import type { Command } from '../command';
import { agent } from './agent';
import { adminRecover } from './admin-recover';
import { caInit } from './ca-init';
import { entryCreate, entryDelete, entryList } from './entry';
import { migrate } from './migrate';
import { nodeList, nodeShow } from './node';
import { certList, certRevoke, crlShow, nodeRevoke } from './revocation';
import { server } from './server';
import { tokenCreate } from './token';

/** Every command of `baton`, in the order `baton --help` lists them. */
export const COMMANDS: Command[] = [
  caInit,
  server,
  migrate,
  adminRecover,
  tokenCreate,
  nodeList,
  nodeShow,
  nodeRevoke,
  certList,
  certRevoke,
  crlShow,
  entryCreate,
  entryList,
  entryDelete,
  agent,
];
