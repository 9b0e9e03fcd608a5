#!/usr/bin/env bash
# Benchmark chebackup against restic on a generated corpus (run by `make bench`).
#
#   scripts/bench.sh [--size-mib N] [--repeat R] [--flat-mib M | --no-flat] [--no-remote]
#                    [--pgbench-scale S | --no-postgres]
#
#   --size-mib N       corpus size in MiB (default $BENCH_SIZE_MIB, else 1024)
#   --repeat R         runs of each full backup and restore, per tool (default $BENCH_REPEAT,
#                      else 3); the report gives the median
#   --flat-mib M       corpus size for the memory-flatness run (default 4 x N)
#   --no-flat          skip the memory-flatness run
#   --no-remote        skip the remote steps (REST servers, moto S3)
#   --pgbench-scale S  pgbench scale of the PostgreSQL agent benchmark (default
#                      $BENCH_PGBENCH_SCALE, else 70 x N / 1024: about N MiB on disk)
#   --no-postgres      skip the PostgreSQL agent benchmark (scripts/bench-postgres.sh)
#   --files N[,N...]   corpus sizes of the many-small-files benchmark (scripts/bench-files.sh;
#                      default $BENCH_FILES, else 250000,1000000); a run of 20,000 files, each
#                      in a directory of its own (--per-dir 1), follows it
#   --no-files         skip the many-small-files benchmark
#   --no-prune         skip the forget-and-prune benchmark (scripts/bench-prune.sh)
#
# Steps (both tools back up the very same corpus, edited once; full backups and restores run
# R times per tool, alternating which tool goes first, each full backup into a fresh repository):
#   ours full, restic full, ours unchanged, restic unchanged, edit 5% of the files,
#   ours edited, restic edited, ours restore + verify, restic restore + verify;
#   remote (fresh repositories, the edited corpus): ours full backup to `chebackup rest-server`
#   and restore + verify, restic full backup to `rclone serve restic` and restore + verify,
#   ours full backup to moto S3 and restore + verify, restic to moto S3 if moto accepts its
#   signatures; then ours full backup of a corpus M MiB large into a fresh repository
#   (peak RSS 1x vs 4x); last, scripts/bench-postgres.sh: the postgres agent against pg_dump,
#   pg_restore and pgBackRest on a pgbench database (it appends its section to results.md).
# Each step is timed with /usr/bin/time (wall seconds, peak RSS, CPU); for remote steps the
# server's CPU time and peak RSS are read from /proc. Everything happens in bench-work/ at the
# repository root; only bench-work/results.md (a markdown table for docs/benchmarks.md) and the
# time of the cleanup (.cleaned-at: a run started soon after waits, see below) are
# kept. Every server is stopped on exit, also on failure. Targets are informational: the
# script fails only when a step fails or a restore does not match the corpus.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$ROOT"

SIZE_MIB=${BENCH_SIZE_MIB:-1024}
REPEAT=${BENCH_REPEAT:-3}
FLAT_MIB=""
FLAT=1
REMOTE=1
POSTGRES=1
PGBENCH_SCALE=${BENCH_PGBENCH_SCALE:-}
usage() { sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; }
FILES=1
PRUNE=1
FILE_SIZES=${BENCH_FILES:-250000,1000000}
while [[ $# -gt 0 ]]; do
    case "$1" in
        --size-mib) SIZE_MIB=${2:?--size-mib needs a value}; shift 2 ;;
        --size-mib=*) SIZE_MIB=${1#*=}; shift ;;
        --repeat) REPEAT=${2:?--repeat needs a value}; shift 2 ;;
        --repeat=*) REPEAT=${1#*=}; shift ;;
        --flat-mib) FLAT_MIB=${2:?--flat-mib needs a value}; shift 2 ;;
        --flat-mib=*) FLAT_MIB=${1#*=}; shift ;;
        --no-flat) FLAT=0; shift ;;
        --no-remote) REMOTE=0; shift ;;
        --pgbench-scale) PGBENCH_SCALE=${2:?--pgbench-scale needs a value}; shift 2 ;;
        --pgbench-scale=*) PGBENCH_SCALE=${1#*=}; shift ;;
        --no-postgres) POSTGRES=0; shift ;;
        --files) FILE_SIZES=${2:?--files needs a value}; shift 2 ;;
        --files=*) FILE_SIZES=${1#*=}; shift ;;
        --no-files) FILES=0; shift ;;
        --no-prune) PRUNE=0; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "bench: unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
done
[[ "$SIZE_MIB" =~ ^[1-9][0-9]*$ ]] || { echo "bench: --size-mib must be a positive integer" >&2; exit 2; }
[[ "$REPEAT" =~ ^[1-9][0-9]*$ ]] || { echo "bench: --repeat must be a positive integer" >&2; exit 2; }
FLAT_MIB=${FLAT_MIB:-$((SIZE_MIB * 4))}
[[ "$FLAT_MIB" =~ ^[1-9][0-9]*$ ]] || { echo "bench: --flat-mib must be a positive integer" >&2; exit 2; }
PGBENCH_SCALE=${PGBENCH_SCALE:-$(( SIZE_MIB * 70 / 1024 > 0 ? SIZE_MIB * 70 / 1024 : 1 ))}
[[ "$PGBENCH_SCALE" =~ ^[1-9][0-9]*$ ]] || { echo "bench: --pgbench-scale must be a positive integer" >&2; exit 2; }

# --- prerequisites -----------------------------------------------------------------------------
if [[ ! -x /usr/bin/time ]] || ! /usr/bin/time -f '%e %M' true >/dev/null 2>&1; then
    echo "bench: GNU time (/usr/bin/time) is missing: run scripts/install-deps.sh" >&2
    exit 1
