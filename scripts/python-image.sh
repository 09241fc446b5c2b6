#!/usr/bin/env bash
# Build the Python data-science image (Jupyter kernel, NumPy, pandas, scikit-learn, matplotlib)
# from Debian's packages, where no image registry can be reached:
#
#   scripts/python-image.sh               # builds quadrax/python:<version> unless the engine has it
#   scripts/python-image.sh --print-tag   # prints the tag only; builds nothing, needs no engine
#   export "$(scripts/python-image.sh | tail -n 1)"   # QUADRAX_PYTHON_IMAGE=quadrax/python:<version>
#
# The package list is src/engines/containers/python-image.packages, the one source of truth:
# the version is a short hash of that list (sorted, comments dropped) and of FORMAT below, and
# src/engines/containers/python-image.ts computes the same tag for the server and the tests.
# A changed list gives a new tag, built once per engine; a present tag is never rebuilt.
#
# The root filesystem comes from mmdebstrap (installed when missing; debootstrap --variant=minbase
# plus apt-get install inside the chroot when mmdebstrap cannot be had), from the Debian mirror
# and suite of this machine's own apt configuration (/etc/apt/sources.list,
# /etc/apt/sources.list.d/*.list and *.sources). It is fitted to how the engine runs containers
# (src/engines/containers/docker-spec.ts): uid and gid 1000 `quadrax` with the home the engine
# mounts its volume on, usable with a read-only root and a tmpfs /tmp.
#
# Environment:
#   DOCKER_HOST             the engine (default unix:///var/lib/quadrax-docker/docker.sock,
#                           scripts/docker-up.sh's)
#   QUADRAX_PYTHON_BOOTSTRAP  mmdebstrap (default) or debootstrap
set -euo pipefail

# Bump when the way the image is made changes (not the list): it is part of the version.
FORMAT=1
ROOT_DIR="$(cd "$(dirname "$0")/.." && pwd)"
PACKAGES_FILE="$ROOT_DIR/src/engines/containers/python-image.packages"
HOST="${DOCKER_HOST:-unix:///var/lib/quadrax-docker/docker.sock}"
BOOTSTRAP="${QUADRAX_PYTHON_BOOTSTRAP:-mmdebstrap}"

log() { echo "python-image: $*" >&2; }

# Debian's client, not whatever `docker` comes first on PATH: its API version matches the
# engine scripts/docker-up.sh starts.
DOCKER=/usr/bin/docker
dk() { "$DOCKER" -H "$HOST" "$@"; }

# The list as hashed: comments and blanks dropped, one package a line, sorted, unique.
packages() {
  sed -e 's/#.*//' -e 's/[[:space:]]//g' "$PACKAGES_FILE" | grep -v '^$' | LC_ALL=C sort -u
}

# Must match python-image.ts: sha256 of "quadrax-python-image <FORMAT>\n" + one line a package.
image_tag() {
  local version
  version="$({ echo "quadrax-python-image $FORMAT"; packages; } | sha256sum | cut -c1-12)"
  echo "quadrax/python:$version"
}

[ -r "$PACKAGES_FILE" ] || { log "no package list at $PACKAGES_FILE"; exit 1; }
TAG="$(image_tag)"
if [ "${1:-}" = --print-tag ]; then
  echo "$TAG"
  exit 0
