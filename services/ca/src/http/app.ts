import express, { type Express } from 'express';
import type { Logger } from 'pino';
import type { Clock } from '../domain/clock';
import { BatonError } from '../domain/errors';
import type { Keyring } from '../domain/keyring';
import type { Installation, Storage } from '../domain/ports';
import { errorHandler } from './errors';
import type { Metrics } from './metrics';
import { requestContext, secureHeaders } from './request-context';
import { bundleRoutes } from './routes/bundle';
import { healthRoutes } from './routes/health';

export interface AppDeps {
  clock: Clock;
  storage: Storage;
  installation: Installation;
  /** A getter: the keyring can be reloaded (CA rotation) without rebuilding the app. */
  keyring: () => Keyring;
  log: Logger;
  metrics: Metrics;
}

/** JSON bodies are small (a CSR is ~500 bytes of PEM); anything large is refused early. */
export const BODY_LIMIT = '64kb';

/** Builds the HTTP application; it never listens (tests and main.ts decide that). */
export function buildApp(deps: AppDeps): Express {
  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);
  app.use(requestContext(deps.log, deps.metrics));
  app.use(secureHeaders);
  app.use(express.json({ limit: BODY_LIMIT, type: ['application/json', 'application/*+json'] }));
  app.use(bundleRoutes(deps));
  app.use(healthRoutes(deps));
  app.use((_req, _res, next) => next(new BatonError('ERR_NOT_FOUND', 'no such route')));
  app.use(errorHandler(deps.log));
  return app;
}
