#!/usr/bin/env bash
# Benchmark the postgres agent (issue 4) against pg_dump / pg_restore and pgBackRest on a pgbench
# database (run at the end of scripts/bench.sh, or alone).
#
#   scripts/bench-postgres.sh [--pgbench-scale N] [--no-build]
#
#   --pgbench-scale N  pgbench scale factor (default $BENCH_PGBENCH_SCALE, else 70: about 1 GiB
#                      on disk, a 0.7 GiB dump); 5 makes a quick run
#   --no-build         use the release build as it is (bench.sh has just built it)
#
# Steps, on a throwaway cluster (scripts/pg-cluster.sh) with the pgbench database benchdb
# (pgbench -i, then 5000 pgbench transactions, VACUUM ANALYZE, one untimed warm-up dump):
#   dumps:    pg_dump -Fp | wc -c; pg_dump -Fc -Z0 > file; ours: backup through chebackup-agent
#             (driven by tests/protocol/agent_client.py, which also writes the snapshot, as the
#             controller would); ours: pg_dump -Fc -Z0 | chebackup repo backup --stdin
#   physical: pgBackRest full backup (archive_mode on for this step only, LZ4)
#   restores: each into a dropped benchdb, then checksummed against the source:
#             pg_restore --create from the file; ours: restore through chebackup-agent;
#             ours: chebackup repo restore --stdout | pg_restore --create
# Works in bench-work/postgres (removed at the end); appends a "PostgreSQL agent" section to
# bench-work/results.md (replacing one a previous run appended). Targets are informational: the
# script fails only when a step fails or a restored database does not match the source.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$ROOT"

SCALE=${BENCH_PGBENCH_SCALE:-70}
BUILD=1
usage() { sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; }
while [[ $# -gt 0 ]]; do
    case "$1" in
        --pgbench-scale) SCALE=${2:?--pgbench-scale needs a value}; shift 2 ;;
        --pgbench-scale=*) SCALE=${1#*=}; shift ;;
        --no-build) BUILD=0; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "bench-postgres: unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
done
[[ "$SCALE" =~ ^[1-9][0-9]*$ ]] || { echo "bench-postgres: --pgbench-scale must be a positive integer" >&2; exit 2; }

PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
export PATH="$PGBIN:$PATH"

# --- prerequisites -----------------------------------------------------------------------------
if [[ ! -x /usr/bin/time ]] || ! /usr/bin/time -f '%e %M' true >/dev/null 2>&1; then
    echo "bench-postgres: GNU time (/usr/bin/time) is missing: run scripts/install-deps.sh" >&2
    exit 1
fi
for tool in pgbench pg_dump pg_restore psql dropdb python3 runuser; do
    command -v "$tool" >/dev/null || { echo "bench-postgres: $tool is missing: run scripts/install-deps.sh" >&2; exit 1; }
done
python3 -c 'import cryptography' 2>/dev/null || { echo "bench-postgres: python3 cryptography is missing" >&2; exit 1; }
[[ $(id -u) -eq 0 ]] || { echo "bench-postgres: run as root (the cluster runs as the postgres user)" >&2; exit 1; }

W="$ROOT/bench-work"
PW="$W/postgres"
LOGS="$PW/logs"
TSV="$PW/results.tsv"
CLUSTER="$PW/cluster"
BIN="$ROOT/.build-release/release"
CLIENT="$ROOT/tests/protocol/agent_client.py"
DUMP="$PW/benchdb.dump"
OURS_REPO="$PW/repo-agent"
CLI_REPO="$PW/repo-cli"
PGBR="$PW/pgbackrest"
AGENT_PID=""

as_pg() { runuser -u postgres -- "$@"; }

stop_agent() {
    if [[ -n "$AGENT_PID" ]]; then
        kill "$AGENT_PID" 2>/dev/null || true
        for _ in $(seq 1 50); do kill -0 "$AGENT_PID" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$AGENT_PID" 2>/dev/null || true
        wait "$AGENT_PID" 2>/dev/null || true
        AGENT_PID=""
    fi
}