fi
[ $# -eq 0 ] || { log "usage: $0 [--print-tag]"; exit 2; }

# --- The machine's Debian sources --------------------------------------------------------
# CODENAME: this machine's release; SOURCES: "URI SUITE" pairs of its `deb` entries with the
# `main` component whose suite is the release or its -updates/-security.

CODENAME=""
SOURCES=()

read_codename() {
  # shellcheck disable=SC1091
  CODENAME="$(. /etc/os-release && echo "${VERSION_CODENAME:-}")"
  [ -n "$CODENAME" ] || { log "no VERSION_CODENAME in /etc/os-release: not a Debian release?"; exit 1; }
}

ours() {
  local suite="$1"
  [ "$suite" = "$CODENAME" ] || [ "$suite" = "$CODENAME-updates" ] || [ "$suite" = "$CODENAME-security" ]
}

add_source() {
  local uri="$1" suite="$2" components="$3"
  [[ " $components " == *" main "* ]] || return 0
  ours "$suite" || return 0
  SOURCES+=("${uri%/} $suite")
}

# One-line format: deb [options] URI SUITE COMPONENT...
read_list() {
  local file="$1" line type uri suite rest
  while IFS= read -r line || [ -n "$line" ]; do
    line="${line%%#*}"
    line="$(sed -e 's/\[[^]]*\]//' <<<"$line")" # options
    read -r type uri suite rest <<<"$line" || true
    [ "${type:-}" = deb ] || continue
    add_source "$uri" "$suite" "${rest:-}"
  done <"$file"
}

# deb822 format: stanzas of Types, URIs, Suites, Components (and Enabled).
read_sources() {
  local file="$1"
  local stanza
  while IFS= read -r -d '' stanza; do
    local types="" uris="" suites="" components="" enabled=yes key value uri suite
    while IFS= read -r line; do
      [[ "$line" =~ ^([A-Za-z-]+):[[:space:]]*(.*)$ ]] || continue
      key="${BASH_REMATCH[1],,}" value="${BASH_REMATCH[2]}"
      case "$key" in
        types) types="$value" ;;
        uris) uris="$value" ;;
        suites) suites="$value" ;;
        components) components="$value" ;;
        enabled) enabled="${value,,}" ;;
      esac
    done <<<"$stanza"
    [ "$enabled" = no ] && continue
    [[ " $types " == *" deb "* ]] || continue
    for uri in $uris; do
      for suite in $suites; do add_source "$uri" "$suite" "$components"; done
    done
  # Stanzas are separated by blank lines; comments dropped; NUL-terminated for read -d ''.
  done < <(sed -e '/^[[:space:]]*#/d' "$file" | awk 'BEGIN { RS = ""; ORS = "\0" } { print }')
}

read_apt_sources() {
  read_codename
  local f
  [ -r /etc/apt/sources.list ] && read_list /etc/apt/sources.list
  for f in /etc/apt/sources.list.d/*.list; do [ -r "$f" ] && read_list "$f"; done
  for f in /etc/apt/sources.list.d/*.sources; do [ -r "$f" ] && read_sources "$f"; done
  if [ ${#SOURCES[@]} -eq 0 ]; then
    log "no 'deb' source with component main for $CODENAME in /etc/apt/sources.list or /etc/apt/sources.list.d/"
    exit 1
  fi
  local s
  for s in "${SOURCES[@]}"; do log "source: $s main"; done
}

# The sources as one-line entries (what both bootstrap tools and the chroot's apt read).
source_lines() {
  local s
  for s in "${SOURCES[@]}"; do echo "deb ${s% *} ${s#* } main"; done
}

# --- Building ---------------------------------------------------------------------------

APT_UPDATED=0
apt_install() {
  export DEBIAN_FRONTEND=noninteractive
  if [ $APT_UPDATED -eq 0 ]; then
    apt-get update -qq >&2
    APT_UPDATED=1
  fi
  apt-get install -y -qq --no-install-recommends "$@" >&2
}

WORK=""
MOUNTED=()
cleanup() {
  [ -n "$WORK" ] || return 0
  local m
  for m in "${MOUNTED[@]}"; do umount -l "$m" 2>/dev/null || true; done
  # Whatever a stopped bootstrap left mounted in the chroot (/proc, /sys, /dev), deepest
  # first; and never cross into another filesystem (the host's /dev above all) when removing.
  awk -v w="$WORK/" 'index($2, w) == 1 { print $2 }' /proc/self/mounts | sort -r | while read -r m; do
    umount -l "$m" 2>/dev/null || true
  done
  rm -rf --one-file-system "$WORK"
}
trap cleanup EXIT
# bash runs no EXIT trap when a signal it does not trap ends it: exit through the trap instead.
trap 'exit 130' INT TERM

# Files nobody reads in a container; dpkg leaves them out as it unpacks (licences kept).
DPKG_EXCLUDES=(
  'path-exclude=/usr/share/doc/*'
  'path-include=/usr/share/doc/*/copyright'
  'path-exclude=/usr/share/man/*'
  'path-exclude=/usr/share/info/*'
  'path-exclude=/usr/share/locale/*'
  'path-exclude=/usr/share/lintian/*'
)

