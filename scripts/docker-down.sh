#!/usr/bin/env bash
# Stop the engine started by scripts/docker-up.sh (same QUADRAX_DOCKER_DIR). Its data root
# (images, volumes) is kept, so the next docker-up.sh is fast; pass --purge to delete it.
set -euo pipefail

DIR="${QUADRAX_DOCKER_DIR:-/var/lib/quadrax-docker}"
PIDFILE="$DIR/docker.pid"
TIMEOUT="${QUADRAX_DOCKER_TIMEOUT:-60}"

log() { echo "docker-down: $*" >&2; }

# Alive and not a zombie (an engine killed outside may linger unreaped for a moment).
alive() { [ "$(awk '/^State:/ { print $2 }' "/proc/$1/status" 2>/dev/null)" ] && [ "$(awk '/^State:/ { print $2 }' "/proc/$1/status")" != Z ]; }

if [ -f "$PIDFILE" ] && pid="$(cat "$PIDFILE")" && [ -n "$pid" ] && alive "$pid"; then
  log "stopping dockerd (pid $pid)"
  kill -TERM "$pid"
  deadline=$((SECONDS + TIMEOUT))
  while alive "$pid"; do
    if [ $SECONDS -ge $deadline ]; then
      log "dockerd did not stop within ${TIMEOUT}s; killing it"
      kill -KILL "$pid" 2>/dev/null || true
      break
    fi
    sleep 0.2
  done
else
  log "no engine running for $DIR"
fi
rm -f "$PIDFILE" "$DIR/docker.sock"

if [ "${1:-}" = "--purge" ]; then
  # Mounts left by a killed engine (overlay layers, shm) would make rm fail half-way.
  awk -v d="$DIR/" 'index($2, d) == 1 { print $2 }' /proc/mounts | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
  rm -rf "$DIR"
  log "removed $DIR"
fi