cleanup() {
    local rc=$?
    stop_agent
    "$ROOT/scripts/pg-cluster.sh" stop "$CLUSTER" > /dev/null 2>&1 || true
    rm -rf "$PW"
    rmdir "$W" 2>/dev/null || true
    if [[ $rc -ne 0 ]]; then echo "bench-postgres: FAILED (exit $rc)" >&2; fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say() { printf '\n==> %s\n' "$*"; }

rm -rf "$PW"
mkdir -p "$LOGS"
chmod 755 "$W" "$PW"
: > "$TSV"

free_mib() { df -Pm "$PW" | awk 'NR == 2 { print $4 }'; }
need=$((SCALE * 60 + 1024))
if (( $(free_mib) < need )); then
    echo "bench-postgres: need about $need MiB free in $PW for scale $SCALE, have $(free_mib) MiB" >&2
    exit 1
fi

export BACKUP_REPOSITORY_PASSWORD="bench-password-$$-$RANDOM"
unset BACKUP_REPOSITORY_URL || true

# --- helpers -----------------------------------------------------------------------------------
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'; }

# Busy CPU seconds of the whole machine (all CPUs) since boot, from /proc/stat: user, nice,
# system, irq, softirq, steal. A step's share tells whether the machine was saturated.
machine_cpu() { awk -v hz="$(getconf CLK_TCK)" '/^cpu / { printf "%.2f\n", ($2 + $3 + $4 + $7 + $8 + $9) / hz }' /proc/stat; }
# user, system, waited-for children's user + system seconds of a process, from /proc/PID/stat.
proc_times() { awk -v hz="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); printf "%.2f %.2f %.2f\n", $12 / hz, $13 / hz, ($14 + $15) / hz }' "/proc/$1/stat"; }
proc_hwm() { awk '/^VmHWM:/ { print $2 }' "/proc/$1/status"; }

# Row: KEY WALL_S RSS_KIB USER_S SYS_S CHILD_CPU_S MACHINE_CPU_S BYTES
# (CHILD_CPU_S: CPU of the agent's pg_dump/pg_restore/psql for agent steps, else "-").
record() { printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >> "$TSV"; }

# run_step KEY LABEL BYTES -- COMMAND...: time COMMAND with /usr/bin/time (CPU and peak RSS are
# those of COMMAND and everything it waited for: pg_dump, wc, chebackup, pg_restore).
run_step() {
    local key=$1 label=$2 bytes=$3
    shift 4
    local log="$LOGS/$key.log" timing="$LOGS/$key.time" m0 m1
    say "$label"
    echo "    \$ $*"
    m0=$(machine_cpu)
    if ! /usr/bin/time -f '%e %M %U %S' -o "$timing" "$@" > "$log" 2>&1; then
        echo "bench-postgres: step \"$label\" failed; last lines of its output:" >&2
        tail -n 30 "$log" >&2
        exit 1
    fi
    m1=$(machine_cpu)
    sync
    local secs rss user sys
    read -r secs rss user sys < <(tail -n 1 "$timing")
    record "$key" "$secs" "$rss" "$user" "$sys" - "$(awk -v a="$m0" -v b="$m1" 'BEGIN { printf "%.2f", b - a }')" "$bytes"
    awk -v s="$secs" -v r="$rss" -v u="$user" -v y="$sys" -v a="$m0" -v b="$m1" 'BEGIN {
        printf "    %.2f s, peak RSS %.1f MiB, CPU user %.2f s + sys %.2f s, machine CPU %.2f s\n", s, r / 1024, u, y, b - a }'
}

# A fresh agent per step, so that its peak RSS and CPU are that step's.
start_agent() {
    local port
    port=$(free_port)
    AGENT_ADDR="127.0.0.1:$port"
    "$BIN/chebackup-agent" --role postgres --listen "$AGENT_ADDR" --token-file "$PW/token" \
        --database benchdb --pg-bin "$PGBIN" > "$LOGS/agent-$1.log" 2>&1 &
    AGENT_PID=$!
    for _ in $(seq 1 100); do
        grep -q "listening on" "$LOGS/agent-$1.log" 2>/dev/null && return 0
        kill -0 "$AGENT_PID" 2>/dev/null || break
        sleep 0.1
    done
    echo "bench-postgres: chebackup-agent did not start; its log:" >&2
    tail -n 20 "$LOGS/agent-$1.log" >&2
    exit 1
}

# agent_step KEY LABEL BYTES CLIENT-ARGS...: one request through a fresh agent; the wall time is
# the client's, from sending the request to the final message (not the handshake). CPU and peak
# RSS are the agent's (and its children's: pg_dump, pg_dumpall, psql, pg_restore).
agent_step() {
    local key=$1 label=$2 bytes=$3
    shift 3
    say "$label"
    start_agent "$key"
    local u0 s0 c0 u1 s1 c1 m0 m1 hwm
    read -r u0 s0 c0 < <(proc_times "$AGENT_PID")
    echo "    \$ agent_client.py --address $AGENT_ADDR $*"
    m0=$(machine_cpu)
    if ! python3 "$CLIENT" --address "$AGENT_ADDR" --token-file "$PW/token" "$@" > "$LOGS/$key.json" 2> "$LOGS/$key.log"; then
        echo "bench-postgres: step \"$label\" failed:" >&2
        cat "$LOGS/$key.json" "$LOGS/$key.log" >&2
        tail -n 20 "$LOGS/agent-$key.log" >&2
        exit 1
    fi
    m1=$(machine_cpu)
    read -r u1 s1 c1 < <(proc_times "$AGENT_PID")
    hwm=$(proc_hwm "$AGENT_PID")
    stop_agent
    sync
    local secs
    secs=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["seconds"])' "$LOGS/$key.json")
    record "$key" "$secs" "$hwm" "$(awk -v a="$u0" -v b="$u1" 'BEGIN { printf "%.2f", b - a }')" \
        "$(awk -v a="$s0" -v b="$s1" 'BEGIN { printf "%.2f", b - a }')" \
        "$(awk -v a="$c0" -v b="$c1" 'BEGIN { printf "%.2f", b - a }')" \
        "$(awk -v a="$m0" -v b="$m1" 'BEGIN { printf "%.2f", b - a }')" "$bytes"
    tail -n 1 "$TSV" | awk -F'\t' '{ printf "    %.2f s, agent peak RSS %.1f MiB, agent CPU user %.2f s + sys %.2f s, its children %.2f s, machine CPU %.2f s\n", $2, $3 / 1024, $4, $5, $6, $7 }'
}