bootstrap_mmdebstrap() {
  local root="$1" args=() opt
  for opt in "${DPKG_EXCLUDES[@]}"; do args+=("--dpkgopt=$opt"); done
  local include
  include="$(packages | paste -sd, -)"
  # Variant apt: the Essential packages and apt, then the list (mmdebstrap installs no
  # Recommends); mmdebstrap itself empties apt's lists and package cache at the end.
  source_lines | mmdebstrap --variant=apt --mode=root --format=directory \
    --aptopt='APT::Install-Recommends "false"' \
    --include="$include" "${args[@]}" \
    "$CODENAME" "$root" - >&2
}

bootstrap_debootstrap() {
  local root="$1" main_uri=""
  local s
  for s in "${SOURCES[@]}"; do
    if [ "${s#* }" = "$CODENAME" ]; then main_uri="${s% *}"; break; fi
  done
  [ -n "$main_uri" ] || { log "no source for the $CODENAME suite itself"; exit 1; }
  debootstrap --variant=minbase "$CODENAME" "$root" "$main_uri" >&2
  source_lines >"$root/etc/apt/sources.list"
  printf '%s\n' "${DPKG_EXCLUDES[@]}" >"$root/etc/dpkg/dpkg.cfg.d/quadrax-excludes"
  cp -L /etc/resolv.conf "$root/etc/resolv.conf"
  mount -t proc proc "$root/proc" && MOUNTED+=("$root/proc")
  # The list is installed by apt inside the chroot: debootstrap's own --include cannot
  # resolve these packages' virtual dependencies.
  local pkgs
  mapfile -t pkgs < <(packages)
  chroot "$root" env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
  chroot "$root" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >&2
  chroot "$root" apt-get clean
  umount "$root/proc" && MOUNTED=()
  rm -f "$root/etc/resolv.conf" "$root/etc/dpkg/dpkg.cfg.d/quadrax-excludes"
}

