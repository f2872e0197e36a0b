# scripts/lib.sh — sourced by every script: the repository root, cargo on PATH, the project-local
# PGRX_HOME, one way to print (`say`), fail (`die`, exit 2) and time a step (`timed`), and the
# pieces the benchmarks and the quickstart share:
#   exit actions   on_exit CMD... (run in reverse order when the script ends, however it ends)
#   waiting        wait_for SECS WHAT CMD..., retry SECS WHAT CMD... (poll with a deadline)
#   places         work_dir NAME [PARENT] (sets WORK; removed at exit unless KEEP=1),
#                  free_port, free_ports N (free loopback ports)
#   ptrack         ptrack_build (sets PTRACK), cargo_target, need_ext MAJOR
#   PostgreSQL     as_pg CMD... (AS_PG), pg_bin MAJOR, pg_cluster_init DIR MAJOR [initdb options],
#                  pg_conf DIR key=value..., pg_setting DIR KEY, pg_cluster_start DIR,
#                  pg_cluster_stop DIR [MODE], pg_env DIR, pg_wait_archived DIR
#   figures        now, secs T0 T1, ratio A B, median X..., measure OUT CMD..., prefault_memory
#   object store   garage_start DIR, garage_stop, tls_proxy_start DIR PORT, stop_pid PID NAME
#   pgBackRest     pgbr_setup DIR DATA PROCESSES REPO-OPTION..., pgbr ARGS...
# Every server a function starts is stopped at exit (on_exit), on success and on failure alike.
# shellcheck shell=bash
# shellcheck disable=SC2034  # the variables set here are read by the scripts that source it
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
# comparable; on a machine already warm it takes a few seconds. Leaves PREFAULT_LEAVE_GB (default
# 1) GB untouched: more on a machine shared with other work.
prefault_memory() {
  python3 - <<'PY'
import os, time
free_kb = next(int(l.split()[1]) for l in open("/proc/meminfo") if l.startswith("MemFree:"))
size = max(0, free_kb * 1024 - int(float(os.environ.get("PREFAULT_LEAVE_GB") or 1) * (1 << 30)))
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


# --- exit actions ------------------------------------------------------------------------------
# on_exit CMD... — runs CMD when the script exits (normally, by `die`, by `set -e`, or on INT or
# TERM), after the actions registered later (last in, first out); failures there are ignored and
# the script's exit status is kept. Every start_* / *_start below registers its own stop.
_ON_EXIT=()
on_exit() { _ON_EXIT+=("$(printf '%q ' "$@")"); }
_run_on_exit() {
  local rc=$? i
  trap - EXIT
  for ((i = ${#_ON_EXIT[@]} - 1; i >= 0; i--)); do eval "${_ON_EXIT[i]}" || true; done
  exit "$rc"
}
trap _run_on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- waiting -----------------------------------------------------------------------------------
# wait_for SECS WHAT CMD... — polls CMD (output discarded) every 0.1 s until it succeeds; dies
# naming WHAT when SECS pass first, or at once when CMD returns 125 (it knows it never will).
# Never a fixed sleep standing in for a condition.
GIVE_UP=125
wait_for() {
  local secs=$1 what=$2; shift 2
  local deadline=$((SECONDS + secs)) rc
  while :; do
    rc=0; "$@" >/dev/null 2>&1 || rc=$?
    ((rc != 0)) || return 0
    ((rc != GIVE_UP)) || die "gave up waiting for $what"
    ((SECONDS < deadline)) || die "timed out after ${secs} s waiting for $what"
    sleep 0.1
  done
}
# retry SECS WHAT CMD... — the same, printing the standard output of the run that succeeded.
retry() {
  local secs=$1 what=$2; shift 2
  local deadline=$((SECONDS + secs)) out rc
  while :; do
    rc=0; out=$("$@" 2>/dev/null) || rc=$?
    ((rc != 0)) || break
    ((rc != GIVE_UP)) || die "gave up waiting for $what"
    ((SECONDS < deadline)) || die "timed out after ${secs} s waiting for $what"
    sleep 0.1
  done
  printf '%s\n' "$out"
}
# port_open PORT — whether something accepts TCP connections on 127.0.0.1:PORT.
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# pid_alive PID — whether PID runs (an exited child is a zombie, state Z, until waited for, and
# kill -0 still succeeds on it).
pid_alive() { [[ -r /proc/$1/stat && $(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null) != Z ]]; }
# stop_pid PID NAME [SIGNAL] — SIGNAL (default TERM) to a child of this shell, up to 20 s for it
# to end, then SIGKILL. Nothing when PID is no longer this shell's child (ended and waited for).
stop_pid() {
  local pid=$1 name=$2 sig=${3:-TERM} i
  [[ -n "$pid" && -r /proc/$pid/stat && $(awk '{ print $4 }' "/proc/$pid/stat" 2>/dev/null) == "$$" ]] || return 0
  kill -s "$sig" "$pid" 2>/dev/null || true
  for ((i = 0; i < 200; i++)); do
    pid_alive "$pid" || break
    sleep 0.1
  done
  if pid_alive "$pid"; then
    say "$name ($pid) did not stop on SIG$sig within 20 s; killing it"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}

# --- places ------------------------------------------------------------------------------------
# work_dir NAME [PARENT] — sets WORK to a new private directory PARENT/ptrack-NAME.XXXXXX
# (PARENT: $TMPDIR or /tmp), owned by postgres when run as root (the servers write there);
# removed at exit, or kept and named when KEEP=1. Call it directly, not in $(...).
work_dir() {
  WORK=$(mktemp -d "${2:-${TMPDIR:-/tmp}}/ptrack-$1.XXXXXX")
  if [[ $(id -u) -eq 0 ]]; then chown postgres: "$WORK"; fi
  on_exit _work_dir_remove "$WORK"
}
_work_dir_remove() { if [[ "${KEEP:-}" == 1 ]]; then say "kept $1"; else rm -rf "$1"; fi; }
# free_ports N — N distinct loopback TCP ports free right now (the kernel's choice, so parallel
# runs do not collide), on one line; free_port — one.
free_ports() {
  python3 -c 'import socket, sys
ss = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in ss: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in ss))' "$1"
}
free_port() { free_ports 1; }

# --- ptrack ------------------------------------------------------------------------------------
# cargo_target — cargo's target directory ($CARGO_TARGET_DIR or ROOT/target).
cargo_target() { printf '%s' "${CARGO_TARGET_DIR:-$ROOT/target}"; }
# ptrack_build — builds the ptrack command (release) and sets PTRACK to it.
ptrack_build() {
  cargo build --release --quiet -p ptrack-cli --manifest-path "$ROOT/Cargo.toml"
  PTRACK="$(cargo_target)/release/ptrack"
}
# need_ext MAJOR — installs the ptrack extension into MAJOR (scripts/install-ext) unless it is.
need_ext() {
  local libdir; libdir=$("$(pg_bin "$1")/pg_config" --pkglibdir 2>/dev/null || true)
  [[ -n "$libdir" && -f "$libdir/ptrack.so" ]] || "$ROOT/scripts/install-ext" "$1"
}

# --- PostgreSQL --------------------------------------------------------------------------------
# as_pg CMD... — runs CMD as postgres when root (servers and their tools), else as the caller;
# AS_PG is the same as a command prefix, for commands given to measure.
AS_PG=()
if [[ $(id -u) -eq 0 ]]; then AS_PG=(runuser -u postgres --); fi
as_pg() { "${AS_PG[@]}" "$@"; }
# pg_bin MAJOR — the bin directory of MAJOR's install (scripts/setup links it).
pg_bin() { printf '%s/.pg/bin/%s' "$ROOT" "$1"; }
# pg_cluster_init DIR MAJOR [INITDB-OPTION...] — a new cluster in DIR (superuser postgres, trust
# auth), reachable only on a socket in DIR's parent directory, on a free port.
pg_cluster_init() {
  local dir=$1 major=$2; shift 2
  as_pg "$(pg_bin "$major")/initdb" -D "$dir" -U postgres --auth=trust "$@" >/dev/null
  pg_conf "$dir" "listen_addresses=''" "unix_socket_directories='$(dirname "$dir")'" "port=$(free_port)"
}
# pg_conf DIR KEY=VALUE... — appends settings to DIR/postgresql.conf (VALUE as PostgreSQL reads
# it: quote strings, 'like this'); the last line for a key wins.
pg_conf() {
  local dir=$1 kv; shift
  for kv in "$@"; do printf '%s = %s\n' "${kv%%=*}" "${kv#*=}" >>"$dir/postgresql.conf"; done
}
# pg_setting DIR KEY — the value pg_conf last wrote for KEY (quotes removed).
pg_setting() {
  awk -v k="$2" -F' = ' '$1 == k { v = $2 } END { gsub(/^'\''|'\''$/, "", v); print v }' "$1/postgresql.conf"
}
# pg_cluster_start DIR — starts the cluster in DIR (its major from DIR/PG_VERSION; server log in
# DIR.log) and waits until it accepts connections; it is stopped (immediate) at exit.
_PG_STARTED=" "
pg_cluster_start() {
  local dir=$1 major; major=$(<"$dir/PG_VERSION")
  if [[ $_PG_STARTED != *" $dir "* ]]; then
    _PG_STARTED+="$dir "
    on_exit pg_cluster_stop "$dir" immediate
  fi
  as_pg "$(pg_bin "$major")/pg_ctl" -D "$dir" -l "$dir.log" -w start >/dev/null
}
# pg_cluster_stop DIR [MODE] — stops the cluster in DIR if it runs (MODE: fast, the default, or
# immediate) and waits until it is down.
pg_cluster_stop() {
  local dir=$1 mode=${2:-fast}
  [[ -f "$dir/postmaster.pid" ]] || return 0
  as_pg "$(pg_bin "$(<"$dir/PG_VERSION")")/pg_ctl" -D "$dir" -m "$mode" -w stop >/dev/null
}
# pg_env DIR — exports PGHOST, PGPORT, PGUSER (postgres) and PGDATABASE (postgres) for DIR.
pg_env() {
  PGHOST=$(pg_setting "$1" unix_socket_directories) PGPORT=$(pg_setting "$1" port)
  export PGHOST PGPORT PGUSER=postgres PGDATABASE=postgres
}
# pg_wait_archived DIR [SECS] — waits until the archiver has nothing left to archive (no
# pg_wal/archive_status/*.ready), at most SECS (default 300).
_pg_archived() { ! compgen -G "$1/pg_wal/archive_status/*.ready" >/dev/null; }
pg_wait_archived() { wait_for "${2:-300}" "the archiver of $1" _pg_archived "$1"; }

