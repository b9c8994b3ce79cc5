import type { Command } from '../command';
import { adminRecover } from './admin-recover';
import { caInit } from './ca-init';
import { migrate } from './migrate';
import { nodeList, nodeShow } from './node';
import { server } from './server';
import { tokenCreate } from './token';

/** Every command of `baton`, in the order `baton --help` lists them. */
export const COMMANDS: Command[] = [caInit, server, migrate, adminRecover, tokenCreate, nodeList, nodeShow];
