# syntax=docker/dockerfile:1
# Multi-stage build on the official Bun image; runs as the image's non-root `bun` user.
FROM oven/bun:1.4.5 AS deps
WORKDIR /app
COPY package.json package-lock.json ./
# Bun reads npm's package-lock.json, so the image gets the locked versions.
RUN bun install --production --ignore-scripts

FROM oven/bun:1.4.5-slim AS runtime
WORKDIR /app
ENV NODE_ENV=production PORT=3001 DATA_DIR=/app/data UPLOAD_DIR=/app/uploads
COPY --from=deps --chown=bun:bun /app/node_modules ./node_modules
COPY --chown=bun:bun package.json tsconfig.json bunfig.toml ./
COPY --chown=bun:bun src ./src
COPY --chown=bun:bun sql ./sql
RUN mkdir -p /app/data /app/uploads && chown -R bun:bun /app/data /app/uploads
USER bun
EXPOSE 3001
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD bun -e "fetch('http://127.0.0.1:' + (process.env.PORT || 3001) + '/health').then(r => process.exit(r.ok ? 0 : 1)).catch(() => process.exit(1))"
CMD ["bun", "src/main.ts"]
