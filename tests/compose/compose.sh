#!/usr/bin/env bash
# `docker compose` for docker-compose.yml on podman, for hosts with no Docker engine and no
# container registry (see tests/test_compose.py):
#   tests/compose/compose.sh build [podman build options]   base images, then the Dockerfile
#   tests/compose/compose.sh [podman-compose args]          e.g. -p demo up -d / -p demo down -t 45
# The checkout is this script's (or $VOICEBOTS_COMPOSE_DIR). Base images: base-images.sh.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="${VOICEBOTS_COMPOSE_DIR:-$(cd "$here/../.." && pwd)}"
export CONTAINERS_CONF="${CONTAINERS_CONF:-$here/containers.conf}"
"$here/base-images.sh"

if [ "${1:-}" = build ]; then
  shift
  # The image compose runs; the host network, so pip and apt inside the build use the host's
  # mirrors and proxy; never pull (the base images are local).
  exec podman build --network=host --pull=never -t voicebots:local \
    -f "$root/Dockerfile" "$@" "$root"
fi
# Debian's podman-compose, with its ${VAR:-} interpolation fixed (podman-compose.py). Like
# `docker compose`, a docker-compose.override.yml next to docker-compose.yml is merged over it
# (README: one's own bot), and podman-compose reads the .env next to them.
files=(-f "$root/docker-compose.yml")
if [ -f "$root/docker-compose.override.yml" ]; then
  files+=(-f "$root/docker-compose.override.yml")
fi
exec /usr/bin/python3 "$here/podman-compose.py" "${files[@]}" "$@"