psql_q() { psql -X -q -A -t -v ON_ERROR_STOP=1 "$@"; }

# A checksum of benchdb's contents (all four pgbench tables) and its index count.
checksum() {
    psql_q -d benchdb -c "SELECT
        (SELECT count(*) || '/' || sum(abalance) || '/' || sum(hashtext(aid || ':' || bid || ':' || abalance || ':' || filler)::bigint) FROM pgbench_accounts)
        || ' ' || (SELECT count(*) || '/' || sum(bbalance) FROM pgbench_branches)
        || ' ' || (SELECT count(*) || '/' || sum(tbalance) FROM pgbench_tellers)
        || ' ' || (SELECT count(*) || '/' || coalesce(sum(delta), 0) || '/' || coalesce(sum(hashtext(tid || ':' || bid || ':' || aid || ':' || delta || ':' || mtime)::bigint), 0) FROM pgbench_history)
        || ' indexes=' || (SELECT count(*) FROM pg_indexes WHERE schemaname = 'public')"
}

VERIFY=""
VERIFY_FAILED=0
verify() {
    local name=$1 got
    got=$(checksum)
    if [[ "$got" == "$SOURCE_SUM" ]]; then
        echo "    verified: benchdb matches the source ($got)"
        VERIFY="$VERIFY $name=ok"
    else
        echo "bench-postgres: the $name restore does NOT match the source: $got, expected $SOURCE_SUM" >&2
        VERIFY="$VERIFY $name=FAILED"
        VERIFY_FAILED=1
    fi
}

