# syntax=docker/dockerfile:1
# Baton: mutual-TLS identity and certificate authority service.
#   docker build -t baton .
#   docker run --rm -e BATON_DATABASE_URL=postgres://... -e BATON_KEK=... -p 8443:8443 baton
# See docker-compose.yml for PostgreSQL, a one-shot `ca init` and two replicas.

# ---- build: full dependencies, the native modules, TypeScript compiled to dist/ ----------------
FROM node:20-bookworm-slim AS build
# python3, make and g++ build the native modules (services/ca/native: the ECDSA verifier and the
# Unix-socket peer credentials) against the headers of this Node (npm_config_nodedir);
# BATON_REQUIRE_NATIVE=1 fails the build rather than ship an image that silently verifies CSRs the
# slower way, or whose agent cannot serve the Workload API. The runtime stage needs none of them.
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 make g++ \
    && rm -rf /var/lib/apt/lists/*
ENV npm_config_nodedir=/usr/local \
    BATON_REQUIRE_NATIVE=1
WORKDIR /app
COPY package.json package-lock.json ./
# --ignore-scripts: the root package's `prepare` builds, and the sources are not here yet. Then the
# one dependency with a native addon, pkcs11js (--kms: CA keys in a PKCS#11 token), is compiled.
RUN npm ci --ignore-scripts --no-audit --no-fund \
    && npm rebuild pkcs11js
COPY . .
RUN npm run build

# ---- runtime: production dependencies, compiled code, non-root ---------------------------------
FROM node:20-bookworm-slim AS runtime
ENV NODE_ENV=production \
    BATON_DATA_DIR=/var/lib/baton \
    BATON_LISTEN=0.0.0.0:8443
WORKDIR /app
# --ignore-scripts: the one production dependency with an install script (pkcs11js) gets its addon
# from the build stage below, and the root package's lifecycle scripts (prepare, ...) may call dev
# tools that are not installed here.
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund \
    && npm cache clean --force
COPY --from=build /app/dist ./dist
COPY --from=build /app/services/ca/native/build/Release/baton_ec_verify.node ./services/ca/native/build/Release/
COPY --from=build /app/services/ca/native/build/Release/baton_peer_credentials.node ./services/ca/native/build/Release/
# pkcs11js's addon, compiled in the build stage (the vendor's PKCS#11 module is the operator's to add).
COPY --from=build /app/node_modules/pkcs11js/build/Release/pkcs11.node ./node_modules/pkcs11js/build/Release/
# The Workload API's and SDS's service definitions, read at run time by the agent (proto-loader).
COPY clients/rotation/src/workload-api/workload.proto ./clients/rotation/src/workload-api/
COPY clients/rotation/src/workload-api/envoy-proto ./clients/rotation/src/workload-api/envoy-proto
COPY bin ./bin
# The application files stay owned by root (read-only for the service). The data directory, and
# admin/ in it, belong to the service user: a named volume mounted there starts with that owner.
RUN groupadd --system --gid 10001 baton \
    && useradd --system --uid 10001 --gid baton --home-dir /var/lib/baton --no-create-home \
       --shell /usr/sbin/nologin baton \
    && mkdir -p /var/lib/baton/admin \
    && chown -R baton:baton /var/lib/baton \
    && chmod 0700 /var/lib/baton /var/lib/baton/admin
# Numeric, so that orchestrators can verify "runAsNonRoot" (uid 10001 = baton).
USER 10001:10001
EXPOSE 8443
# /healthz over HTTPS on the listen port; the chain is Baton's own, so it is not verified here.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
  CMD ["node", "-e", "const port = Number((process.env.BATON_LISTEN || '').split(':').pop()) || 8443; require('node:https').get({ host: '127.0.0.1', port, path: '/healthz', rejectUnauthorized: false, timeout: 4000 }, (res) => process.exit(res.statusCode === 200 ? 0 : 1)).on('timeout', () => process.exit(1)).on('error', () => process.exit(1));"]
ENTRYPOINT ["node", "bin/baton.js"]
CMD ["server", "--listen", "0.0.0.0:8443"]