fi
for tool in restic python3 tar diff du; do
    command -v "$tool" >/dev/null || { echo "bench: $tool is missing: run scripts/install-deps.sh" >&2; exit 1; }
done
if [[ $POSTGRES -eq 1 ]]; then
    for tool in /usr/lib/postgresql/15/bin/pgbench runuser; do
        command -v "$tool" >/dev/null || { echo "bench: $tool is missing (PostgreSQL agent benchmark): run scripts/install-deps.sh, or use --no-postgres" >&2; exit 1; }
    done
    [[ $(id -u) -eq 0 ]] || { echo "bench: the PostgreSQL agent benchmark runs as root (its cluster runs as the postgres user); use --no-postgres" >&2; exit 1; }
fi
if [[ $REMOTE -eq 1 ]]; then
    # scripts/test-services.sh starts rclone, moto_server and sshd (the tests' services).
    for tool in rclone moto_server /usr/sbin/sshd ssh-keygen; do
        command -v "$tool" >/dev/null || { echo "bench: $tool is missing (remote steps): run scripts/install-deps.sh, or use --no-remote" >&2; exit 1; }
    done
fi

W="$ROOT/bench-work"
LOGS="$W/logs"
TSV="$W/results.tsv"
OURS_BIN="$ROOT/.build-release/release/chebackup"
GEN="$ROOT/scripts/gen-corpus.py"
CORPUS="$W/corpus"
CORPUS_SEED=1
EDIT_SEED=2

SERVICES_DIR="$W/services"
REST_PID=""

# Stop our rest-server and the services of scripts/test-services.sh (rclone, moto, sshd).
stop_servers() {
    if [[ -n "$REST_PID" ]]; then
        kill "$REST_PID" 2>/dev/null || true
        for _ in $(seq 1 50); do kill -0 "$REST_PID" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$REST_PID" 2>/dev/null || true
        wait "$REST_PID" 2>/dev/null || true
        REST_PID=""
    fi
    if [[ -f "$SERVICES_DIR/pids" ]]; then
        "$ROOT/scripts/test-services.sh" stop "$SERVICES_DIR" > /dev/null 2>&1 || true
    fi
}