drop_benchdb() { psql_q -d postgres -c "DROP DATABASE IF EXISTS benchdb WITH (FORCE)"; sync; }

# --- build -------------------------------------------------------------------------------------
if [[ $BUILD -eq 1 ]]; then
    say "build (release)"
    if ! swift build -c release --scratch-path .build-release > "$LOGS/build.log" 2>&1; then
        echo "bench-postgres: release build failed:" >&2
        tail -n 40 "$LOGS/build.log" >&2
        exit 1
    fi
    tail -n 1 "$LOGS/build.log"
fi
for b in chebackup chebackup-agent; do
    [[ -x "$BIN/$b" ]] || { echo "bench-postgres: $BIN/$b is missing: build the release first" >&2; exit 1; }
done

# --- cluster and database ----------------------------------------------------------------------
say "start a throwaway PostgreSQL cluster"
"$ROOT/scripts/pg-cluster.sh" start "$CLUSTER"
# shellcheck disable=SC1091
source "$CLUSTER/env"
PG_VERSION=$(psql_q -d postgres -c "SHOW server_version")

say "pgbench -i -s $SCALE, 5000 transactions, VACUUM ANALYZE"
createdb benchdb
/usr/bin/time -f '    %e s' pgbench -i -s "$SCALE" -q benchdb > "$LOGS/pgbench-init.log" 2>&1 || { tail -n 20 "$LOGS/pgbench-init.log" >&2; exit 1; }
tail -n 1 "$LOGS/pgbench-init.log"
pgbench -n -c 2 -j 2 -t 2500 benchdb > "$LOGS/pgbench-run.log" 2>&1 || { tail -n 20 "$LOGS/pgbench-run.log" >&2; exit 1; }
grep -E '^tps' "$LOGS/pgbench-run.log" | sed 's/^/    /' || true
psql_q -d benchdb -c "VACUUM ANALYZE" -c "CHECKPOINT"
DB_BYTES=$(psql_q -d postgres -c "SELECT pg_database_size('benchdb')")
DB_PRETTY=$(psql_q -d postgres -c "SELECT pg_size_pretty(pg_database_size('benchdb'))")
CLUSTER_BYTES=$(psql_q -d postgres -c "SELECT sum(pg_database_size(datname)) FROM pg_database")
echo "    benchdb: $DB_PRETTY ($DB_BYTES bytes)"
SOURCE_SUM=$(checksum)
echo "    checksum: $SOURCE_SUM"

say "warm-up dump (untimed)"
pg_dump -Fc -Z0 benchdb > /dev/null

# --- dumps -------------------------------------------------------------------------------------
run_step plain "pg_dump -Fp | wc -c" 0 -- bash -c 'set -o pipefail; pg_dump -Fp benchdb | wc -c'
PLAIN_BYTES=$(tail -n 1 "$LOGS/plain.log")
run_step custom "pg_dump -Fc -Z0 > file" 0 -- bash -c "pg_dump -Fc -Z0 benchdb > '$DUMP'"
CUSTOM_BYTES=$(stat -c %s "$DUMP")

say "init our repositories"
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$PW/token"
chmod 600 "$PW/token"
"$BIN/chebackup" repo init -r "local:$OURS_REPO" > "$LOGS/init-agent.log" 2>&1 || { cat "$LOGS/init-agent.log" >&2; exit 1; }
"$BIN/chebackup" repo init -r "local:$CLI_REPO" > "$LOGS/init-cli.log" 2>&1 || { cat "$LOGS/init-cli.log" >&2; exit 1; }

agent_step agent-backup "ours: backup through chebackup-agent (postgres/globals + postgres/benchdb)" "$CUSTOM_BYTES" \
    backup --repo "local:$OURS_REPO" --commit-local
AGENT_SNAPSHOT=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["snapshot"])' "$LOGS/agent-backup.json")
AGENT_STREAM_BYTES=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["bytes"])' "$LOGS/agent-backup.json")
echo "    snapshot $AGENT_SNAPSHOT (written by agent_client.py as the controller would)"
OURS_REPO_BYTES=$(du -sb "$OURS_REPO" | cut -f1)

