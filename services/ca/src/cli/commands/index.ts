import type { Command } from '../command';
import { adminRecover } from './admin-recover';
import { caInit } from './ca-init';
import { migrate } from './migrate';
import { server } from './server';

/** Every command of `baton`, in the order `baton --help` lists them. */
export const COMMANDS: Command[] = [caInit, server, migrate, adminRecover];