# --- figures -----------------------------------------------------------------------------------
now() { date +%s.%N; }
# secs T0 T1 — T1 - T0 in seconds, two decimals.
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
# ratio A B — A / B with two decimals, n/a when B is not positive.
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
# median X... — the middle value (the mean of the two middle ones for an even count).
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
# measure OUT CMD... — syncs (nobody's dirty data is flushed on someone else's clock), runs CMD
# (standard output discarded, standard error to OUT.err) and writes "SECONDS MAX_KB SUM_KB" to
# OUT: wall seconds; MAX_KB, the peak resident set of the largest single process of CMD's tree
# (the kernel's count, as GNU time's %M); SUM_KB, the peak of the RSS summed over every process
# of the tree at once, sampled every 20 ms (shared pages count once per process). Returns CMD's
# status, and prints OUT.err when CMD fails.
measure() {
  local out=$1 rc=0; shift
  sync
  python3 - "$out" "$@" 2>"$out.err" <<'PY' || rc=$?
import os, sys, threading, time
out, cmd = sys.argv[1], sys.argv[2:]
page_kb = os.sysconf("SC_PAGE_SIZE") // 1024
def tree(pid):
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        try:
            for t in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{t}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except OSError:
            pass
    return pids
def rss_kb(p):
    try:
        with open(f"/proc/{p}/statm") as f:
            return int(f.read().split()[1]) * page_kb
    except (OSError, IndexError, ValueError):
        return 0
t0 = time.monotonic()
pid = os.fork()
if pid == 0:
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    try:
        os.execvp(cmd[0], cmd)
    finally:
        os._exit(127)
peak, done = 0, threading.Event()
def sample():
    global peak
    while not done.is_set():
        peak = max(peak, sum(rss_kb(p) for p in tree(pid)))
        done.wait(0.02)
th = threading.Thread(target=sample)
th.start()
_, status, ru = os.wait4(pid, 0)
t1 = time.monotonic()
done.set()
th.join()
with open(out, "w") as f:
    f.write(f"{t1 - t0:.2f} {ru.ru_maxrss} {max(peak, ru.ru_maxrss)}\n")
code = os.waitstatus_to_exitcode(status)
sys.exit(code if code >= 0 else 128 - code)
PY
  ((rc == 0)) || cat "$out.err" >&2
  return "$rc"
}