run_step cli-backup "ours: pg_dump -Fc -Z0 | chebackup repo backup --stdin" "$CUSTOM_BYTES" -- \
    bash -c "set -o pipefail; pg_dump -Fc -Z0 benchdb | '$BIN/chebackup' repo backup -r 'local:$CLI_REPO' --stdin --stdin-name benchdb --quiet"
CLI_REPO_BYTES=$(du -sb "$CLI_REPO" | cut -f1)

# --- pgBackRest --------------------------------------------------------------------------------
PGBR_STATUS="not run"
PGBR_VERSION="-"
PGBR_INFO=""
PGBR_REPO_BYTES=0
if ! command -v pgbackrest >/dev/null; then
    PGBR_STATUS="not run: pgbackrest is not installed (scripts/install-deps.sh installs it)"
else
    PGBR_VERSION=$(pgbackrest version | awk '{ print $2 }')
    say "pgBackRest $PGBR_VERSION: stanza, archive_mode on (restart)"
    mkdir -p "$PGBR/repo" "$PGBR/log" "$PGBR/lock" "$PGBR/spool"
    cat > "$PGBR/pgbackrest.conf" <<EOF
[global]
repo1-path=$PGBR/repo
repo1-retention-full=1
log-path=$PGBR/log
lock-path=$PGBR/lock
spool-path=$PGBR/spool
compress-type=lz4
start-fast=y
log-level-console=info
log-level-file=off

[bench]
pg1-path=$CLUSTER/data
pg1-port=$PGPORT
pg1-socket-path=$CLUSTER/socket
pg1-user=postgres
EOF
    chown -R postgres: "$PGBR"
    PGBR_CMD=(pgbackrest "--config=$PGBR/pgbackrest.conf" --stanza=bench)
    # ALTER SYSTEM + a restart that reuses pg-cluster.sh's command line (postmaster.opts).
    pgbr_setup() {
        psql_q -d postgres -c "ALTER SYSTEM SET archive_mode = on" \
            -c "ALTER SYSTEM SET archive_command = '${PGBR_CMD[*]} archive-push %p'" &&
        as_pg "$PGBIN/pg_ctl" -D "$CLUSTER/data" -l "$CLUSTER/data/server.log" -m fast -w -t 60 restart > "$LOGS/pgbackrest-restart.log" 2>&1 &&
        (cd "$PGBR" && as_pg "${PGBR_CMD[@]}" stanza-create && as_pg "${PGBR_CMD[@]}" check) > "$LOGS/pgbackrest-setup.log" 2>&1
    }
    if pgbr_setup; then
        say "pgBackRest full backup"
        m0=$(machine_cpu)
        if (cd "$PGBR" && /usr/bin/time -f '%e %M %U %S' -o "$LOGS/pgbackrest.time" \
                runuser -u postgres -- "${PGBR_CMD[@]}" --type=full backup) > "$LOGS/pgbackrest.log" 2>&1; then
            m1=$(machine_cpu)
            sync
            read -r secs rss user sys < <(tail -n 1 "$LOGS/pgbackrest.time")
            record pgbackrest "$secs" "$rss" "$user" "$sys" - "$(awk -v a="$m0" -v b="$m1" 'BEGIN { printf "%.2f", b - a }')" "$CLUSTER_BYTES"
            PGBR_INFO=$(grep -o 'full backup size = [^,]*, file total = [0-9]*' "$LOGS/pgbackrest.log" | tail -n 1 || true)
            PGBR_REPO_BYTES=$(du -sb "$PGBR/repo" | cut -f1)
            PGBR_STATUS=done
            echo "    $secs s, peak RSS $((rss / 1024)) MiB, CPU user $user s + sys $sys s; $PGBR_INFO"
        else
            PGBR_STATUS="failed: $(grep -E 'ERROR|error' "$LOGS/pgbackrest.log" | tail -n 1)"
        fi
    else
        PGBR_STATUS="not run: setup failed: $(grep -hE 'ERROR|FATAL|error' "$LOGS"/pgbackrest-*.log 2>/dev/null | tail -n 1)"
    fi
    echo "    pgBackRest: $PGBR_STATUS"
    # Back to pg-cluster.sh's settings (no archiving) for the restores.
    psql_q -d postgres -c "ALTER SYSTEM RESET archive_mode" -c "ALTER SYSTEM RESET archive_command"
    as_pg "$PGBIN/pg_ctl" -D "$CLUSTER/data" -l "$CLUSTER/data/server.log" -m fast -w -t 60 restart >> "$LOGS/pgbackrest-restart.log" 2>&1
    rm -rf "$PGBR/repo"
