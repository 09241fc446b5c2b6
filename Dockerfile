# syntax=docker/dockerfile:1
# Multi-stage build on the official Bun image; runs as the image's non-root `bun` user (uid 1000).
# To drive the host's Docker Engine through its socket, that user needs the socket's group:
# docker-compose.yml adds it (group_add: DOCKER_GID).
# Where Docker Hub is out of reach, scripts/bun-base-image.sh builds a stand-in for both
# (--build-arg BUN_IMAGE=… BUN_SLIM_IMAGE=…); test/docker-image.test.ts builds and runs this file so.
ARG BUN_IMAGE=oven/bun:1.4.5
ARG BUN_SLIM_IMAGE=oven/bun:1.4.5-slim
FROM ${BUN_IMAGE} AS deps
WORKDIR /app
COPY package.json package-lock.json ./
COPY patches ./patches
# Bun reads npm's package-lock.json, so the image gets the locked versions; then the patches of
# patches/ (README, "Patched dependencies"), as npm's postinstall applies them.
RUN bun install --production --ignore-scripts && bun node_modules/patch-package/index.js

FROM ${BUN_SLIM_IMAGE} AS runtime
WORKDIR /app
# Everything kept on disk lives in these three folders: mount a volume on each (docker-compose.yml).
ENV NODE_ENV=production PORT=3001 DATA_DIR=/app/data UPLOAD_DIR=/app/uploads MODEL_DIR=/app/models
# The code and its dependencies stay root's, readable but not writable by the user that runs
# them: a compromised process cannot rewrite the server it runs.
COPY --from=deps /app/node_modules ./node_modules
COPY package.json tsconfig.json bunfig.toml ./
COPY src ./src
COPY sql ./sql
# The only folders `bun` may write: owned by it in the image, so a new named volume mounted on
# one starts out as a copy of it, ownership included, and is writable by it.
RUN chmod -R a+rX package.json tsconfig.json bunfig.toml src sql \
  && mkdir -p /app/data /app/uploads /app/models && chown -R bun:bun /app/data /app/uploads /app/models
USER bun
EXPOSE 3001
# Liveness, not readiness: a database outage makes /health 503, and replacing the container would not cure it.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD bun -e "fetch('http://127.0.0.1:' + (process.env.PORT || 3001) + '/health/live').then(r => process.exit(r.ok ? 0 : 1)).catch(() => process.exit(1))"
CMD ["bun", "src/main.ts"]