# --- object store ------------------------------------------------------------------------------
# garage_start DIR — runs a one-node Garage (scripts/setup builds it) with its data in DIR on
# free loopback ports, with bucket "ptrack-bench" and a key; exports AWS_ENDPOINT_URL,
# AWS_REGION, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY for it, sets GARAGE_PID and
# GARAGE_S3_PORT, and waits (bounded) until the node is up, its layout applied and the bucket
# serves. Stopped at exit (garage_stop).
GARAGE_PID=""
garage_start() {
  local dir=$1 bin; bin=$(garage_bin)
  [[ -x "$bin" ]] || die "Garage is not installed ($bin); run scripts/setup"
  local rpc s3 admin; read -r rpc s3 admin <<<"$(free_ports 3)"
  mkdir -p "$dir"
  cat >"$dir/garage.toml" <<CONF
metadata_dir = "$dir/meta"
data_dir = "$dir/data"
db_engine = "sqlite"
replication_factor = 1
# Both clients of the benchmarks send compressed data (lz4): Garage's own zstd pass over it
# would only spend the cores the clients share with it on this one machine.
compression_level = "none"
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
  chmod 600 "$dir/garage.toml"
  "$bin" -c "$dir/garage.toml" server >"$dir/log" 2>&1 &
  GARAGE_PID=$! GARAGE_S3_PORT=$s3 GARAGE_DIR=$dir
  on_exit garage_stop
  local id out
  id=$(retry 60 "Garage's node id (see $dir/log)" _garage_node_id)
  retry 60 "garage layout assign (see $dir/log)" _garage layout assign -z dc1 -c 10G "${id%%@*}" >/dev/null
  retry 60 "garage layout apply (see $dir/log)" _garage_layout_apply >/dev/null
  retry 60 "garage bucket create (see $dir/log)" _garage_bucket ptrack-bench >/dev/null
  out=$(retry 60 "garage key create" _garage key create ptrack-bench-key)
  retry 60 "garage bucket allow" _garage bucket allow --read --write --owner ptrack-bench --key ptrack-bench-key >/dev/null
  wait_for 60 "Garage's S3 endpoint on port $s3" port_open "$s3"
  export AWS_ENDPOINT_URL="http://127.0.0.1:$s3" AWS_REGION=garage
  AWS_ACCESS_KEY_ID=$(awk '/^Key ID:/ {print $3}' <<<"$out")
  AWS_SECRET_ACCESS_KEY=$(awk '/^Secret key:/ {print $3}' <<<"$out")
  [[ -n "$AWS_ACCESS_KEY_ID" && -n "$AWS_SECRET_ACCESS_KEY" ]] || die "no key in garage key create's output"
  export AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY
}
# A dead server ends the waiting at once (GIVE_UP), not at the deadline.
_garage() {
  pid_alive "$GARAGE_PID" || { printf 'Garage exited:\n%s\n' "$(tail -n 5 "$GARAGE_DIR/log")" >&2; return "$GIVE_UP"; }
  "$(garage_bin)" -c "$GARAGE_DIR/garage.toml" "$@"
}
_garage_node_id() { local id; id=$(_garage node id -q) && [[ $id == *@* ]] && printf '%s\n' "$id"; }
# An apply whose answer was lost is not applied twice: a layout at version 1 counts as done.
_garage_layout_apply() {
  local rc=0
  _garage layout apply --version 1 || rc=$?
  if ((rc == 0 || rc == GIVE_UP)); then return "$rc"; fi
  _garage layout show | grep -Eq 'layout version:? *1$'
}
_garage_bucket() { _garage bucket create "$1" || _garage bucket info "$1"; }
# garage_stop — stops the Garage garage_start ran: SIGINT, its graceful shutdown (it does not
# act on SIGTERM), bounded, then SIGKILL.
garage_stop() { stop_pid "$GARAGE_PID" Garage INT; GARAGE_PID=""; }

