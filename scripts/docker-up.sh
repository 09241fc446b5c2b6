#!/usr/bin/env bash
# Make a Docker Engine available where there is none (development, tests, CI).
#
#   scripts/docker-up.sh            # installs what is missing, starts dockerd, imports the test image
#   eval "$(scripts/docker-up.sh | tail -n 1)"; export DOCKER_HOST
#
# The engine gets a socket, data root and exec root of its own under QUADRAX_DOCKER_DIR
# (default /var/lib/quadrax-docker), so it never collides with a system Docker on the same
# machine. Running it again while the engine is up only checks the image and prints the
# same last line: `DOCKER_HOST=unix://…/docker.sock`.
#
# Environment:
#   QUADRAX_DOCKER_DIR     where the socket, data, pid file, config and log live
#   QUADRAX_DOCKER_TIMEOUT seconds to wait for the engine to answer (default 60)
#   QUADRAX_TEST_IMAGE     tag of the local busybox image (default quadrax/busybox:test)
set -euo pipefail

DIR="${QUADRAX_DOCKER_DIR:-/var/lib/quadrax-docker}"
SOCK="$DIR/docker.sock"
HOST="unix://$SOCK"
IMAGE="${QUADRAX_TEST_IMAGE:-quadrax/busybox:test}"
TIMEOUT="${QUADRAX_DOCKER_TIMEOUT:-60}"
LOG="$DIR/dockerd.log"

log() { echo "docker-up: $*" >&2; }

# Debian's client, not whatever `docker` comes first on PATH: its API version matches the
# daemon we start.
DOCKER=/usr/bin/docker
dk() { "$DOCKER" -H "$HOST" "$@"; }

