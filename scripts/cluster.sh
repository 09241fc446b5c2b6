#!/bin/sh
# N QUADRAX nodes behind Debian's nginx on one PostgreSQL and Redis (see scripts/cluster.ts):
#   DATABASE_URL=postgres://… REDIS_URL=redis://… scripts/cluster.sh 3
# SIGHUP: rolling restart; Ctrl-C: stop. Needs nginx (apt-get install nginx).
cd "$(dirname "$0")/.." || exit 1
exec bun scripts/cluster.ts "$@"