fi

# --- restores ----------------------------------------------------------------------------------
# Each restore goes into a dropped benchdb (dropped untimed, also before the agent's restore,
# whose DROP DATABASE IF EXISTS is then a no-op), then the database is checksummed.
drop_benchdb
run_step restore-file "pg_restore --create from the file" "$CUSTOM_BYTES" -- \
    pg_restore --create --exit-on-error -d postgres "$DUMP"
verify pg_restore

drop_benchdb
agent_step agent-restore "ours: restore through chebackup-agent (snapshot ${AGENT_SNAPSHOT:0:8})" "$CUSTOM_BYTES" \
    restore --repo "local:$OURS_REPO" --snapshot "$AGENT_SNAPSHOT"
verify agent

drop_benchdb
run_step cli-restore "ours: chebackup repo restore --stdout | pg_restore --create" "$CUSTOM_BYTES" -- \
    bash -c "set -o pipefail; '$BIN/chebackup' repo restore latest -r 'local:$CLI_REPO' --stdout --part benchdb --quiet | pg_restore --create --exit-on-error -d postgres"
verify cli

# --- report ------------------------------------------------------------------------------------
say "results"
MEM_KIB=$(awk '/^MemTotal:/ { print $2 }' /proc/meminfo)
CPU_MODEL=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
COMMIT="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [[ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]]; then COMMIT="$COMMIT (with local changes)"; fi

DATE="$(date -u '+%Y-%m-%d %H:%M UTC')" NPROC="$(nproc)" MEM_KIB="$MEM_KIB" CPU_MODEL="${CPU_MODEL:-unknown}" \
COMMIT="$COMMIT" SCALE="$SCALE" PG_VERSION="$PG_VERSION" DB_BYTES="$DB_BYTES" CLUSTER_BYTES="$CLUSTER_BYTES" \
PLAIN_BYTES="$PLAIN_BYTES" CUSTOM_BYTES="$CUSTOM_BYTES" AGENT_STREAM_BYTES="$AGENT_STREAM_BYTES" \
OURS_REPO_BYTES="$OURS_REPO_BYTES" CLI_REPO_BYTES="$CLI_REPO_BYTES" PGBR_STATUS="$PGBR_STATUS" \
PGBR_VERSION="$PGBR_VERSION" PGBR_INFO="$PGBR_INFO" PGBR_REPO_BYTES="$PGBR_REPO_BYTES" \
VERIFY="$VERIFY" SOURCE_SUM="$SOURCE_SUM" \
python3 - "$TSV" "$PW/section.md" <<'PY'
import os, sys

tsv, out = sys.argv[1], sys.argv[2]
env = os.environ
MIB = 1048576
rows = {}
for line in open(tsv):
    key, secs, rss, user, system, child, machine, nbytes = line.rstrip("\n").split("\t")
    rows[key] = dict(s=float(secs), rss=int(rss), user=float(user), sys=float(system),
                     child=None if child == "-" else float(child), machine=float(machine), bytes=int(nbytes))
custom = int(env["CUSTOM_BYTES"])
def mib(b): return f"{int(b) / MIB:,.1f} MiB"