# The user, home and leftovers, the same whichever tool made the root.
finish_root() {
  local root="$1"
  # uid and gid 1000, as the engine runs every container (docker.ts: user 1000:1000).
  grep -q '^quadrax:' "$root/etc/group" || echo 'quadrax:x:1000:' >>"$root/etc/group"
  grep -q '^quadrax:' "$root/etc/passwd" || echo 'quadrax:x:1000:1000:quadrax:/home/quadrax:/bin/bash' >>"$root/etc/passwd"
  if [ -f "$root/etc/shadow" ] && ! grep -q '^quadrax:' "$root/etc/shadow"; then
    echo 'quadrax:*:19000:0:99999:7:::' >>"$root/etc/shadow"
  fi
  if [ -f "$root/etc/gshadow" ] && ! grep -q '^quadrax:' "$root/etc/gshadow"; then
    echo 'quadrax:*::' >>"$root/etc/gshadow"
  fi
  # The engine mounts the workstation's volume here; a fresh named volume copies this
  # directory's owner, so the user can write its home.
  mkdir -p "$root/home/quadrax"
  chown 1000:1000 "$root/home/quadrax"
  chmod 755 "$root/home/quadrax"
  chmod 1777 "$root/tmp" "$root/var/tmp"
  # What a bootstrap leaves that no container needs (mmdebstrap already emptied apt's caches).
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
    "$root"/var/cache/debconf/*-old "$root"/var/log/* "$root"/usr/share/man/* "$root"/usr/share/info/* \
    "$root"/usr/share/locale/* "$root"/usr/share/lintian/*
  find "$root/usr/share/doc" -mindepth 1 -type f ! -name copyright -delete 2>/dev/null || true
  rm -f "$root/etc/hostname" "$root/etc/resolv.conf"
  : >"$root/etc/machine-id"
}

build() {
  local root="$WORK/root"
  mkdir -p "$root"
  case "$BOOTSTRAP" in
    mmdebstrap)
      if ! command -v mmdebstrap >/dev/null; then
        log "installing mmdebstrap"
        apt_install mmdebstrap || { log "mmdebstrap could not be installed; using debootstrap"; BOOTSTRAP=debootstrap; }
      fi
      ;;
    debootstrap) ;;
    *) log "QUADRAX_PYTHON_BOOTSTRAP=$BOOTSTRAP: expected mmdebstrap or debootstrap"; exit 2 ;;
  esac
  if [ "$BOOTSTRAP" = debootstrap ]; then
    command -v debootstrap >/dev/null || { log "installing debootstrap"; apt_install debootstrap; }
    log "bootstrapping $CODENAME with debootstrap --variant=minbase, then apt-get install in the chroot"
    bootstrap_debootstrap "$root"
  else
    log "bootstrapping $CODENAME with mmdebstrap --variant=apt: $(packages | paste -sd' ' -)"
    bootstrap_mmdebstrap "$root"
  fi
  finish_root "$root"
  [ -x "$root/usr/bin/python3" ] || { log "the root filesystem has no /usr/bin/python3"; exit 1; }

  # Imported without a tag first: a broken tar stream must not leave a tag that a rerun
  # would take for a finished image.
  local id
  id="$(tar --numeric-owner -C "$root" -c . | dk import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8 HOME=/home/quadrax' \
    --change 'ENV MPLBACKEND=Agg PYDEVD_DISABLE_FILE_VALIDATION=1 PYTHONUNBUFFERED=1' \
    --change "LABEL quadrax.image=python quadrax.python.format=$FORMAT" \
    --change 'WORKDIR /home/quadrax' \
    --change 'CMD ["/bin/sh", "-c", "trap \"exit 0\" TERM INT; while :; do sleep 3600 & wait $!; done"]' \
    -)"
  dk tag "$id" "$TAG"
}

# --- Main ---------------------------------------------------------------------------------

[ -x "$DOCKER" ] || { log "no Docker client at $DOCKER: run scripts/docker-up.sh first"; exit 1; }
dk version --format '{{.Server.Version}}' >/dev/null 2>&1 || { log "no engine answers on $HOST: run scripts/docker-up.sh first"; exit 1; }
if dk image inspect "$TAG" >/dev/null 2>&1; then
  log "image $TAG already present"
  echo "QUADRAX_PYTHON_IMAGE=$TAG"
  exit 0
fi
[ "$(id -u)" -eq 0 ] || { log "building needs root (a chroot with files owned by other users)"; exit 1; }

# One build at a time on this machine: a second run waits, then finds the tag.
LOCK="${TMPDIR:-/tmp}/quadrax-python-image.lock"
exec 9>"$LOCK"
if ! flock -n 9; then
  log "another build is running; waiting for it"
  flock 9
fi
if dk image inspect "$TAG" >/dev/null 2>&1; then
  log "image $TAG built by the other run"
  echo "QUADRAX_PYTHON_IMAGE=$TAG"
  exit 0
fi

read_apt_sources
WORK="$(mktemp -d "${TMPDIR:-/tmp}/quadrax-python-image.XXXXXX")"
started=$SECONDS
build
seconds=$((SECONDS - started))
size="$(dk image inspect -f '{{.Size}}' "$TAG")"
log "built $TAG in ${seconds}s, $((size / 1024 / 1024)) MB"
echo "QUADRAX_PYTHON_IMAGE=$TAG"
