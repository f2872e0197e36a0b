# scripts/lib.sh — sourced by every script: the repository root, cargo on PATH, the project-local
# PGRX_HOME, and one way to print (`say`), fail (`die`, exit 2) and time a step (`timed`).
# shellcheck shell=bash
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SCRIPT_NAME=$(basename "$0")
export PATH="$HOME/.cargo/bin:$PATH"
# Every clone has its own pgrx configuration (see scripts/setup).
export PGRX_HOME="$ROOT/.pg/pgrx"
# Heavy downloads and builds, kept once per machine outside any clone (readable by postgres).
export PTRACK_CACHE="${PTRACK_CACHE:-/var/cache/ptrack}"
# The majors the extension is built, installed and tested on.
MAJORS="13 14 15 16 17 18"
# ext_target MAJOR — the extension's cargo target directory for MAJOR. Kept in the machine's
# cache, not the clone: the dependencies (pgrx-pg-sys's bindings above all) are then built once
# per machine and major; cargo still rebuilds whatever changed, ptrack's own crates in a new
# clone included.
ext_target() { printf '%s/ext-target/pg%s' "$PTRACK_CACHE" "$1"; }

say() { printf '%s: %s\n' "$SCRIPT_NAME" "$*"; }
die() { printf '%s: error: %s\n' "$SCRIPT_NAME" "$*" >&2; exit 2; }

# timed NAME LOG CMD... — runs CMD with its output in LOG, records "NAME STATUS SECONDS" in
# $TIMINGS (one line per step) and returns CMD's status.
timed() {
  local name=$1 log=$2; shift 2
  local t0=$SECONDS rc=0
  "$@" >"$log" 2>&1 || rc=$?
  printf '%s %s %s\n' "$name" "$rc" "$((SECONDS - t0))" >>"${TIMINGS:?}"
  return "$rc"
}