cleanup() {
    local rc=$?
    stop_servers
    if [[ -d "$W" ]]; then
        find "$W" -mindepth 1 -maxdepth 1 ! -name results.md -exec rm -rf {} + 2>/dev/null || true
        date +%s > "$W/.cleaned-at"
    fi
    if [[ $rc -ne 0 ]]; then echo "bench: FAILED (exit $rc)" >&2; fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# shellcheck source=scripts/bench-lib.sh
source "$ROOT/scripts/bench-lib.sh"

# The last run deleted tens of thousands of files on exit. For 60 s after a deletion (360 s while
# the inode table block is dirty) ext4 skips the freed inodes when it allocates new ones, and a
# restore right after spent a quarter of its time in that scan (docs/benchmarks.md, session 14):
# a run that starts soon after the last one first waits that time out.
if [[ -f "$W/.cleaned-at" ]]; then
    since=$(( $(date +%s) - $(cat "$W/.cleaned-at" 2>/dev/null || echo 0) ))
    if (( since >= 0 && since < 360 )); then
        echo "bench: the last run deleted its files $since s ago; waiting $(( 360 - since )) s for ext4 to stop skipping their inodes"
        sleep $(( 360 - since ))
    fi
fi
rm -rf "$W"
mkdir -p "$LOGS"
: > "$TSV"
: > "$W/meta"

need=$((SIZE_MIB * 9 + 512))
if (( $(free_mib "$W") < need )); then
    echo "bench: need about $need MiB free in $W for a $SIZE_MIB MiB corpus, have $(free_mib "$W") MiB" >&2
    exit 1
fi

export BACKUP_REPOSITORY_PASSWORD="bench-password-$$"
export RESTIC_PASSWORD="$BACKUP_REPOSITORY_PASSWORD"
export RESTIC_CACHE_DIR="$W/restic-cache"
unset BACKUP_REPOSITORY_URL RESTIC_REPOSITORY RESTIC_PASSWORD_FILE RESTIC_PASSWORD_COMMAND || true

# --- helpers -----------------------------------------------------------------------------------
corpus_bytes() { find "$1" -type f -printf '%s\n' | awk '{ s += $1 } END { printf "%.0f\n", s }'; }

# settle INPUT...: the same starting point for every timed step. Dirty pages are written back
# (so earlier writes are not charged to this step), the page cache is dropped when we may
# (root), then the step's input is read back into it, so every tool reads from memory. On this
# kind of VM, writing into memory freed long ago costs several times more system time than
# writing into memory freed just now; dropping the cache before each step gives each tool the
# same start, whatever ran before it. (GNU tar skips reading when its output is /dev/null
# itself, hence the cat.)
settle() {
    sync
    if [[ -w /proc/sys/vm/drop_caches ]]; then echo 3 > /proc/sys/vm/drop_caches; fi
    # Both tools' programs and shared libraries too, so neither pays for loading itself from disk.
    if [[ ${#TOOL_FILES[@]} -gt 0 ]]; then cat "${TOOL_FILES[@]}" > /dev/null 2>&1 || true; fi
    local input
    for input in "$@"; do
        if [[ -d "$input" ]]; then tar -cf - -C "$input" . | cat > /dev/null; fi
    done
}

TOOL_FILES=()

# Which tool goes first in run $1: ours in odd runs, restic in even ones.
order() { if (( $1 % 2 )); then echo "ours restic"; else echo "restic ours"; fi; }

# CPU seconds (user + system) and peak RSS (KiB) of a running process, from /proc.
proc_cpu() { awk -v hz="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); printf "%.2f\n", ($12 + $13) / hz }' "/proc/$1/stat"; }

# run_step KEY TOOL LABEL BYTES -- COMMAND...: time COMMAND, record
# "KEY TOOL SECONDS RSS_KIB BYTES USER_S SYS_S SERVER_CPU_S SERVER_HWM_KIB" (the server columns
# are "-" unless STEP_SERVER holds the pid of the server the step talks to).
STEP_SERVER=""
run_step() {
    local key=$1 tool=$2 label=$3 bytes=$4
    shift 5
    local log="$LOGS/$key-$tool.log" timing="$LOGS/$key-$tool.time"
    local server_cpu0="" server_cpu=- server_hwm=-
    say "[$tool] $label"
    echo "    \$ $*"
    [[ -n "$STEP_SERVER" ]] && server_cpu0=$(proc_cpu "$STEP_SERVER")
    if ! /usr/bin/time -f '%e %M %U %S' -o "$timing" "$@" > "$log" 2>&1; then
        echo "bench: step \"$label\" ($tool) failed; last lines of its output:" >&2
        tail -n 30 "$log" >&2
        [[ -s "$timing" ]] && tail -n 3 "$timing" >&2
        exit 1
    fi
    if [[ -n "$STEP_SERVER" ]]; then
        server_cpu=$(awk -v a="$server_cpu0" -v b="$(proc_cpu "$STEP_SERVER")" 'BEGIN { printf "%.2f", b - a }')
        server_hwm=$(proc_hwm "$STEP_SERVER")
    fi
    sync
    local secs rss user sys
    read -r secs rss user sys < <(tail -n 1 "$timing")
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$key" "$tool" "$secs" "$rss" "$bytes" \
        "$user" "$sys" "$server_cpu" "$server_hwm" >> "$TSV"
    awk -v s="$secs" -v r="$rss" -v b="$bytes" -v u="$user" -v y="$sys" -v sc="$server_cpu" 'BEGIN {
        t = (s > 0.01 ? s : 0.01)
        printf "    %.2f s, %.1f MiB/s, peak RSS %.1f MiB, CPU user %.2f s + sys %.2f s", s, b / 1048576 / t, r / 1024, u, y
        if (sc != "-") printf ", server CPU %.2f s", sc
        printf "\n" }'
}


# wait_port PORT NAME LOG: wait up to 10 s for a server to accept connections.
wait_port() {
    for _ in $(seq 1 100); do
        if python3 -c "import socket, sys; s = socket.socket(); s.settimeout(0.2); sys.exit(s.connect_ex(('127.0.0.1', $1)))" 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    echo "bench: $2 did not start on port $1; its log:" >&2
    tail -n 20 "$3" >&2 || true
    exit 1
}

VERIFY_FAILED=0
verify() {
    local label=$1 restored=$2
    if diff -r "$CORPUS" "$restored" > "$LOGS/diff-$label.log" 2>&1; then
        echo "    verified: $restored matches the corpus bit for bit"
        echo "verify_$label=ok" >> "$W/meta"
    else
        echo "bench: the $label restore does NOT match the corpus:" >&2
        head -n 20 "$LOGS/diff-$label.log" >&2
        echo "verify_$label=FAILED" >> "$W/meta"
        VERIFY_FAILED=1
    fi
}

ours() { "$OURS_BIN" "$@"; }

# --- build -------------------------------------------------------------------------------------
say "build (release)"
if ! swift build -c release --scratch-path .build-release > "$LOGS/build.log" 2>&1; then
    echo "bench: release build failed:" >&2
    tail -n 40 "$LOGS/build.log" >&2
    exit 1
fi
tail -n 1 "$LOGS/build.log"
[[ -x "$OURS_BIN" ]] || { echo "bench: $OURS_BIN was not built" >&2; exit 1; }
mapfile -t TOOL_FILES < <({ echo "$OURS_BIN"; command -v restic; ldd "$OURS_BIN" "$(command -v restic)" 2>/dev/null | awk '$3 ~ /^\// { print $3 }'; } | sort -u)

# --- corpus ------------------------------------------------------------------------------------
say "generate a $SIZE_MIB MiB corpus (seed $CORPUS_SEED)"
python3 "$GEN" "$CORPUS" --size-mib "$SIZE_MIB" --seed "$CORPUS_SEED"
BYTES=$(corpus_bytes "$CORPUS")
FILES=$(find "$CORPUS" -type f | wc -l)
say "warm-up read of the corpus"
settle "$CORPUS"

# --- backups -----------------------------------------------------------------------------------
# Full backups: $REPEAT runs per tool, each into a fresh repository; the last run's repositories
# are the ones the next steps use.
init_ours() { ours repo init -r "$1" > "$LOGS/init-ours.log" 2>&1 || { cat "$LOGS/init-ours.log" >&2; exit 1; }; }
init_restic() { restic init -r "$1" > "$LOGS/init-restic.log" 2>&1 || { cat "$LOGS/init-restic.log" >&2; exit 1; }; }
for ((run = 1; run <= REPEAT; run++)); do
    suffix=$([[ $run -lt $REPEAT ]] && echo "-run$run" || true)
    for tool in $(order "$run"); do
        if [[ $tool == ours ]]; then
            init_ours "local:$W/ours$suffix"
            settle "$CORPUS"
            run_step full ours "full backup (run $run of $REPEAT)" "$BYTES" -- \
                "$OURS_BIN" repo backup -r "local:$W/ours$suffix" --quiet "$CORPUS"
        else
            init_restic "$W/restic$suffix"
            settle "$CORPUS"
            run_step full restic "full backup (run $run of $REPEAT)" "$BYTES" -- restic -r "$W/restic$suffix" backup -q "$CORPUS"
        fi
    done
    if [[ -n "$suffix" ]]; then rm -rf "$W/ours$suffix" "$W/restic$suffix"; fi
done
RESTIC_REPO_VERSION=$(restic -r "$W/restic" cat config 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["version"])')
if [[ "$RESTIC_REPO_VERSION" -ge 2 ]]; then
    RESTIC_COMPRESSION="repository format v$RESTIC_REPO_VERSION, compression ${RESTIC_COMPRESSION:-auto} (zstd)"
else
    RESTIC_COMPRESSION="repository format v$RESTIC_REPO_VERSION, no compression"
fi
echo "    ours: LZ4; restic $(restic version | awk '{ print $2 }'): $RESTIC_COMPRESSION"

settle "$CORPUS"
run_step unchanged ours "unchanged re-backup" "$BYTES" -- "$OURS_BIN" repo backup -r "local:$W/ours" --quiet "$CORPUS"
settle "$CORPUS"
run_step unchanged restic "unchanged re-backup" "$BYTES" -- restic -r "$W/restic" backup -q "$CORPUS"

say "edit 5% of the files (seed $EDIT_SEED)"
python3 "$GEN" "$CORPUS" --edit-percent 5 --seed "$EDIT_SEED"
BYTES_EDITED=$(corpus_bytes "$CORPUS")

settle "$CORPUS"
run_step edited ours "backup after 5% edit" "$BYTES_EDITED" -- "$OURS_BIN" repo backup -r "local:$W/ours" --quiet "$CORPUS"
settle "$CORPUS"
run_step edited restic "backup after 5% edit" "$BYTES_EDITED" -- restic -r "$W/restic" backup -q "$CORPUS"

OURS_REPO_BYTES=$(du -sb "$W/ours" | cut -f1)
RESTIC_REPO_BYTES=$(du -sb "$W/restic" | cut -f1)

# --- restores ----------------------------------------------------------------------------------
# $REPEAT runs per tool, each into a new directory; the first of each is compared with the corpus.
for ((run = 1; run <= REPEAT; run++)); do
    for tool in $(order "$run"); do
        if [[ $tool == ours ]]; then
            settle "$W/ours"
            run_step restore ours "restore latest (run $run of $REPEAT)" "$BYTES_EDITED" -- \
                "$OURS_BIN" repo restore latest -r "local:$W/ours" --target "$W/restore-ours-$run" --quiet
            if [[ $run -eq 1 ]]; then verify ours "$W/restore-ours-1"; fi
        else
            settle "$W/restic" "$RESTIC_CACHE_DIR"
            run_step restore restic "restore latest (run $run of $REPEAT)" "$BYTES_EDITED" -- \
                restic -r "$W/restic" restore latest --target "$W/restore-restic-$run" -q
            # restic restores the absolute path of the corpus under the target.
            if [[ $run -eq 1 ]]; then verify restic "$W/restore-restic-1$CORPUS"; fi
        fi
    done
done

# --- remote backends ---------------------------------------------------------------------------
# Fresh repositories, the edited corpus. REST: ours to our own server (chebackup rest-server),
# restic to an independent one (rclone serve restic). S3: moto, signatures checked.
REMOTE_STATUS=skipped
RESTIC_S3_STATUS="skipped"
REST_OURS_BYTES=0; REST_OURS_PACKS=0; REST_RESTIC_BYTES=0; REST_RESTIC_PACKS=0
if [[ $REMOTE -eq 1 ]]; then
    # Only the repositories go (a few dozen large files). The restored trees stay until the end:
    # ext4 scans past recently freed inodes when it allocates new ones, so deleting thousands
    # of files just before a step that creates thousands would slow that step down by seconds.
    say "free the disk for the remote steps"
    rm -rf "$W/ours" "$W/restic"

    say "start chebackup rest-server, and rclone serve restic + moto S3 (scripts/test-services.sh)"
    mkdir -p "$W/rest-server"
    REST_PORT=$(free_port)
    "$OURS_BIN" rest-server --path "$W/rest-server" --listen "127.0.0.1:$REST_PORT" > "$LOGS/rest-server.log" 2>&1 &
    REST_PID=$!
    wait_port "$REST_PORT" "chebackup rest-server" "$LOGS/rest-server.log"
    if ! "$ROOT/scripts/test-services.sh" start "$SERVICES_DIR" > "$LOGS/test-services.log" 2>&1; then
        echo "bench: scripts/test-services.sh could not start the services:" >&2
        tail -n 20 "$LOGS/test-services.log" >&2
        exit 1
    fi
    tail -n 1 "$LOGS/test-services.log"
    RCLONE_PID=$(sed -n 1p "$SERVICES_DIR/pids")
    MOTO_PID=$(sed -n 2p "$SERVICES_DIR/pids")
    # shellcheck disable=SC1091
    source "$SERVICES_DIR/env"
    S3_ENV=(env AWS_ACCESS_KEY_ID="$CHEBACKUP_TEST_S3_KEY_ID" AWS_SECRET_ACCESS_KEY="$CHEBACKUP_TEST_S3_SECRET")

    OURS_REST="rest:http://127.0.0.1:$REST_PORT/ours"
    RESTIC_REST="${CHEBACKUP_TEST_RCLONE_URL%/}/restic"
    OURS_S3="$CHEBACKUP_TEST_S3_URL/bench/ours"
    RESTIC_S3="$CHEBACKUP_TEST_S3_URL/bench-restic"

    say "init remote repositories"
    "${S3_ENV[@]}" "$OURS_BIN" repo init -r "$OURS_S3" > "$LOGS/init-s3-ours.log" 2>&1 || { cat "$LOGS/init-s3-ours.log" >&2; exit 1; }
    # restic 0.14 (minio-go) against moto: try whether moto accepts its signed listings at all
    # (restic retries a refused request for about a minute before it gives up, hence the timeout).
    if "${S3_ENV[@]}" restic init -r "$RESTIC_S3" > "$LOGS/init-s3-restic.log" 2>&1 &&
        "${S3_ENV[@]}" timeout 20 restic -r "$RESTIC_S3" snapshots >> "$LOGS/init-s3-restic.log" 2>&1; then
        RESTIC_S3_STATUS=ok
    elif grep -q "signature we calculated does not match" "$LOGS/init-s3-restic.log"; then
        RESTIC_S3_STATUS="not run: moto refuses restic's signed listings (SignatureDoesNotMatch): moto (5.x, signatures checked) canonicalises a \"/\" in a query value (prefix=keys/) unencoded where AWS SigV4 and minio-go encode it as %2F (boto3 fails the same way; chebackup retries such a listing signed the other way)"
    else
        RESTIC_S3_STATUS="not run: restic init or listing on moto failed: $(grep -v '^$' "$LOGS/init-s3-restic.log" | tail -n 1)"
    fi
    echo "    restic on moto S3: $RESTIC_S3_STATUS"

    # REST: $REPEAT full backups per tool into fresh repositories on the servers, then $REPEAT
    # restores per tool from the last ones (the servers' files read back into the page cache
    # before each restore).
    OURS_REST_DIR="$W/rest-server/ours"
    RESTIC_REST_DIR="$SERVICES_DIR/rclone/restic"
    for ((run = 1; run <= REPEAT; run++)); do
        suffix=$([[ $run -lt $REPEAT ]] && echo "-run$run" || true)
        for tool in $(order "$run"); do
            if [[ $tool == ours ]]; then
                init_ours "$OURS_REST$suffix"
                settle "$CORPUS"
                STEP_SERVER=$REST_PID run_step rest-full ours "full backup to chebackup rest-server (run $run of $REPEAT)" "$BYTES_EDITED" -- \
                    "$OURS_BIN" repo backup -r "$OURS_REST$suffix" --quiet "$CORPUS"
            else
                init_restic "$RESTIC_REST$suffix"
                settle "$CORPUS"
                STEP_SERVER=$RCLONE_PID run_step rest-full restic "full backup to rclone serve restic (run $run of $REPEAT)" "$BYTES_EDITED" -- \
                    restic -r "$RESTIC_REST$suffix" backup -q "$CORPUS"
            fi
        done
        if [[ -n "$suffix" ]]; then rm -rf "$OURS_REST_DIR$suffix" "$RESTIC_REST_DIR$suffix"; fi
    done
    for ((run = 1; run <= REPEAT; run++)); do
        for tool in $(order "$run"); do
            if [[ $tool == ours ]]; then
                settle "$OURS_REST_DIR"
                STEP_SERVER=$REST_PID run_step rest-restore ours "restore from chebackup rest-server (run $run of $REPEAT)" "$BYTES_EDITED" -- \
                    "$OURS_BIN" repo restore latest -r "$OURS_REST" --target "$W/restore-rest-ours-$run" --quiet
                if [[ $run -eq 1 ]]; then verify rest-ours "$W/restore-rest-ours-1"; fi
            else
                settle "$RESTIC_REST_DIR" "$RESTIC_CACHE_DIR"
                STEP_SERVER=$RCLONE_PID run_step rest-restore restic "restore from rclone serve restic (run $run of $REPEAT)" "$BYTES_EDITED" -- \
                    restic -r "$RESTIC_REST" restore latest --target "$W/restore-rest-restic-$run" -q
                if [[ $run -eq 1 ]]; then verify rest-restic "$W/restore-rest-restic-1$CORPUS"; fi
            fi
        done
    done

    settle "$CORPUS"
    STEP_SERVER=$MOTO_PID run_step s3-full ours "full backup to moto S3" "$BYTES_EDITED" -- \
        "${S3_ENV[@]}" "$OURS_BIN" repo backup -r "$OURS_S3" --quiet "$CORPUS"
    if [[ $RESTIC_S3_STATUS == ok ]]; then
        settle "$CORPUS"
        STEP_SERVER=$MOTO_PID run_step s3-full restic "full backup to moto S3" "$BYTES_EDITED" -- \
            "${S3_ENV[@]}" restic -r "$RESTIC_S3" backup -q "$CORPUS"
    fi
    settle
    STEP_SERVER=$MOTO_PID run_step s3-restore ours "restore from moto S3" "$BYTES_EDITED" -- \
        "${S3_ENV[@]}" "$OURS_BIN" repo restore latest -r "$OURS_S3" --target "$W/restore-s3-ours" --quiet
    verify s3-ours "$W/restore-s3-ours"
    if [[ $RESTIC_S3_STATUS == ok ]]; then
        settle
        STEP_SERVER=$MOTO_PID run_step s3-restore restic "restore from moto S3" "$BYTES_EDITED" -- \
            "${S3_ENV[@]}" restic -r "$RESTIC_S3" restore latest --target "$W/restore-s3-restic" -q
        verify s3-restic "$W/restore-s3-restic$CORPUS"
    fi

    REST_OURS_BYTES=$(du -sb "$OURS_REST_DIR" | cut -f1)
    REST_OURS_PACKS=$(find "$OURS_REST_DIR/data" -type f | wc -l)
    REST_RESTIC_BYTES=$(du -sb "$RESTIC_REST_DIR" | cut -f1)
    REST_RESTIC_PACKS=$(find "$RESTIC_REST_DIR/data" -type f | wc -l)
    say "stop the servers"
    stop_servers
    rm -rf "$W/rest-server"
    REMOTE_STATUS=done
fi

# --- memory flatness ---------------------------------------------------------------------------
FLAT_STATUS=skipped
FLAT_BYTES=0
FLAT_REPO_BYTES=0
if [[ $FLAT -eq 1 ]]; then
    say "free the disk for the memory-flatness run"
    rm -rf "$W/ours" "$W/restic" "$W"/restore-* "$RESTIC_CACHE_DIR" "$CORPUS"
    need=$((FLAT_MIB * 5 / 2 + 512))
    if (( $(free_mib "$W") < need )); then
        echo "bench: skipping the memory-flatness run: need about $need MiB free, have $(free_mib "$W") MiB" >&2
        FLAT_STATUS="skipped (disk)"
    else
        say "generate a $FLAT_MIB MiB corpus (seed $CORPUS_SEED)"
        python3 "$GEN" "$W/corpus-flat" --size-mib "$FLAT_MIB" --seed "$CORPUS_SEED"
        FLAT_BYTES=$(corpus_bytes "$W/corpus-flat")
        settle "$W/corpus-flat"
        ours repo init -r "local:$W/ours-flat" > "$LOGS/init-ours-flat.log" 2>&1 || { cat "$LOGS/init-ours-flat.log" >&2; exit 1; }
        run_step flat ours "full backup of the ${FLAT_MIB} MiB corpus (memory flatness)" "$FLAT_BYTES" -- \
            "$OURS_BIN" repo backup -r "local:$W/ours-flat" --quiet "$W/corpus-flat"
        FLAT_REPO_BYTES=$(du -sb "$W/ours-flat" | cut -f1)
        FLAT_STATUS=done
        rm -rf "$W/ours-flat" "$W/corpus-flat"
    fi
fi

# --- report ------------------------------------------------------------------------------------
say "results"
MEM_KIB=$(awk '/^MemTotal:/ { print $2 }' /proc/meminfo)
CPU_MODEL=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
COMMIT="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [[ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]]; then COMMIT="$COMMIT (with local changes)"; fi

DATE="$(date -u '+%Y-%m-%d %H:%M UTC')" NPROC="$(nproc)" MEM_KIB="$MEM_KIB" CPU_MODEL="${CPU_MODEL:-unknown}" \
SIZE_MIB="$SIZE_MIB" REPEAT="$REPEAT" FILES="$FILES" BYTES="$BYTES" FLAT_MIB="$FLAT_MIB" FLAT_STATUS="$FLAT_STATUS" \
FLAT_BYTES="$FLAT_BYTES" FLAT_REPO_BYTES="$FLAT_REPO_BYTES" \
REMOTE_STATUS="$REMOTE_STATUS" RESTIC_S3_STATUS="$RESTIC_S3_STATUS" \
REST_OURS_BYTES="$REST_OURS_BYTES" REST_OURS_PACKS="$REST_OURS_PACKS" \
REST_RESTIC_BYTES="$REST_RESTIC_BYTES" REST_RESTIC_PACKS="$REST_RESTIC_PACKS" \
OURS_REPO_BYTES="$OURS_REPO_BYTES" RESTIC_REPO_BYTES="$RESTIC_REPO_BYTES" \
RESTIC_VERSION="$(restic version | awk '{ print $2 }')" RESTIC_COMPRESSION="$RESTIC_COMPRESSION" COMMIT="$COMMIT" \
VERIFY="$(tr '\n' ' ' < "$W/meta")" \
python3 - "$TSV" "$W/results.md" <<'PY'
import os, sys

tsv, md_path = sys.argv[1], sys.argv[2]
env = os.environ
MIB = 1048576
runs = {}     # (key, tool) -> [(seconds, peak RSS KiB, bytes, user s, sys s, server CPU s, server RSS KiB)]
for line in open(tsv):
    key, tool, secs, rss, nbytes, user, system, server_cpu, server_hwm = line.rstrip("\n").split("\t")
    runs.setdefault((key, tool), []).append((float(secs), int(rss), int(nbytes), float(user), float(system),
                                             None if server_cpu == "-" else float(server_cpu),
                                             None if server_hwm == "-" else int(server_hwm)))
# A step that ran several times counts with its median run (by wall time: the middle one, or
# the faster of the two middle ones), and the highest peak RSS of all its runs.
rows = {}     # (key, tool) -> (seconds, peak RSS KiB, bytes)
extra = {}    # (key, tool) -> (user s, sys s, server CPU s or None, server peak RSS KiB or None)
spread = {}   # (key, tool) -> (fastest s, slowest s, runs)
for k, rs in runs.items():
    ordered = sorted(rs)
    mid = ordered[(len(ordered) - 1) // 2]
    rows[k] = (mid[0], max(r[1] for r in rs), mid[2])
    extra[k] = (mid[3], mid[4], mid[5], max((r[6] for r in rs if r[6] is not None), default=None))
    spread[k] = (ordered[0][0], ordered[-1][0], len(rs))

def rate(r): return r[2] / MIB / max(r[0], 0.01)
def fmt_s(r): return f"{r[0]:.2f}" if r else "—"
def fmt_rate(r): return f"{rate(r):.1f}" if r else "—"
def fmt_rss(r): return f"{r[1] / 1024:.1f}" if r else "—"
def gib(b): return f"{int(b) / MIB:,.1f} MiB"

local_steps = [("full", "full backup"), ("unchanged", "unchanged re-backup"),
               ("edited", "backup after 5% edit"), ("restore", "restore")]
remote_steps = [("rest-full", "full backup to REST ¹"), ("rest-restore", "restore from REST ¹"),
                ("s3-full", "full backup to S3 (moto) ²"), ("s3-restore", "restore from S3 (moto) ²")]
remote = env["REMOTE_STATUS"] == "done"
steps = local_steps + (remote_steps if remote else [])
header = ["step", "ours s", "ours MiB/s", "ours RSS MiB", "restic s", "restic MiB/s", "restic RSS MiB", "restic s / ours s"]
table = []
for key, label in steps:
    o, r = rows.get((key, "ours")), rows.get((key, "restic"))
    ratio = f"{r[0] / max(o[0], 0.01):.2f}x" if o and r else "—"
    table.append([label, fmt_s(o), fmt_rate(o), fmt_rss(o), fmt_s(r), fmt_rate(r), fmt_rss(r), ratio])
flat = rows.get(("flat", "ours"))
if flat:
    table.append([f"full backup, {env['FLAT_MIB']} MiB corpus", fmt_s(flat), fmt_rate(flat), fmt_rss(flat), "—", "—", "—", "—"])
notes = []
if remote:
    notes.append("¹ ours to its own server (`chebackup rest-server`), restic to `rclone serve restic`, "
                 "both on loopback; fresh repositories, the edited corpus.")
    notes.append("² moto_server with signature checking, on loopback; fresh repositories, the edited corpus"
                 + ("." if env["RESTIC_S3_STATUS"] == "ok" else "; restic not run (see \"restic on moto S3\" above)."))

# Where the time goes: client user and system CPU in every step; server CPU and peak RSS in the
# remote ones.
servers = {("rest", "ours"): "chebackup rest-server", ("rest", "restic"): "rclone serve restic",
           ("s3", "ours"): "moto_server", ("s3", "restic"): "moto_server"}
detail_header = ["step", "client", "server", "wall s", "runs: fastest–slowest s", "user s", "sys s", "client RSS MiB",
                 "server CPU s", "server peak RSS MiB ³"]
detail = []
for key, label in steps + ([("flat", f"full backup, {env['FLAT_MIB']} MiB corpus")] if flat else []):
    for tool in ("ours", "restic"):
        r = rows.get((key, tool))
        if not r:
            continue
        user, system, scpu, shwm = extra[(key, tool)]
        server = servers.get((key.split("-")[0], tool), "— (local)")
        lo, hi, n = spread[(key, tool)]
        detail.append([label.rstrip(" ¹²"), "chebackup" if tool == "ours" else "restic", server,
                       f"{r[0]:.2f}", f"{n}: {lo:.2f}–{hi:.2f}" if n > 1 else "1", f"{user:.2f}", f"{system:.2f}", f"{r[1] / 1024:.1f}",
                       "—" if scpu is None else f"{scpu:.2f}", "—" if shwm is None else f"{shwm / 1024:.1f}"])

# Targets (informational).
def get(key, tool): return rows.get((key, tool))
targets = []
def target(name, ok, measured):
    targets.append([name, "—" if ok is None else ("PASS" if ok else "FAIL"), measured])

o, r = get("full", "ours"), get("full", "restic")
target("full backup >= 3x restic throughput", r[0] / max(o[0], 0.01) >= 3.0,
       f"{rate(o):.1f} vs {rate(r):.1f} MiB/s ({r[0] / max(o[0], 0.01):.2f}x)")
o, r = get("unchanged", "ours"), get("unchanged", "restic")
target("unchanged re-backup no slower than restic", o[0] <= r[0], f"{o[0]:.2f} s vs {r[0]:.2f} s")
o, r = get("restore", "ours"), get("restore", "restic")
target("restore >= 2.5x restic throughput", r[0] / max(o[0], 0.01) >= 2.5,
       f"{rate(o):.1f} vs {rate(r):.1f} MiB/s ({r[0] / max(o[0], 0.01):.2f}x)")
for key, name, factor in (("rest-full", "backup to REST >= 3x restic throughput (issue 3)", 3.0),
                          ("rest-restore", "restore from REST >= 2.5x restic throughput (issue 3)", 2.5)):
    o, r = get(key, "ours"), get(key, "restic")
    if o and r:
        target(name, r[0] / max(o[0], 0.01) >= factor,
               f"{rate(o):.1f} vs {rate(r):.1f} MiB/s ({r[0] / max(o[0], 0.01):.2f}x; ours to chebackup rest-server, restic to rclone serve restic)")
    else:
        target(name, None, f"remote steps {env['REMOTE_STATUS']}")
both = [(k, label) for k, label in steps if get(k, "ours") and get(k, "restic")]
worse = [label.rstrip(" ¹²") for key, label in both if get(key, "ours")[1] >= get(key, "restic")[1]]
peak_o = max(get(k, "ours")[1] for k, _ in both)
peak_r = max(get(k, "restic")[1] for k, _ in both)
target("peak RSS below restic's (every step)", not worse,
       f"max {peak_o / 1024:.1f} vs {peak_r / 1024:.1f} MiB" + (f"; not below in: {', '.join(worse)}" if worse else ""))
if flat:
    one = get("full", "ours")
    ratio = flat[1] / one[1]
    target(f"peak RSS 1x vs {int(env['FLAT_MIB']) / int(env['SIZE_MIB']):g}x corpus within 10%", ratio <= 1.10,
           f"{one[1] / 1024:.1f} MiB ({env['SIZE_MIB']} MiB) vs {flat[1] / 1024:.1f} MiB ({env['FLAT_MIB']} MiB): {ratio:.2f}x")
else:
    target("peak RSS 1x vs 4x corpus within 10%", None, f"memory-flatness run {env['FLAT_STATUS']}")

verify = {k.removeprefix("verify_"): v for k, v in (item.split("=", 1) for item in env["VERIFY"].split())}
mem_gib = int(env["MEM_KIB"]) / 1048576
facts = [
    ("date", env["DATE"]),
    ("machine", f"{env['NPROC']} CPUs ({env['CPU_MODEL']}), {mem_gib:.1f} GiB memory"),
    ("chebackup", f"commit {env['COMMIT']}, LZ4"),
    ("restic", f"{env['RESTIC_VERSION']}, {env['RESTIC_COMPRESSION']}"),
    ("corpus", f"{env['SIZE_MIB']} MiB requested: {env['FILES']} files, {gib(env['BYTES'])} "
               "(35% text, 25% random, 20% near-duplicates, 10% small files, 10% large files); 5% of the files edited before the third backup"),
    ("repository size after 3 backups (du -sb)", f"ours {gib(env['OURS_REPO_BYTES'])}, restic {gib(env['RESTIC_REPO_BYTES'])}"),
    ("restores verified (diff -r)", f"ours {verify.get('ours', '?')}, restic {verify.get('restic', '?')}"),
    ("runs", f"full backups and restores {env['REPEAT']} times per tool, alternating which tool goes first; "
             "the tables give the median run (wall time) and the highest peak RSS of the runs; before every "
             "timed step the page cache is dropped and the step's input read back into it"),
]
verify_labels = [("rest-ours", "ours from chebackup rest-server"), ("rest-restic", "restic from rclone"),
                 ("s3-ours", "ours from moto"), ("s3-restic", "restic from moto")]
if remote:
    facts.append(("remote repositories after one full backup (du -sb)",
                  f"ours on chebackup rest-server {gib(env['REST_OURS_BYTES'])} in {env['REST_OURS_PACKS']} pack files, "
                  f"restic on rclone serve restic {gib(env['REST_RESTIC_BYTES'])} in {env['REST_RESTIC_PACKS']} pack files"))
    facts.append(("remote restores verified (diff -r)",
                  ", ".join(f"{name} {verify[k]}" for k, name in verify_labels if k in verify)))
    facts.append(("restic on moto S3", "done" if env["RESTIC_S3_STATUS"] == "ok" else env["RESTIC_S3_STATUS"]))
else:
    facts.append(("remote steps", env["REMOTE_STATUS"]))
if flat:
    facts.append(("memory-flatness corpus", f"{gib(env['FLAT_BYTES'])}, repository {gib(env['FLAT_REPO_BYTES'])}"))
detail_note = ("user s, sys s: the client's CPU time (`/usr/bin/time`); server CPU s: user + system seconds of the "
               "server process during the step (`/proc/PID/stat`). ³ Peak RSS (VmHWM) of the server process since "
               "its start, read after the step.")

def text_table(head, body, left=(0,)):
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
    line = lambda cells: "  ".join(str(c).ljust(w) if i in left else str(c).rjust(w)
                                   for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
    return "\n".join([line(head), "  ".join("-" * w for w in widths)] + [line(b) for b in body])

def md_table(head, body, left=(0,)):
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" if i in left else "---:" for i in range(len(head))) + "|"]
    out += ["| " + " | ".join(str(c) for c in b) + " |" for b in body]
    return "\n".join(out)

print()
for k, v in facts:
    print(f"{k}: {v}")
print()
print(text_table(header, table))
for n in notes:
    print(n)
if detail:
    print()
    print(text_table(detail_header, detail, left=(0, 1, 2)))
    print(detail_note)
print()
print(text_table(["target", "result", "measured"], targets, left=(0, 1, 2)))
print("\n(MiB/s = corpus size / wall time; RSS = peak resident set size; targets are informational)")

with open(md_path, "w") as f:
    f.write("\n".join(f"- **{k}**: {v}" for k, v in facts) + "\n\n")
    f.write(md_table(header, table) + "\n\n")
    if notes:
        f.write("\n".join(n + "<br>" if i < len(notes) - 1 else n for i, n in enumerate(notes)) + "\n\n")
    if detail:
        f.write(md_table(detail_header, detail, left=(0, 1, 2)) + "\n\n" + detail_note + "\n\n")
    f.write(md_table(["target", "result", "measured"], targets, left=(0, 1, 2)) + "\n\n")
    f.write("MiB/s is the corpus size divided by the wall time of the step; RSS is the peak resident set size "
            "(`/usr/bin/time -f '%e %M %U %S'`). Targets are informational.\n")
PY

echo
echo "results written to bench-work/results.md"

# --- PostgreSQL agent --------------------------------------------------------------------------
if [[ $POSTGRES -eq 1 ]]; then
    say "PostgreSQL agent benchmark (scripts/bench-postgres.sh --pgbench-scale $PGBENCH_SCALE)"
    "$ROOT/scripts/bench-postgres.sh" --no-build --pgbench-scale "$PGBENCH_SCALE"
fi
# --- many small files --------------------------------------------------------------------------
if [[ $FILES -eq 1 ]]; then
    say "many small files (scripts/bench-files.sh --files $FILE_SIZES)"
    "$ROOT/scripts/bench-files.sh" --no-build --files "$FILE_SIZES"
    say "one file a directory (scripts/bench-files.sh --files 20000 --per-dir 1)"
    "$ROOT/scripts/bench-files.sh" --no-build --files 20000 --per-dir 1
fi
# --- forget and prune --------------------------------------------------------------------------
if [[ $PRUNE -eq 1 ]]; then
    say "forget and prune (scripts/bench-prune.sh)"
    "$ROOT/scripts/bench-prune.sh" --no-build
fi
if [[ $VERIFY_FAILED -ne 0 ]]; then
    echo "bench: a restore did not match the corpus" >&2
    exit 1
fi
