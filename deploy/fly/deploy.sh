#!/usr/bin/env bash
# Creates and deploys voicebots on Fly.io: one app per region, each with its own dedicated IPv4
# (UDP needs one) and one Machine serving its calls. See deploy/fly/README.md.
#
#   deploy/fly/deploy.sh [--dry-run] [--org ORG] [--prefix NAME] [--max-bots N]
#                        [--secret NAME]... REGION...
#   e.g. REDIS_URL=rediss://... deploy/fly/deploy.sh --org acme ams iad sin
#
# For each REGION, app "<prefix>-<region>" (prefix: voicebots):
#   1. `fly apps create` unless the app exists;
#   2. `fly ips allocate-v4` (dedicated, billed monthly) unless it has one; `allocate-v6` too;
#   3. stages its secrets (read from stdin by `fly secrets import`, never on a command line):
#      VOICEBOTS_PUBLIC_IP = that IPv4, and each of SECRETS below (plus --secret NAMEs) that is
#      set in this shell. REDIS_URL is required, from this shell or an earlier deploy;
#   4. renders $BUILD_DIR/fly.<region>.toml (flytoml.py; BUILD_DIR defaults to
#      deploy/fly/build, which git ignores) and deploys it: `--ha=false`, so
#      one Machine per process group, and `fly scale count app=1` keeps it so.
#
# --dry-run runs no flyctl command at all: it prints every command it would run (lookups
# included, marked "?"), with placeholders for what lookups would return, and renders the
# fly.toml files. Secret values are never printed.
#
# Needs: flyctl, logged in (`fly auth login`); this checkout's .venv (`make test` creates it).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
FLY=${FLY:-fly}
BUILD_DIR=${BUILD_DIR:-$ROOT/deploy/fly/build}
SECRETS=(REDIS_URL OPENAI_API_KEY OPENAI_BASE_URL ELEVENLABS_API_KEY VOICEBOTS_TTS
  VOICEBOTS_ICE_SERVERS VOICEBOTS_TURN_USERNAME VOICEBOTS_TURN_CREDENTIAL
  VOICEBOTS_WEBHOOK_URL VOICEBOTS_WEBHOOK_SECRET)

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }
fail() { echo "deploy.sh: $*" >&2; exit 2; }

dry_run=0
org=""
prefix=voicebots
max_bots=7
regions=()
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) dry_run=1 ;;
    --org) org=${2:?--org needs a value}; shift ;;
    --prefix) prefix=${2:?--prefix needs a value}; shift ;;
    --max-bots) max_bots=${2:?--max-bots needs a value}; shift ;;
    --secret) SECRETS+=("${2:?--secret needs a NAME}"); shift ;;
    -h|--help) usage; exit 0 ;;
    -*) fail "unknown option $1 (see --help)" ;;
    *) regions+=("$1") ;;
  esac
  shift
done
[ ${#regions[@]} -gt 0 ] || fail "name at least one region, e.g. ams (see --help)"
[ -x "$PYTHON" ] || fail "no $PYTHON: run \`make test\` once to create .venv, or set PYTHON"
if [ "$dry_run" -eq 0 ]; then
  command -v "$FLY" >/dev/null \
    || fail "flyctl ($FLY) is not installed: https://fly.io/docs/flyctl/install/"
fi

# Runs a command that changes something, or prints it under --dry-run.
change() {
  if [ "$dry_run" -eq 1 ]; then
    printf '+'; printf ' %q' "$@"; printf '\n'
  else
    "$@"
  fi
}

# Runs a read-only lookup; under --dry-run prints it and answers $1 (a placeholder) instead.
lookup() {
  local placeholder=$1; shift
  if [ "$dry_run" -eq 1 ]; then
    { printf '?'; printf ' %q' "$@"; printf '\n'; } >&2
    printf '%s' "$placeholder"
  else
    "$@"
  fi
}

# The NAME=VALUE lines to stage for app $1 (values only ever go to flyctl's stdin).
secret_lines() {
  local name
  printf 'VOICEBOTS_PUBLIC_IP=%s\n' "$1"
  for name in "${SECRETS[@]}"; do
    if [ -n "${!name:-}" ]; then
      printf '%s=%s\n' "$name" "${!name}"
    fi
  done
}

for region in "${regions[@]}"; do
  [[ "$region" =~ ^[a-z]{3}$ ]] || fail "region '$region' is not a Fly.io region code like ams"
  app="$prefix-$region"
  echo "== $app ($region)" >&2

  # 1. The app.
  if [ "$dry_run" -eq 1 ] || ! "$FLY" status --app "$app" >/dev/null 2>&1; then
    [ "$dry_run" -eq 1 ] && echo "# if $app does not exist yet:" >&2
    change "$FLY" apps create "$app" ${org:+--org "$org"}
  fi

  # 2. Its dedicated IPv4 (for UDP and HTTP) and an IPv6 (HTTP).
  ips=$(lookup '[]' "$FLY" ips list --app "$app" --json)
  if ipv4=$("$PYTHON" "$ROOT/deploy/fly/flytoml.py" dedicated-ipv4 <<<"$ips" 2>/dev/null); then
    echo "dedicated IPv4 $ipv4" >&2
  else
    change "$FLY" ips allocate-v4 --app "$app" --yes
    change "$FLY" ips allocate-v6 --app "$app"
    ips=$(lookup '[{"Address": "<dedicated-ipv4-of-'"$app"'>", "Type": "v4"}]' \
      "$FLY" ips list --app "$app" --json)
    ipv4=$("$PYTHON" "$ROOT/deploy/fly/flytoml.py" dedicated-ipv4 <<<"$ips")
  fi

  # 3. Secrets, staged: the deploy below starts the Machines with them.
  if [ -z "${REDIS_URL:-}" ]; then
    listed=$(lookup 'REDIS_URL' "$FLY" secrets list --app "$app")
    grep -qw REDIS_URL <<<"$listed" \
      || fail "$app has no REDIS_URL: export REDIS_URL (e.g. from \`fly redis create\`) and rerun"
  fi
  if [ "$dry_run" -eq 1 ]; then
    names=$(secret_lines "$ipv4" | cut -d= -f1 | sed 's/$/=***/' | tr '\n' ' ')
    echo "+ $FLY secrets import --app $app --stage <<< $names"
  else
    secret_lines "$ipv4" | "$FLY" secrets import --app "$app" --stage
  fi

  # 4. The config, then the deploy: one Machine per process group, built on Fly's builders.
  toml="$BUILD_DIR/fly.$region.toml"
  "$PYTHON" "$ROOT/deploy/fly/flytoml.py" render --app "$app" --region "$region" \
    --max-bots "$max_bots" --out "$toml"
  echo "rendered $toml" >&2
  change "$FLY" deploy "$ROOT" --app "$app" --config "$toml" --dockerfile "$ROOT/Dockerfile" \
    --ha=false --remote-only --wait-timeout 10m
  # UDP reaches one Machine per app: never let a second app Machine exist.
  change "$FLY" scale count app=1 worker=1 --app "$app" --region "$region" --yes
  echo "$app: https://$app.fly.dev (UDP on $ipv4)" >&2
done
