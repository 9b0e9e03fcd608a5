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
#   dumps:    pg_dump -Fp | wc -c; pg_dump -Fc -Z0 > file; ours: one backup request to
#             chebackup-agent (driven by tests/protocol/agent_client.py); ours: chebackup
#             server:backup (controller + agent, end to end); ours: pg_dump -Fc -Z0 | chebackup
#             repo backup --stdin (no agent); each of ours into its own fresh local repository
#   physical: pgBackRest full backup (archive_mode on for this step only, LZ4)
#   restores: each into a dropped benchdb, then checksummed against the source:
#             pg_restore --create from the file; ours: one restore request to chebackup-agent
#             (agent_client.py, of the server:backup snapshot); ours: chebackup server:restore;
#             ours: chebackup repo restore --stdout | pg_restore --create (no agent)
# A fresh agent serves each agent step, so its CPU time and peak RSS are that step's.
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
for tool in pgbench pg_dump pg_restore psql createdb python3 runuser; do
    command -v "$tool" >/dev/null || { echo "bench-postgres: $tool is missing: run scripts/install-deps.sh" >&2; exit 1; }
done
python3 -c 'import cryptography' 2>/dev/null || { echo "bench-postgres: python3 cryptography is missing: run scripts/install-deps.sh" >&2; exit 1; }
[[ $(id -u) -eq 0 ]] || { echo "bench-postgres: run as root (the cluster runs as the postgres user)" >&2; exit 1; }

W="$ROOT/bench-work"
PW="$W/postgres"
LOGS="$PW/logs"
TSV="$PW/results.tsv"
CLUSTER="$PW/cluster"
BIN="$ROOT/.build-release/release"
CLIENT="$ROOT/tests/protocol/agent_client.py"
DUMP="$PW/benchdb.dump"
AGENT_REPO="$PW/repo-agent"     # agent_client.py's backup request (parts stored, no snapshot)
SERVER_REPO="$PW/repo-server"   # chebackup server:backup
CLI_REPO="$PW/repo-cli"         # chebackup repo backup --stdin
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

# shellcheck source=scripts/bench-lib.sh
source "$ROOT/scripts/bench-lib.sh"

rm -rf "$PW"
mkdir -p "$LOGS" "$PW/objects" "$PW/state"
chmod 755 "$W" "$PW"
: > "$TSV"
echo "placeholder for the installation's objects (server:backup backs this directory up as che/objects)" > "$PW/objects/README"

need=$((SCALE * 70 + 1024))
if (( $(free_mib "$PW") < need )); then
    echo "bench-postgres: need about $need MiB free in $PW for scale $SCALE, have $(free_mib "$PW") MiB" >&2
    exit 1
fi

export BACKUP_REPOSITORY_PASSWORD="bench-password-$$-$RANDOM"
export CHEBACKUP_CONFIG="$PW/chebackup.yaml"
unset BACKUP_REPOSITORY_URL || true

# --- helpers -----------------------------------------------------------------------------------

# Busy CPU seconds of the whole machine (all CPUs) since boot, from /proc/stat: user, nice,
# system, irq, softirq, steal. A step's share tells whether the machine was saturated.
machine_cpu() { awk -v hz="$(getconf CLK_TCK)" '/^cpu / { printf "%.2f\n", ($2 + $3 + $4 + $7 + $8 + $9) / hz }' /proc/stat; }
# user, system, and waited-for children's user + system seconds of a process (/proc/PID/stat).
proc_times() { awk -v hz="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); printf "%.2f %.2f %.2f\n", $12 / hz, $13 / hz, ($14 + $15) / hz }' "/proc/$1/stat"; }
# CPU seconds of our PostgreSQL server: the postmaster (with the children it reaped) and its
# running children (backends, checkpointer, archiver...).
pg_cpu() {
    local pm
    pm=$(head -n 1 "$CLUSTER/data/postmaster.pid")
    { cat /proc/[0-9]*/stat 2>/dev/null || true; } | awk -v hz="$(getconf CLK_TCK)" -v pm="$pm" '{
        pid = $1; sub(/^.*\) /, ""); if (pid == pm || $2 == pm) s += $12 + $13 + $14 + $15 } END { printf "%.2f\n", s / hz }'
}
delta() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
sum() { awk 'BEGIN { s = 0; for (i = 1; i < ARGC; i++) s += ARGV[i]; printf "%.2f", s }' "$@"; }

