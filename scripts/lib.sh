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

# Garage, the S3-compatible object store the S3 tests and bench-s3 run (built by scripts/setup).
GARAGE_VERSION="2.5.0"
garage_bin() { printf '%s/garage-%s/bin/garage' "$PTRACK_CACHE" "$GARAGE_VERSION"; }

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

# prefault_memory — touch (and free again) the machine's free memory once, before timed steps.
# On a virtual machine the host backs a guest page only when the guest first writes it: measured
# here on a fresh VM, the first touch costs about 3.4 s per GB (9 GB in 31 s), and whichever tool
# happens to fill the page cache with new pages first pays for it (a 1.5 GB restore took 4.1 s
# instead of 1.2 s). The pages stay backed once touched, so one pass makes the tools' timings
# comparable; on a machine already warm it takes a few seconds. Leaves 1 GB untouched.
prefault_memory() {
  python3 - <<'PY'
import time
free_kb = next(int(l.split()[1]) for l in open("/proc/meminfo") if l.startswith("MemFree:"))
size = max(0, free_kb * 1024 - (1 << 30))
t = time.monotonic()
chunk = 1 << 30
held = []
for off in range(0, size, chunk):
    b = bytearray(min(chunk, size - off))
    b[::4096] = bytes(len(range(0, len(b), 4096)))
    held.append(b)
del held
print(f"prefault_memory: touched {size / (1 << 30):.1f} GB of free memory in {time.monotonic() - t:.1f} s")
PY
}

# garage_start DIR — runs a one-node Garage (scripts/setup builds it) with its data in DIR on
# free loopback ports, with bucket "ptrack-bench" and a key; exports AWS_ENDPOINT_URL,
# AWS_REGION, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY for it and sets GARAGE_PID. Stop it
# with `kill "$GARAGE_PID"`.
garage_start() {
  local dir=$1 bin; bin=$(garage_bin)
  [[ -x "$bin" ]] || die "Garage is not installed ($bin); run scripts/setup"
  local ports; ports=$(python3 -c 'import socket
ps=[]
for _ in range(3):
    s=socket.socket(); s.bind(("127.0.0.1",0)); ps.append(s)
print(" ".join(str(s.getsockname()[1]) for s in ps))')
  local rpc s3 admin; read -r rpc s3 admin <<<"$ports"
  mkdir -p "$dir"
  cat >"$dir/garage.toml" <<CONF
metadata_dir = "$dir/meta"
data_dir = "$dir/data"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:$rpc"
rpc_public_addr = "127.0.0.1:$rpc"
rpc_secret = "$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')"
[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$s3"
root_domain = ".s3.garage.localhost"
[admin]
api_bind_addr = "127.0.0.1:$admin"
CONF
  "$bin" -c "$dir/garage.toml" server >"$dir/log" 2>&1 &
  GARAGE_PID=$!
  local g=("$bin" -c "$dir/garage.toml") id="" i
  for i in $(seq 100); do id=$("${g[@]}" node id -q 2>/dev/null) && [[ $id == *@* ]] && break; sleep 0.1; done
  [[ $id == *@* ]] || die "Garage did not start (see $dir/log)"
  "${g[@]}" layout assign -z dc1 -c 10G "${id%%@*}" >/dev/null
  "${g[@]}" layout apply --version 1 >/dev/null
  for i in $(seq 50); do "${g[@]}" bucket create ptrack-bench >/dev/null 2>&1 && break; sleep 0.2; done
  local out; out=$("${g[@]}" key create ptrack-bench-key)
  "${g[@]}" bucket allow --read --write --owner ptrack-bench --key ptrack-bench-key >/dev/null
  export AWS_ENDPOINT_URL="http://127.0.0.1:$s3" AWS_REGION=garage
  AWS_ACCESS_KEY_ID=$(awk '/^Key ID:/ {print $3}' <<<"$out")
  AWS_SECRET_ACCESS_KEY=$(awk '/^Secret key:/ {print $3}' <<<"$out")
  export AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY
}