# tls_proxy_start DIR PORT — a TLS front (stunnel, Debian's stunnel4) on a free loopback port for
# the plain-HTTP server on 127.0.0.1:PORT, with certificates made for the run: a CA (TLS_CA, for
# clients to trust) and a server certificate for 127.0.0.1 it signed (verifiers such as rustls
# refuse a self-signed CA certificate as a server's). Sets TLS_PORT and TLS_CA, waits until it
# accepts connections; stopped at exit.
TLS_PID=""
tls_proxy_start() {
  local dir=$1 port=$2 bin
  bin=$(command -v stunnel4 || command -v stunnel) || die "stunnel is not installed (apt-get install stunnel4)"
  mkdir -p "$dir"
  (
    cd "$dir"
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=ptrack bench CA" \
      -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign \
      -keyout ca-key.pem -out ca.pem
    openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -keyout key.pem -out server.csr
    # The IP for clients that match IP addresses (rustls), the name for those that match only
    # DNS names (pgBackRest 2.45).
    printf '%s\n' basicConstraints=CA:FALSE subjectAltName=IP:127.0.0.1,DNS:127.0.0.1 \
      keyUsage=digitalSignature,keyEncipherment extendedKeyUsage=serverAuth >server.ext
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 2 \
      -extfile server.ext -out cert.pem
  ) >"$dir/openssl.log" 2>&1 || die "openssl failed (see $dir/openssl.log)"
  chmod 644 "$dir/ca.pem"
  TLS_PORT=$(free_port) TLS_CA="$dir/ca.pem"
  cat >"$dir/stunnel.conf" <<CONF
foreground = yes
pid =
debug = warning
[s3]
accept = 127.0.0.1:$TLS_PORT
connect = 127.0.0.1:$port
cert = $dir/cert.pem
key = $dir/key.pem
CONF
  "$bin" "$dir/stunnel.conf" >"$dir/stunnel.log" 2>&1 &
  TLS_PID=$!
  on_exit tls_proxy_stop
  wait_for 30 "stunnel on port $TLS_PORT (see $dir/stunnel.log)" port_open "$TLS_PORT"
}
tls_proxy_stop() { stop_pid "$TLS_PID" stunnel; TLS_PID=""; }

