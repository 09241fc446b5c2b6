#!/usr/bin/env bash
# Build a stand-in for the official Bun image (oven/bun) where Docker Hub cannot be reached
# (this project's CI and development machines reach only the npm registry and Debian), so
# the real Dockerfile can still be built and run:
#
#   scripts/bun-base-image.sh [TAG]      # default tag quadrax/bun-base:test; prints the tag
#   docker build --network host --build-arg BUN_IMAGE=quadrax/bun-base:test \
#     --build-arg BUN_SLIM_IMAGE=quadrax/bun-base:test .
#
# What the Dockerfile relies on in oven/bun is here too: `bun` on PATH (/usr/local/bin), a
# non-root `bun` user and group (uid and gid 1000, home /home/bun), a shell with mkdir and
# chown, and CA certificates for `bun install`. The files are this machine's: the Bun binary
# the project installed (node_modules/bun, the version package.json pins), Debian's
# busybox-static for the shell, and Debian's glibc, libstdc++ and libgcc (which Bun and
# DuckDB's native module link against) and ca-certificates. oven/bun is Debian too.
#
# Uses DOCKER_HOST like the docker CLI. Rebuilds the image every time (a second or two).
set -euo pipefail

TAG="${1:-quadrax/bun-base:test}"
ROOT_DIR="$(cd "$(dirname "$0")/.." && pwd)"
BUN="$ROOT_DIR/node_modules/bun/bin/bun.exe"
DOCKER=/usr/bin/docker # Debian's client: its API version matches scripts/docker-up.sh's engine
log() { echo "bun-base-image: $*" >&2; }

[ -x "$BUN" ] || { log "no Bun binary at $BUN: run npm install first"; exit 1; }
[ -x /bin/busybox ] || { log "busybox-static is not installed (scripts/docker-up.sh installs it)"; exit 1; }
[ -r /etc/ssl/certs/ca-certificates.crt ] || { log "ca-certificates is not installed"; exit 1; }

root="$(mktemp -d)"
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,etc/ssl/certs,tmp,var/tmp,home/bun/app,usr/local/bin,lib64,lib/x86_64-linux-gnu,proc,sys,dev,run}
cp /bin/busybox "$root/bin/busybox"
for applet in $(/bin/busybox --list); do
  [ "$applet" = busybox ] || ln -sf busybox "$root/bin/$applet"
done
cp "$BUN" "$root/usr/local/bin/bun"
ln -s bun "$root/usr/local/bin/bunx"
# Every shared library Bun and DuckDB's module load (by their sonames, links resolved).
for lib in libc.so.6 libm.so.6 libpthread.so.0 libdl.so.2 librt.so.1 libstdc++.so.6 libgcc_s.so.1; do
  cp -L "/lib/x86_64-linux-gnu/$lib" "$root/lib/x86_64-linux-gnu/$lib"
done
cp -L /lib64/ld-linux-x86-64.so.2 "$root/lib64/ld-linux-x86-64.so.2"
cp -L /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
# oven/bun's users: root, and `bun` (1000:1000).
cat >"$root/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
bun:x:1000:1000:bun:/home/bun:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
EOF
cat >"$root/etc/group" <<'EOF'
root:x:0:
bun:x:1000:
nogroup:x:65534:
EOF
chmod 1777 "$root/tmp" "$root/var/tmp"
chown -R 1000:1000 "$root/home/bun"

tar --numeric-owner -C "$root" -c . | "$DOCKER" import \
  --change 'ENV PATH=/usr/local/bin:/usr/bin:/bin SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
  --change 'WORKDIR /home/bun/app' \
  --change 'CMD ["bun"]' \
  - "$TAG" >/dev/null
log "built $TAG ($("$BUN" --version), from this machine's files)"
echo "$TAG"