# Row: KEY WALL_S RSS_KIB CMD_RSS_KIB USER_S SYS_S TOOLS_CPU_S CMD_CPU_S PG_CPU_S MACHINE_CPU_S
# Agent steps: RSS, user, sys are the agent's, TOOLS_CPU its pg_dump/pg_dumpall/psql/pg_restore's,
# CMD_RSS and CMD_CPU the client's or controller's (CMD_RSS for server:* steps only). Other steps:
# RSS, user, sys of the command and everything it waited for; the rest "-". PG_CPU: our
# PostgreSQL server's; MACHINE_CPU: busy CPU of the whole machine.
record() { printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >> "$TSV"; }

# run_step KEY LABEL -- COMMAND...: time COMMAND with /usr/bin/time.
run_step() {
    local key=$1 label=$2
    shift 3
    local log="$LOGS/$key.log" timing="$LOGS/$key.time" m0 m1 p0 p1
    say "$label"
    echo "    \$ $*"
    m0=$(machine_cpu)
    p0=$(pg_cpu)
    if ! /usr/bin/time -f '%e %M %U %S' -o "$timing" "$@" > "$log" 2>&1; then
        echo "bench-postgres: step \"$label\" failed; last lines of its output:" >&2
        tail -n 30 "$log" >&2
        exit 1
    fi
    p1=$(pg_cpu)
    m1=$(machine_cpu)
    sync
    local secs rss user sys
    read -r secs rss user sys < <(tail -n 1 "$timing")
    record "$key" "$secs" "$rss" - "$user" "$sys" - - "$(delta "$p0" "$p1")" "$(delta "$m0" "$m1")"
    echo "    $secs s, peak RSS $((rss / 1024)) MiB, CPU user $user s + sys $sys s, PostgreSQL CPU $(delta "$p0" "$p1") s," \
         "machine CPU $(delta "$m0" "$m1") s"
}

# A fresh agent per step, so that its peak RSS and CPU are that step's. Sets AGENT_ADDR and
# writes the installation configuration naming it (for chebackup server:*).
start_agent() {
    local port
    port=$(free_port)
    AGENT_ADDR="127.0.0.1:$port"
    "$BIN/chebackup-agent" --role postgres --listen "$AGENT_ADDR" --token-file "$PW/token" \
        --database benchdb --pg-bin "$PGBIN" > "$LOGS/agent-$1.log" 2>&1 &
    AGENT_PID=$!
    printf '%s\n' "id: bench" "objectsDir: $PW/objects" "tokenFile: $PW/token" "stateDir: $PW/state" \
        "agents:" "  - {role: postgres, address: \"$AGENT_ADDR\"}" > "$CHEBACKUP_CONFIG"
    for _ in $(seq 1 100); do
        grep -q "listening on" "$LOGS/agent-$1.log" 2>/dev/null && return 0
        kill -0 "$AGENT_PID" 2>/dev/null || break
        sleep 0.1
    done
    echo "bench-postgres: chebackup-agent did not start; its log:" >&2
    tail -n 20 "$LOGS/agent-$1.log" >&2
    exit 1
}