install_missing() {
  local missing=()
  [ -x /usr/sbin/dockerd ] && [ -x "$DOCKER" ] || missing+=(docker.io)
  dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'install ok installed' || missing+=(busybox-static)
  [ -x /usr/bin/runsc ] || missing+=(runsc)
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # The package's maintainer scripts would start a system dockerd on /var/run/docker.sock
  # with its default iptables setup, which fails in a sandbox and is not the engine we want:
  # policy-rc.d exit code 101 means "action forbidden" to invoke-rc.d (see policy-rc.d(8)).
  local policy_created=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    policy_created=1
  fi
  local rc=0
  { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >&2 || rc=$?
  [ $policy_created -eq 1 ] && rm -f /usr/sbin/policy-rc.d
  if [ $rc -ne 0 ]; then
    log "apt-get failed (exit $rc)"
    exit $rc
  fi
}

engine_up() { dk version --format '{{.Server.Version}}' >/dev/null 2>&1; }

start_engine() {
  mkdir -p "$DIR/data" "$DIR/exec"
  # runsc must run without its own network stack here: with it, the sandbox refuses to
  # start on this kind of machine; the containers we run use NetworkMode "none" anyway.
  cat >"$DIR/daemon.json" <<'JSON'
{
  "runtimes": {
    "runsc": { "path": "/usr/bin/runsc", "runtimeArgs": ["--network=none"] }
  }
}
JSON
  # A stale pid file or socket from a killed engine would make dockerd refuse to start.
  if [ -f "$DIR/docker.pid" ]; then
    local pid
    pid="$(cat "$DIR/docker.pid")"
    if our_dockerd "$pid"; then
      # Ours, alive, not answering yet: it is still starting; wait for it, never start a second.
      log "dockerd (pid $pid) is starting; waiting for it"
      wait_for_engine
      return 0
    fi
    rm -f "$DIR/docker.pid"
  fi
  [ -S "$SOCK" ] && rm -f "$SOCK"
  stop_orphan_containerd
  log "starting dockerd ($HOST, data root $DIR/data, log $LOG)"
  # setsid + nohup: the engine must outlive this script and the shell that ran it.
  setsid nohup /usr/sbin/dockerd \
    --iptables=false --ip-forward=false --bridge=none \
    --host "$HOST" \
    --data-root "$DIR/data" \
    --exec-root "$DIR/exec" \
    --pidfile "$DIR/docker.pid" \
    --config-file "$DIR/daemon.json" \
    >>"$LOG" 2>&1 </dev/null &
  wait_for_engine
}

# A live dockerd process started for this DIR (not a zombie, not a recycled pid).
our_dockerd() {
  local pid="$1"
  [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
  [ "$(awk '/^State:/ { print $2 }' "/proc/$pid/status" 2>/dev/null)" != Z ] || return 1
  local cmd
  cmd="$(tr '\0' ' ' <"/proc/$pid/cmdline")"
  [[ "$cmd" == *dockerd*"--data-root $DIR/data "* ]]
}

# dockerd runs its own containerd under the exec root. When dockerd was killed, that
# containerd lives on, and a new dockerd times out waiting for its own to start.
stop_orphan_containerd() {
  local pidfile="$DIR/exec/containerd/containerd.pid" pid cmd
  [ -f "$pidfile" ] || return 0
  pid="$(cat "$pidfile")"
  if [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ]; then
    cmd="$(tr '\0' ' ' <"/proc/$pid/cmdline")"
    if [[ "$cmd" == *containerd*"$DIR/exec/"* ]]; then
      log "stopping containerd (pid $pid) left by a dockerd that was killed"
      kill -TERM "$pid" 2>/dev/null || true
      local deadline=$((SECONDS + 10))
      while [ -r "/proc/$pid/cmdline" ] && [ "$(awk '/^State:/ { print $2 }' "/proc/$pid/status" 2>/dev/null)" != Z ]; do
        if [ $SECONDS -ge $deadline ]; then
          kill -KILL "$pid" 2>/dev/null || true
          break
        fi
        sleep 0.2
      done
    fi
  fi
  rm -f "$pidfile"
}

wait_for_engine() {
  local deadline=$((SECONDS + TIMEOUT))
  until engine_up; do
    if [ $SECONDS -ge $deadline ]; then
      log "the engine did not answer within ${TIMEOUT}s; last lines of $LOG:"
      tail -n 30 "$LOG" >&2 || true
      exit 1
    fi
    sleep 0.5
  done
  log "engine up: $(dk version --format 'server {{.Server.Version}}, API {{.Server.APIVersion}}')"
}

import_image() {
  if dk image inspect "$IMAGE" >/dev/null 2>&1; then
    log "image $IMAGE already present"
    return 0
  fi
  local busybox=/bin/busybox
  [ -x "$busybox" ] || { log "busybox-static is not installed ($busybox missing)"; exit 1; }
  local root
  root="$(mktemp -d)"
  trap 'rm -rf "$root"' RETURN
  mkdir -p "$root"/{bin,etc,tmp,home/quadrax,proc,sys,dev,root,var/tmp,run}
  cp "$busybox" "$root/bin/busybox"
  # Relative links: `busybox --install -s` would point them at the host's resolved path
  # of busybox (/usr/bin/busybox on a merged-/usr system), which does not exist in the image.
  local applet
  for applet in $("$busybox" --list); do
    [ "$applet" = busybox ] || ln -sf busybox "$root/bin/$applet"
  done
  cat >"$root/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
quadrax:x:1000:1000:quadrax:/home/quadrax:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
EOF
  cat >"$root/etc/group" <<'EOF'
root:x:0:
quadrax:x:1000:
nogroup:x:65534:
EOF
  chmod 1777 "$root/tmp" "$root/var/tmp"
  # A fresh named volume mounted on /home/quadrax copies this directory's owner, so the
  # non-root user can write its home.
  chown -R 1000:1000 "$root/home/quadrax"
  # The default command keeps a workstation alive and exits at once on SIGTERM (PID 1
  # ignores signals it has no handler for, which would turn every stop into a kill).
  tar --numeric-owner -C "$root" -c . | dk import \
    --change 'ENV HOME=/home/quadrax' \
    --change 'WORKDIR /home/quadrax' \
    --change 'CMD ["/bin/sh", "-c", "trap \"exit 0\" TERM INT; while :; do sleep 3600 & wait $!; done"]' \
    - "$IMAGE" >/dev/null
  log "imported $IMAGE"
}

install_missing
if engine_up; then
  log "engine already answering on $HOST"
else
  start_engine
fi
import_image
echo "DOCKER_HOST=$HOST"
