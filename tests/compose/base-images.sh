#!/usr/bin/env bash
# Make the base images the Dockerfile and docker-compose.yml name, without a container registry,
# from one Debian bookworm root filesystem (debootstrap; bookworm's python3 is 3.11):
#   python:3.11-slim  python3 + pip as python/pip, `pip install` allowed system-wide
#   redis:7-alpine    Debian's redis-server, data in /data, protected mode off
# An image already in podman's store under either name (a real one pulled from Docker Hub, or
# ours from an earlier run) is used as it is. The root filesystem is kept as a tarball under
# $VOICEBOTS_IMAGE_CACHE (default ~/.cache/voicebots/images). Needs root (debootstrap, podman).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
export CONTAINERS_CONF="${CONTAINERS_CONF:-$here/containers.conf}"
cache="${VOICEBOTS_IMAGE_CACHE:-$HOME/.cache/voicebots/images}"
mirror="${VOICEBOTS_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
rootfs_image=localhost/voicebots-rootfs:bookworm
python_image=docker.io/library/python:3.11-slim
redis_image=docker.io/library/redis:7-alpine
label=io.voicebots.local-base=debootstrap-bookworm

log() { echo "base-images: $*" >&2; }

if podman image exists "$python_image" && podman image exists "$redis_image"; then
  exit 0
fi

if ! podman image exists "$rootfs_image"; then
  tarball="$cache/bookworm-rootfs.tar"
  if [ ! -s "$tarball" ]; then
    mkdir -p "$cache"
    work="$(mktemp -d "$cache/rootfs.XXXXXX")"
    trap 'rm -rf "$work"' EXIT
    log "debootstrap bookworm from $mirror"
    debootstrap --variant=minbase \
      --include=python3,python3-pip,python3-venv,python-is-python3,ca-certificates \
      bookworm "$work/rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 \
      || { tail -n 30 "$work/debootstrap.log" >&2; exit 1; }
    rm -rf "$work/rootfs/var/cache/apt/archives/"*.deb "$work/rootfs/var/lib/apt/lists/"*
    tar -C "$work/rootfs" --numeric-owner -cf "$tarball.tmp" .
    mv "$tarball.tmp" "$tarball"
  fi
  log "import $tarball"
  podman import --quiet "$tarball" "$rootfs_image" >/dev/null
fi

if ! podman image exists "$python_image"; then
  ctx="$(mktemp -d)"
  mkdir "$ctx/ca"
  cp /usr/local/share/ca-certificates/*.crt "$ctx/ca/" 2>/dev/null || true
  log "build $python_image (local stand-in)"
  podman build --quiet --network=host --label "$label" -f "$here/python.Containerfile" \
    -t "$python_image" "$ctx" >/dev/null
  rm -rf "$ctx"
fi

if ! podman image exists "$redis_image"; then
  log "build $redis_image (local stand-in)"
  podman build --quiet --network=host --label "$label" -f "$here/redis.Containerfile" \
    -t "$redis_image" "$here" >/dev/null
fi