steps = [
    ("plain", "dump", "`pg_dump -Fp benchdb \\| wc -c`", "baseline (issue 4)"),
    ("custom", "dump", "`pg_dump -Fc -Z0 benchdb > file`", "baseline: the agent's dump format"),
    ("agent-backup", "dump", "ours: backup through `chebackup-agent` ¹", "pg_dumpall --globals-only + pg_dump -Fc -Z0 → chunk, LZ4, AES → local repository"),
    ("cli-backup", "dump", "ours: `pg_dump -Fc -Z0 \\| chebackup repo backup --stdin` ²", "same pipeline without the agent"),
    ("pgbackrest", "physical", "pgBackRest full backup ³", "whole cluster, files, LZ4"),
    ("restore-file", "restore", "`pg_restore --create -d postgres file`", "baseline (from the local file)"),
    ("agent-restore", "restore", "ours: restore through `chebackup-agent` ¹", "repository → pipe → pg_restore --create (+ globals via psql)"),
    ("cli-restore", "restore", "ours: `chebackup repo restore --stdout \\| pg_restore --create` ²", "same without the agent"),
]
header = ["step", "what it measures", "wall s", "MiB/s ⁴", "peak RSS MiB ⁵", "user s", "sys s", "children CPU s ⁶", "machine CPU s ⁷"]
table = []
for key, _, label, what in steps:
    r = rows.get(key)
    if not r:
        table.append([label, what + (f" — {env['PGBR_STATUS']}" if key == "pgbackrest" else ""), "—", "—", "—", "—", "—", "—", "—"])
        continue
    rate = (custom if key != "pgbackrest" else r["bytes"]) / MIB / max(r["s"], 0.01)
    table.append([label, what, f"{r['s']:.2f}", f"{rate:.1f}", f"{r['rss'] / 1024:.1f}", f"{r['user']:.2f}", f"{r['sys']:.2f}",
                  "—" if r["child"] is None else f"{r['child']:.2f}", f"{r['machine']:.2f}"])

def ratio(a, b):
    ra, rb = rows.get(a), rows.get(b)
    return None if not (ra and rb) else ra["s"] / max(rb["s"], 0.01)
targets = []
def target(name, value, limit, note=""):
    if value is None:
        targets.append([name, "—", "not measured" + note])
    else:
        targets.append([name, "—" if limit is None else ("PASS" if value <= limit else "FAIL"), f"{value:.2f}x{note}"])
target("agent backup / `pg_dump -Fp | wc -c` <= 1.15x (issue 4)", ratio("agent-backup", "plain"), 1.15)
target("agent restore / `pg_restore` from file <= 1.10x (issue 4)", ratio("agent-restore", "restore-file"), 1.10)
target("agent backup / `pg_dump -Fc -Z0 > file`", ratio("agent-backup", "custom"), None, " (informational)")
target("agent backup / pgBackRest full backup", ratio("agent-backup", "pgbackrest"), None,
       " (informational: logical vs physical)" if "pgbackrest" in rows else f" — pgBackRest {env['PGBR_STATUS']}")
target("CLI backup / `pg_dump -Fp | wc -c`", ratio("cli-backup", "plain"), None, " (informational)")
target("CLI restore / `pg_restore` from file", ratio("cli-restore", "restore-file"), None, " (informational)")

