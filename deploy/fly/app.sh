#!/usr/bin/env bash
# The `app` process of a regional Fly.io Machine: the spawner (which forks the bots) and
# signaling, side by side, the spawner's control API on 127.0.0.1.
#
# Fly.io sends kill_signal (SIGTERM) to this script, and SIGKILL kill_timeout later. On SIGTERM
# the spawner drains first: it stops taking calls (so signaling's /readyz answers 503
# "draining") and lets live calls go on for up to VOICEBOTS_DRAIN_TIMEOUT, while signaling
# keeps serving session status and hang-ups. Signaling is stopped once the spawner has exited.
# A second SIGTERM is passed on too (the spawner then ends its calls at once). If either
# process exits on its own, the other is stopped the same way and the script exits non-zero.
#
# Both run in sessions of their own, so a signal meant for the Machine reaches them only
# through this script, exactly once each (a spawner signalled twice would skip its drain).
set -uo pipefail

setsid voicebots spawner &
spawner=$!
setsid voicebots signaling &
signaling=$!

signals=0
# shellcheck disable=SC2317  # called by the trap
on_signal() {
  signals=$((signals + 1))
  kill -TERM "$spawner" 2>/dev/null || true
}
trap on_signal TERM INT

alive() { kill -0 "$1" 2>/dev/null; }

failed=0
while alive "$spawner"; do
  if ! alive "$signaling" && [ "$signals" -eq 0 ] && [ "$failed" -eq 0 ]; then
    echo "app.sh: signaling exited on its own; draining the spawner" >&2
    failed=1
    kill -TERM "$spawner" 2>/dev/null || true
  fi
  # A short sleep that a trapped signal interrupts (bash runs traps between commands).
  sleep 0.2 &
  wait $! 2>/dev/null || true
done
wait "$spawner"
spawner_status=$?
if [ "$signals" -eq 0 ] && [ "$failed" -eq 0 ]; then
  echo "app.sh: the spawner exited on its own (status $spawner_status); stopping signaling" >&2
  failed=1
fi

if alive "$signaling"; then
  kill -TERM "$signaling" 2>/dev/null || true
fi
wait "$signaling" 2>/dev/null
if [ "$failed" -ne 0 ]; then
  exit 1
fi
exit "$spawner_status"