# agent_step KEY LABEL WALL -- COMMAND...: COMMAND talks to a fresh agent (the word @AGENT@ in it
# becomes the agent's address). WALL=client: the wall time is agent_client.py's, from sending the
# request to the final message (handshake excluded); WALL=command: the whole command's.
agent_step() {
    local key=$1 label=$2 wall=$3
    shift 4
    local log="$LOGS/$key.log" timing="$LOGS/$key.time"
    say "$label"
    start_agent "$key"
    local args=("${@//@AGENT@/$AGENT_ADDR}")
    echo "    \$ ${args[*]}"
    local u0 s0 c0 u1 s1 c1 m0 m1 p0 p1 hwm
    read -r u0 s0 c0 < <(proc_times "$AGENT_PID")
    m0=$(machine_cpu)
    p0=$(pg_cpu)
    if ! /usr/bin/time -f '%e %M %U %S' -o "$timing" "${args[@]}" > "$log" 2>&1; then
        echo "bench-postgres: step \"$label\" failed; last lines of its output and of the agent's log:" >&2
        tail -n 30 "$log" >&2
        tail -n 20 "$LOGS/agent-$key.log" >&2
        exit 1
    fi
    p1=$(pg_cpu)
    m1=$(machine_cpu)
    read -r u1 s1 c1 < <(proc_times "$AGENT_PID")
    hwm=$(proc_hwm "$AGENT_PID")
    stop_agent
    sync
    local secs cmd_rss cmd_user cmd_sys
    read -r secs cmd_rss cmd_user cmd_sys < <(tail -n 1 "$timing")
    if [[ $wall == client ]]; then
        secs=$(grep '^{' "$log" | tail -n 1 | python3 -c 'import json, sys; print(json.load(sys.stdin)["seconds"])')
        cmd_rss=-
    fi
    record "$key" "$secs" "$hwm" "$cmd_rss" "$(delta "$u0" "$u1")" "$(delta "$s0" "$s1")" "$(delta "$c0" "$c1")" \
        "$(sum "$cmd_user" "$cmd_sys")" "$(delta "$p0" "$p1")" "$(delta "$m0" "$m1")"
    local extra=""
    [[ $cmd_rss == - ]] || extra=", controller peak RSS $((cmd_rss / 1024)) MiB"
    echo "    $secs s, agent peak RSS $((hwm / 1024)) MiB, agent CPU user $(delta "$u0" "$u1") s + sys $(delta "$s0" "$s1") s," \
         "its tools $(delta "$c0" "$c1") s, client/controller $(sum "$cmd_user" "$cmd_sys") s, PostgreSQL $(delta "$p0" "$p1") s," \
         "machine $(delta "$m0" "$m1") s$extra"
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
        echo "    verified: benchdb matches the source"
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
"$BIN/chebackup" --help 2>/dev/null | grep -q 'server:backup' ||
    { echo "bench-postgres: $BIN/chebackup has no server:backup command: rebuild the release" >&2; exit 1; }

# --- cluster and database ----------------------------------------------------------------------
say "start a throwaway PostgreSQL cluster"
"$ROOT/scripts/pg-cluster.sh" start "$CLUSTER"
# shellcheck disable=SC1091
source "$CLUSTER/env"
PG_VERSION=$(psql_q -d postgres -c "SHOW server_version")

say "pgbench -i -s $SCALE, 5000 transactions, VACUUM ANALYZE"
createdb benchdb
pgbench -i -s "$SCALE" -q benchdb > "$LOGS/pgbench-init.log" 2>&1 || { tail -n 20 "$LOGS/pgbench-init.log" >&2; exit 1; }
tail -n 1 "$LOGS/pgbench-init.log" | sed 's/^/    /'
pgbench -n -c 2 -j 2 -t 2500 benchdb > "$LOGS/pgbench-run.log" 2>&1 || { tail -n 20 "$LOGS/pgbench-run.log" >&2; exit 1; }
grep -E '^tps' "$LOGS/pgbench-run.log" | sed 's/^/    /' || true
psql_q -d benchdb -c "VACUUM ANALYZE" -c "CHECKPOINT"
DB_BYTES=$(psql_q -d postgres -c "SELECT pg_database_size('benchdb')")
CLUSTER_BYTES=$(psql_q -d postgres -c "SELECT sum(pg_database_size(datname)) FROM pg_database")
echo "    benchdb: $(psql_q -d postgres -c "SELECT pg_size_pretty(pg_database_size('benchdb'))") ($DB_BYTES bytes)"
SOURCE_SUM=$(checksum)
echo "    checksum: $SOURCE_SUM"

say "warm-up dump (untimed)"
pg_dump -Fc -Z0 benchdb > /dev/null

# --- dumps -------------------------------------------------------------------------------------
run_step plain "pg_dump -Fp | wc -c" -- bash -c 'set -o pipefail; pg_dump -Fp benchdb | wc -c'
PLAIN_BYTES=$(tail -n 1 "$LOGS/plain.log")
run_step custom "pg_dump -Fc -Z0 > file" -- bash -c "pg_dump -Fc -Z0 benchdb > '$DUMP'"
CUSTOM_BYTES=$(stat -c %s "$DUMP")

say "init our repositories"
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$PW/token"
chmod 600 "$PW/token"
for repo in "$AGENT_REPO" "$SERVER_REPO" "$CLI_REPO"; do
    "$BIN/chebackup" repo init -r "local:$repo" > "$LOGS/init.log" 2>&1 || { cat "$LOGS/init.log" >&2; exit 1; }
done

agent_step agent-backup "ours: one backup request to chebackup-agent (agent_client.py)" client -- \
    python3 "$CLIENT" --address @AGENT@ --token-file "$PW/token" backup --repo "local:$AGENT_REPO"
AGENT_STREAM_BYTES=$(grep '^{' "$LOGS/agent-backup.log" | tail -n 1 | python3 -c 'import json, sys; print(json.load(sys.stdin)["bytes"])')
AGENT_REPO_BYTES=$(du -sb "$AGENT_REPO" | cut -f1)

agent_step server-backup "ours: chebackup server:backup (controller + agent)" command -- \
    "$BIN/chebackup" server:backup --batch -r "local:$SERVER_REPO"
SNAPSHOT=$("$BIN/chebackup" repo snapshots -r "local:$SERVER_REPO" --json |
    python3 -c 'import json, sys; rows = json.load(sys.stdin); print(rows[-1]["id"])')
[[ "$SNAPSHOT" =~ ^[0-9a-f]{64}$ ]] || { echo "bench-postgres: no snapshot id from server:backup: $SNAPSHOT" >&2; exit 1; }
echo "    snapshot $SNAPSHOT"
SERVER_REPO_BYTES=$(du -sb "$SERVER_REPO" | cut -f1)

run_step cli-backup "ours: pg_dump -Fc -Z0 | chebackup repo backup --stdin (no agent)" -- \
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
    printf '%s\n' "[global]" "repo1-path=$PGBR/repo" "repo1-retention-full=1" "log-path=$PGBR/log" \
        "lock-path=$PGBR/lock" "spool-path=$PGBR/spool" "compress-type=lz4" "start-fast=y" \
        "log-level-console=info" "log-level-file=off" "" "[bench]" "pg1-path=$CLUSTER/data" \
        "pg1-port=$PGPORT" "pg1-socket-path=$CLUSTER/socket" "pg1-user=postgres" > "$PGBR/pgbackrest.conf"
    chown -R postgres: "$PGBR"
    PGBR_CMD=(pgbackrest "--config=$PGBR/pgbackrest.conf" --stanza=bench)
    pg_restart() { as_pg "$PGBIN/pg_ctl" -D "$CLUSTER/data" -l "$CLUSTER/data/server.log" -m fast -w -t 60 restart; }
    # ALTER SYSTEM, then a restart that reuses pg-cluster.sh's command line (postmaster.opts).
    if psql_q -d postgres -c "ALTER SYSTEM SET archive_mode = on" \
            -c "ALTER SYSTEM SET archive_command = '${PGBR_CMD[*]} archive-push %p'" > "$LOGS/pgbackrest-setup.log" 2>&1 &&
        pg_restart >> "$LOGS/pgbackrest-setup.log" 2>&1 &&
        (cd "$PGBR" && as_pg "${PGBR_CMD[@]}" stanza-create && as_pg "${PGBR_CMD[@]}" check) >> "$LOGS/pgbackrest-setup.log" 2>&1; then
        say "pgBackRest full backup"
        echo "    \$ ${PGBR_CMD[*]} --type=full backup   (as postgres)"
        m0=$(machine_cpu)
        p0=$(pg_cpu)
        if (cd "$PGBR" && /usr/bin/time -f '%e %M %U %S' -o "$LOGS/pgbackrest.time" \
                runuser -u postgres -- "${PGBR_CMD[@]}" --type=full backup) > "$LOGS/pgbackrest.log" 2>&1; then
            p1=$(pg_cpu)
            m1=$(machine_cpu)
            sync
            read -r secs rss user sys < <(tail -n 1 "$LOGS/pgbackrest.time")
            record pgbackrest "$secs" "$rss" - "$user" "$sys" - - "$(delta "$p0" "$p1")" "$(delta "$m0" "$m1")"
            PGBR_INFO=$(grep -o 'full backup size = [^,]*, file total = [0-9]*' "$LOGS/pgbackrest.log" | tail -n 1 || true)
            PGBR_REPO_BYTES=$(du -sb "$PGBR/repo/backup" | cut -f1)
            PGBR_STATUS=done
            echo "    $secs s, peak RSS $((rss / 1024)) MiB, CPU user $user s + sys $sys s, PostgreSQL CPU $(delta "$p0" "$p1") s," \
                 "machine CPU $(delta "$m0" "$m1") s; $PGBR_INFO"
        else
            PGBR_STATUS="failed: $(grep -E 'ERROR' "$LOGS/pgbackrest.log" | tail -n 1)"
        fi
    else
        PGBR_STATUS="not run: setup failed: $(grep -hE 'ERROR|FATAL|error' "$LOGS/pgbackrest-setup.log" | tail -n 1)"
    fi
    echo "    pgBackRest: $PGBR_STATUS"
    # Back to pg-cluster.sh's settings (no archiving) for the restores.
    psql_q -d postgres -c "ALTER SYSTEM RESET archive_mode" -c "ALTER SYSTEM RESET archive_command"
    pg_restart >> "$LOGS/pgbackrest-setup.log" 2>&1 || { tail -n 20 "$LOGS/pgbackrest-setup.log" >&2; exit 1; }
    rm -rf "$PGBR/repo"
fi

# --- restores ----------------------------------------------------------------------------------
# Each restore goes into a dropped benchdb (dropped untimed, also before our restores, whose
# DROP DATABASE IF EXISTS is then a no-op); then the database is checksummed.
drop_benchdb
run_step restore-file "pg_restore --create from the file" -- \
    pg_restore --create --exit-on-error -d postgres "$DUMP"
verify pg_restore

drop_benchdb
agent_step agent-restore "ours: one restore request to chebackup-agent (agent_client.py)" client -- \
    python3 "$CLIENT" --address @AGENT@ --token-file "$PW/token" restore --repo "local:$SERVER_REPO" --snapshot "$SNAPSHOT"
verify agent

drop_benchdb
agent_step server-restore "ours: chebackup server:restore (controller + agent)" command -- \
    "$BIN/chebackup" server:restore --batch -s "$SNAPSHOT" -r "local:$SERVER_REPO"
verify server:restore

drop_benchdb
run_step cli-restore "ours: chebackup repo restore --stdout | pg_restore --create (no agent)" -- \
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
AGENT_REPO_BYTES="$AGENT_REPO_BYTES" SERVER_REPO_BYTES="$SERVER_REPO_BYTES" CLI_REPO_BYTES="$CLI_REPO_BYTES" \
PGBR_STATUS="$PGBR_STATUS" PGBR_VERSION="$PGBR_VERSION" PGBR_INFO="$PGBR_INFO" PGBR_REPO_BYTES="$PGBR_REPO_BYTES" \
VERIFY="$VERIFY" \
python3 - "$TSV" "$PW/section.md" <<'PY'
import os, re, sys

tsv, out = sys.argv[1], sys.argv[2]
env = os.environ
MIB = 1048576
rows = {}
opt = lambda v, kind=float: None if v == "-" else kind(v)
for line in open(tsv):
    key, secs, rss, cmd_rss, user, system, tools, cmd_cpu, pg, machine = line.rstrip("\n").split("\t")
    rows[key] = dict(s=float(secs), rss=int(rss), cmd_rss=opt(cmd_rss, int), user=float(user), sys=float(system),
                     tools=opt(tools), cmd_cpu=opt(cmd_cpu), pg=float(pg), machine=float(machine))
    r = rows[key]
    r["other"] = r["machine"] - r["user"] - r["sys"] - (r["tools"] or 0) - (r["cmd_cpu"] or 0) - r["pg"]
custom = int(env["CUSTOM_BYTES"])
def mib(b): return f"{int(b) / MIB:,.1f} MiB"

steps = [
    ("plain", "`pg_dump -Fp benchdb \\| wc -c`", "baseline (issue 4)"),
    ("custom", "`pg_dump -Fc -Z0 benchdb > file`", "baseline in the agent's dump format"),
    ("agent-backup", "ours: backup request to the agent ¹", "agent: pg_dumpall --globals-only, pg_dump -Fc -Z0 → chunk, LZ4, AES → repository"),
    ("server-backup", "ours: `chebackup server:backup` ²", "the same through the controller, which then writes the snapshot"),
    ("cli-backup", "ours: `pg_dump -Fc -Z0 \\| chebackup repo backup --stdin` ³", "the same pipeline without agent or protocol"),
    ("pgbackrest", "pgBackRest full backup ⁴", "physical: the whole cluster's files, LZ4"),
    ("restore-file", "`pg_restore --create -d postgres file`", "baseline (issue 4): from the local dump file"),
    ("agent-restore", "ours: restore request to the agent ¹", "agent: globals via psql, repository → pipe → pg_restore --create"),
    ("server-restore", "ours: `chebackup server:restore` ²", "the same through the controller"),
    ("cli-restore", "ours: `chebackup repo restore --stdout \\| pg_restore --create` ³", "the same pipeline without agent or protocol"),
]
header = ["step", "what it measures", "wall s", "MiB/s ⁵", "peak RSS MiB ⁶", "controller RSS MiB", "user s ⁷", "sys s ⁷",
          "tools CPU s ⁷", "client CPU s ⁷", "PostgreSQL CPU s ⁸", "other CPU s ⁸"]
table = []
for key, label, what in steps:
    r = rows.get(key)
    if not r:
        table.append([label, what + (f" — {env['PGBR_STATUS']}" if key == "pgbackrest" else "")] + ["—"] * 10)
        continue
    size = int(env["CLUSTER_BYTES"]) if key == "pgbackrest" else custom
    dash = lambda v, f: "—" if v is None else f(v)
    table.append([label, what, f"{r['s']:.2f}", f"{size / MIB / max(r['s'], 0.01):.1f}", f"{r['rss'] / 1024:.1f}",
                  dash(r["cmd_rss"], lambda v: f"{v / 1024:.1f}"), f"{r['user']:.2f}", f"{r['sys']:.2f}",
                  dash(r["tools"], lambda v: f"{v:.2f}"), dash(r["cmd_cpu"], lambda v: f"{v:.2f}"), f"{r['pg']:.2f}",
                  f"{max(r['other'], 0):.2f}"])

def ratio(a, b):
    ra, rb = rows.get(a), rows.get(b)
    return None if not (ra and rb) else ra["s"] / max(rb["s"], 0.01)
targets = []
def target(name, value, limit, note=""):
    if value is None:
        targets.append([name, "—", "not measured" + note])
    else:
        targets.append([name, "—" if limit is None else ("PASS" if value <= limit else "FAIL"), f"{value:.2f}x{note}"])
target("agent backup request / `pg_dump -Fp | wc -c` <= 1.15x (issue 4)", ratio("agent-backup", "plain"), 1.15)
target("`server:backup` / `pg_dump -Fp | wc -c` <= 1.15x (issue 4, end to end)", ratio("server-backup", "plain"), 1.15)
target("agent restore request / `pg_restore` from the file <= 1.10x (issue 4)", ratio("agent-restore", "restore-file"), 1.10)
target("`server:restore` / `pg_restore` from the file <= 1.10x (issue 4, end to end)", ratio("server-restore", "restore-file"), 1.10)
target("agent backup request / `pg_dump -Fc -Z0 > file`", ratio("agent-backup", "custom"), None, " (informational)")
target("agent backup request / pgBackRest full backup", ratio("agent-backup", "pgbackrest"), None,
       " (informational: logical vs physical)" if "pgbackrest" in rows else f" — pgBackRest {env['PGBR_STATUS']}")
target("no-agent pipeline backup / `pg_dump -Fp | wc -c`", ratio("cli-backup", "plain"), None, " (informational)")
target("no-agent pipeline restore / `pg_restore` from the file", ratio("cli-restore", "restore-file"), None, " (informational)")

verify = dict(item.split("=", 1) for item in env["VERIFY"].split())
mem_gib = int(env["MEM_KIB"]) / 1048576
pgbr = env["PGBR_STATUS"] == "done"
facts = [
    ("date", env["DATE"]),
    ("machine", f"{env['NPROC']} CPUs ({env['CPU_MODEL']}), {mem_gib:.1f} GiB memory"),
    ("chebackup", f"commit {env['COMMIT']}, release build, local repositories"),
    ("PostgreSQL", f"{env['PG_VERSION'].split()[0]} (scripts/pg-cluster.sh: fsync off, loopback TCP)"),
    ("database", f"pgbench scale {env['SCALE']} and 5000 transactions: benchdb {mib(env['DB_BYTES'])} on disk "
                 f"(cluster {mib(env['CLUSTER_BYTES'])}); plain dump {mib(env['PLAIN_BYTES'])}, "
                 f"custom dump (-Fc -Z0) {mib(env['CUSTOM_BYTES'])}"),
    ("stored (du -sb)", f"agent request {mib(env['AGENT_REPO_BYTES'])} (streams {mib(env['AGENT_STREAM_BYTES'])}), "
                        f"server:backup {mib(env['SERVER_REPO_BYTES'])}, no-agent pipeline {mib(env['CLI_REPO_BYTES'])}"
                        + (f", pgBackRest {mib(env['PGBR_REPO_BYTES'])} without archived WAL ({env['PGBR_INFO']})" if pgbr else "")),
    ("pgBackRest", f"{env['PGBR_VERSION']}: {env['PGBR_STATUS']}"),
    ("restores verified (row counts, sums and hashes of the four pgbench tables, index count)",
     ", ".join(f"{k} {v}" for k, v in verify.items())),
]
notes = [
    "¹ `chebackup-agent --role postgres --database benchdb` (a fresh process per step) driven by "
    "`tests/protocol/agent_client.py`; wall time from sending the request to the `result` (connect and handshake "
    "excluded). The backup stores two parts (`postgres/globals`, `postgres/benchdb`) and writes no snapshot; the "
    "restore request restores the snapshot `server:backup` wrote.",
    "² the whole command (`--batch`, `-r local:…`): process start, repository unlock (scrypt), backing up the "
    "installation's objects (one small file here), the agent's backup or restore, the snapshot record.",
    "³ the same dump and pipeline as the agent's, through the low-level command, into a separate fresh repository.",
    "⁴ `pgbackrest --type=full backup` as the postgres user: process-max 1 (its default), compress-type lz4, "
    "start-fast, archive_mode on (archive-push) for this step only. It copies the whole cluster, indexes included.",
    "⁵ custom dump size / wall time (pgBackRest: cluster size / wall time).",
    "⁶ agent steps: the agent's peak RSS (VmHWM); other steps: the largest process of the command (`/usr/bin/time`).",
    "⁷ agent steps: user s and sys s are the agent's own CPU, tools CPU that of the pg_dump, pg_dumpall, psql and "
    "pg_restore it ran, client CPU that of agent_client.py or the chebackup controller. Other steps: user s and sys s "
    "are every process of the command together.",
    "⁸ PostgreSQL CPU: the server's processes (postmaster and its children: the backend serving pg_dump or pg_restore, "
    "checkpointer, archiver…). Other CPU: the rest of the machine's busy time during the step (`/proc/stat`): kernel "
    "threads (page-cache writeback) and any other program; more than a few tenths of a second means the machine was "
    f"not quiet. {env['NPROC']} CPUs: at most {env['NPROC']} x wall s in all.",
]

def text_table(head, body, left=(0, 1)):
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
    line = lambda cells: "  ".join(str(c).ljust(w) if i in left else str(c).rjust(w)
                                   for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
    return "\n".join([line(head), "  ".join("-" * w for w in widths)] + [line(b) for b in body])

def md_table(head, body, left=(0, 1)):
    cell = lambda c: re.sub(r"(?<!\\)\|", r"\\|", str(c))   # a "|" in a cell, even in code, must be escaped
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" if i in left else "---:" for i in range(len(head))) + "|"]
    out += ["| " + " | ".join(cell(c) for c in b) + " |" for b in body]
    return "\n".join(out)

plain = lambda text: text.replace("\\|", "|").replace("`", "")
print()
for k, v in facts:
    print(f"{k}: {v}")
print()
print(text_table([h.rstrip(" ⁵⁶⁷⁸") for h in header[:1] + header[2:]], [[plain(row[0])] + row[2:] for row in table], left=(0,)))
print()
print(text_table(["target", "result", "measured"], [[plain(c) for c in t] for t in targets], left=(0, 1, 2)))

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