verify = dict(item.split("=", 1) for item in env["VERIFY"].split())
mem_gib = int(env["MEM_KIB"]) / 1048576
facts = [
    ("date", env["DATE"]),
    ("machine", f"{env['NPROC']} CPUs ({env['CPU_MODEL']}), {mem_gib:.1f} GiB memory"),
    ("chebackup", f"commit {env['COMMIT']}"),
    ("PostgreSQL", f"{env['PG_VERSION']} (scripts/pg-cluster.sh: fsync off, loopback TCP)"),
    ("database", f"pgbench scale {env['SCALE']}, then 5000 transactions: benchdb {mib(env['DB_BYTES'])} on disk "
                 f"(cluster {mib(env['CLUSTER_BYTES'])}); plain dump {mib(env['PLAIN_BYTES'])}, "
                 f"custom dump (-Fc -Z0) {mib(env['CUSTOM_BYTES'])}"),
    ("stored", f"ours via the agent {mib(env['OURS_REPO_BYTES'])} (repository, du -sb; streams {mib(env['AGENT_STREAM_BYTES'])}), "
               f"ours via the CLI {mib(env['CLI_REPO_BYTES'])}"
               + (f", pgBackRest {env['PGBR_VERSION']} {mib(env['PGBR_REPO_BYTES'])} ({env['PGBR_INFO']})" if env["PGBR_STATUS"] == "done" else "")),
    ("pgBackRest", f"{env['PGBR_VERSION']}: {env['PGBR_STATUS']}"),
    ("restores verified (row counts, sums and hashes of all four tables, index count)",
     ", ".join(f"{k} {v}" for k, v in verify.items())),
]
notes = [
    "¹ `chebackup-agent --role postgres --database benchdb` (release build), a fresh process per step, driven by "
    "`tests/protocol/agent_client.py` (backup, then restore of the snapshot). Wall time: from sending the request to the "
    "`result` (handshake excluded). The snapshot is written by agent_client.py (`--commit-local`), standing in for the "
    "controller, which cannot drive agents yet; the backup stores two parts (`postgres/globals`, `postgres/benchdb`), "
    "the restore runs psql for the globals, then `pg_restore --create --exit-on-error` fed from the repository.",
    "² the same pipeline without the agent, into a second fresh repository.",
    "³ `pgbackrest --type=full backup` as the postgres user, process-max 1 (its default), compress-type lz4, start-fast, "
    "archive_mode on (archive-push) for this step only. Physical: it copies the whole cluster's files, indexes included.",
    "⁴ custom dump size / wall time (pgBackRest: cluster size / wall time).",
    "⁵ peak RSS: for the agent steps the agent's (VmHWM); otherwise the largest process of the command (`/usr/bin/time`).",
    "⁶ agent steps: CPU of the processes the agent ran and waited for (pg_dump, pg_dumpall, psql, pg_restore); "
    "user s and sys s are then the agent's own. Other steps: user s and sys s include every process of the command.",
    "⁷ busy CPU seconds of the whole machine during the step (/proc/stat; the PostgreSQL server's work shows only here; "
    f"{env['NPROC']} CPUs × wall s is the most there is).",
]

def text_table(head, body, left=(0, 1)):
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
    line = lambda cells: "  ".join(str(c).ljust(w) if i in left else str(c).rjust(w)
                                   for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
    return "\n".join([line(head), "  ".join("-" * w for w in widths)] + [line(b) for b in body])

def md_table(head, body, left=(0, 1)):
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" if i in left else "---:" for i in range(len(head))) + "|"]
    out += ["| " + " | ".join(str(c) for c in b) + " |" for b in body]
    return "\n".join(out)

print()
for k, v in facts:
    print(f"{k}: {v}")
print()
print(text_table([h.rstrip(" ⁴⁵⁶⁷") for h in header], [[c.replace("\\|", "|").replace("`", "") for c in row] for row in table]))
print()
print(text_table(["target", "result", "measured"], [[c.replace("`", "") for c in t] for t in targets], left=(0, 1, 2)))

with open(out, "w") as f:
    f.write("## PostgreSQL agent\n\n")
    f.write("\n".join(f"- **{k}**: {v}" for k, v in facts) + "\n\n")
    f.write(md_table(header, table) + "\n\n")
    f.write("<br>\n".join(notes) + "\n\n")
    f.write(md_table(["target", "result", "measured"], targets, left=(0, 1, 2)) + "\n\n")
    f.write("Targets are informational.\n")
PY

# Append the section to bench-work/results.md, replacing one a previous run appended.
RESULTS="$W/results.md"
if [[ -f "$RESULTS" ]]; then
    python3 - "$RESULTS" <<'PY'
import sys
path = sys.argv[1]
text = open(path).read()
cut = text.find("## PostgreSQL agent\n")
if cut >= 0:
    open(path, "w").write(text[:cut].rstrip("\n") + "\n")
PY
    printf '\n' >> "$RESULTS"
fi
cat "$PW/section.md" >> "$RESULTS"
echo
echo "results appended to bench-work/results.md"
if [[ $VERIFY_FAILED -ne 0 ]]; then
    echo "bench-postgres: a restored database did not match the source" >&2
    exit 1
fi