# --- pgBackRest --------------------------------------------------------------------------------
# pgbr_setup DIR DATA PROCESSES REPO-OPTION... — writes DIR/pgbackrest.conf (sets PGBR_CONF;
# owned by postgres, mode 0600: it may hold a key) for stanza "bench" of the cluster in DATA
# (initialised, not started: archive_mode needs a start) with the repository options given
# (repo1-path=..., or repo1-type=s3 and its settings), lz4, PROCESSES processes, fast start, and
# points the cluster's archive_command at `pgbackrest archive-push`, as pgBackRest requires.
pgbr_setup() {
  local dir=$1 data=$2 procs=$3; shift 3
  command -v pgbackrest >/dev/null || die "pgbackrest is not installed (apt-get install pgbackrest)"
  PGBR_CONF="$dir/pgbackrest.conf"
  {
    printf '[global]\n'
    printf '%s\n' "$@"
    printf '%s\n' repo1-retention-full=10 compress-type=lz4 "process-max=$procs" start-fast=y \
      log-level-console=warn log-level-file=off "lock-path=$dir/pgbr-lock"
    printf '[bench]\npg1-path=%s\npg1-socket-path=%s\npg1-port=%s\npg1-user=postgres\n' \
      "$data" "$(pg_setting "$data" unix_socket_directories)" "$(pg_setting "$data" port)"
  } >"$PGBR_CONF"
  chmod 600 "$PGBR_CONF"
  if [[ $(id -u) -eq 0 ]]; then chown postgres: "$PGBR_CONF"; fi
  pg_conf "$data" archive_mode=on "archive_command='pgbackrest --config=$PGBR_CONF --stanza=bench archive-push %p'"
}
# pgbr ARGS... — pgbackrest for stanza "bench", as postgres.
pgbr() { as_pg pgbackrest --config="$PGBR_CONF" --stanza=bench "$@"; }
