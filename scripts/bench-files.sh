#!/usr/bin/env bash
# Many small files (a workspace's node_modules and build trees) against restic, run by
# `make bench` (and on its own):
#
#   scripts/bench-files.sh [--files N[,N...]] [--per-dir K] [--no-build]
#
#   --files N,M   corpus sizes in files (default $BENCH_FILES, else 250000,1000000): each size is
#                 a separate run, so peak memory can be compared between sizes
#   --per-dir K   K files in every package directory instead of 1-60 (K=1: one file a directory,
#                 where the cost of each directory shows); results in bench-work/files-per-dir-K
#   --no-build    use the release build as it is
#
# For each size: generate the corpus (scripts/gen-small-files.py: 0-16 KiB files, deep trees,
# ~25 files a directory unless --per-dir), then, each tool into a fresh local repository, in this order:
# ours full, restic full, ours unchanged, restic unchanged, touch 1% of the files, ours after
# the touch, restic after the touch, ours restore, restic restore; both restores are compared
# with the corpus (scripts/compare-trees.py: bytes, modes, mtimes). Every step is timed with
# /usr/bin/time after the page cache was dropped (when root) and the corpus read back in.
# Results: bench-work/files/results.md or files-per-dir-K/results.md (a table for docs/benchmarks.md, ratios restic/ours).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
# shellcheck source=scripts/bench-lib.sh
source scripts/bench-lib.sh

SIZES=${BENCH_FILES:-250000,1000000}
BUILD=1
PER_DIR=
while (($#)); do
    case $1 in
        --files) SIZES=${2:?--files needs a value}; shift 2 ;;
        --files=*) SIZES=${1#*=}; shift ;;
        --per-dir) PER_DIR=${2:?--per-dir needs a value}; shift 2 ;;
        --per-dir=*) PER_DIR=${1#*=}; shift ;;
        --no-build) BUILD=0; shift ;;
        -h|--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "bench-files: unknown argument: $1" >&2; exit 2 ;;
    esac
done
[[ "$SIZES" =~ ^[1-9][0-9]*(,[1-9][0-9]*)*$ ]] || { echo "bench-files: --files takes N[,N...]" >&2; exit 2; }
[[ -z "$PER_DIR" || "$PER_DIR" =~ ^[1-9][0-9]*$ ]] || { echo "bench-files: --per-dir takes a positive number" >&2; exit 2; }
for tool in restic python3 /usr/bin/time; do
    command -v "$tool" > /dev/null || { echo "bench-files: $tool is missing: run scripts/install-deps.sh" >&2; exit 1; }
done

W="$ROOT/bench-work/files${PER_DIR:+-per-dir-$PER_DIR}"
GEN_SHAPE=()
if [[ -n "$PER_DIR" ]]; then GEN_SHAPE=(--per-dir "$PER_DIR"); fi
rm -rf "$W"
mkdir -p "$W/logs"
LOGS="$W/logs"
OURS="$ROOT/.build-release/release/chebackup"
export BACKUP_REPOSITORY_PASSWORD=bench-files-password RESTIC_PASSWORD=bench-files-password
trap 'rm -rf "$W/corpus" "$W/ours" "$W/restic" "$W/out-ours" "$W/out-restic"' EXIT

if ((BUILD)); then
    say "build (release)"
    swift build -c release --scratch-path .build-release > "$LOGS/build.log" 2>&1 || { tail -n 40 "$LOGS/build.log" >&2; exit 1; }
fi
[[ -x "$OURS" ]] || { echo "bench-files: $OURS is missing (run without --no-build)" >&2; exit 1; }

# settle DIR: dirty pages written, the cache dropped (root), DIR read back: every tool reads
# its input from memory and starts from the same state.
settle() {
    sync
    if [[ -w /proc/sys/vm/drop_caches ]]; then echo 3 > /proc/sys/vm/drop_caches; fi
    tar cf - "$@" 2> /dev/null | cat > /dev/null
}

TSV="$W/steps.tsv"
: > "$TSV"
# timed SIZE STEP TOOL -- COMMAND...: runs it under /usr/bin/time, records seconds and peak RSS.
timed() {
    local size=$1 stepname=$2 tool=$3
    shift 4
    local log="$LOGS/$size-$stepname-$tool.log"
    say "[$tool] $stepname ($size files)"
    if ! /usr/bin/time -f '%e %M %U %S' -o "$log.time" "$@" > "$log" 2>&1; then
        echo "bench-files: $stepname ($tool) failed:" >&2
        tail -n 20 "$log" >&2
        exit 1
    fi
    local secs rss user sys
    read -r secs rss user sys < <(tail -n 1 "$log.time")
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$size" "$stepname" "$tool" "$secs" "$rss" "$user" "$sys" >> "$TSV"
    printf '    %.2f s, peak RSS %.1f MiB, CPU %.1f s user + %.1f s sys\n' "$secs" "$(echo "$rss / 1024" | bc -l)" "$user" "$sys"
}

IFS=, read -r -a SIZE_LIST <<< "$SIZES"
for size in "${SIZE_LIST[@]}"; do
    rm -rf "$W/corpus" "$W/ours" "$W/restic" "$W/out-ours" "$W/out-restic"
    need=$(( size * 10 / 1024 * 4 ))   # corpus, two repositories, two restores: ~8 KiB a file each
    if (( $(free_mib "$W") < need )); then
        echo "bench-files: $size files need about $need MiB free in $W" >&2
        exit 1
    fi
    say "generate $size files"
    python3 scripts/gen-small-files.py "$W/corpus" --files "$size" "${GEN_SHAPE[@]}" | tee "$LOGS/$size-gen.log"
    bytes=$(du -sb "$W/corpus" | cut -f1)
    dirs=$(find "$W/corpus" -type d | wc -l)
    echo "$size	$bytes	$dirs" >> "$W/corpora.tsv"
    "$OURS" repo init -r "local:$W/ours" --quiet > "$LOGS/$size-init-ours.log" 2>&1
    restic init -r "$W/restic" > "$LOGS/$size-init-restic.log" 2>&1

    settle "$W/corpus"; timed "$size" full ours -- "$OURS" repo backup -r "local:$W/ours" --quiet "$W/corpus"
    settle "$W/corpus"; timed "$size" full restic -- restic -r "$W/restic" backup -q "$W/corpus"
    settle "$W/corpus"; timed "$size" unchanged ours -- "$OURS" repo backup -r "local:$W/ours" --quiet "$W/corpus"
    settle "$W/corpus"; timed "$size" unchanged restic -- restic -r "$W/restic" backup -q "$W/corpus"
    python3 scripts/gen-small-files.py "$W/corpus" --touch-percent 1 | tee "$LOGS/$size-touch.log"
    settle "$W/corpus"; timed "$size" touched ours -- "$OURS" repo backup -r "local:$W/ours" --quiet "$W/corpus"
    settle "$W/corpus"; timed "$size" touched restic -- restic -r "$W/restic" backup -q "$W/corpus"
    settle "$W/ours"; timed "$size" restore ours -- "$OURS" repo restore latest -r "local:$W/ours" --quiet --target "$W/out-ours"
    settle "$W/restic"; timed "$size" restore restic -- restic -r "$W/restic" restore latest --target "$W/out-restic"
    python3 scripts/compare-trees.py "$W/corpus" "$W/out-ours" > "$LOGS/$size-verify-ours.log" \
        || { echo "bench-files: our restore differs from the corpus:" >&2; head "$LOGS/$size-verify-ours.log" >&2; exit 1; }
    python3 scripts/compare-trees.py "$W/corpus" "$W/out-restic$W/corpus" > "$LOGS/$size-verify-restic.log" \
        || { echo "bench-files: restic's restore differs from the corpus:" >&2; head "$LOGS/$size-verify-restic.log" >&2; exit 1; }
    echo "    both restores match the corpus"
done

# Report: one row per size and step, ours against restic.
python3 - "$TSV" "$W/corpora.tsv" "$(restic version | head -n 1)" "${PER_DIR:-1-60}" > "$W/results.md" <<'EOF'
import sys
steps = {}
for line in open(sys.argv[1]):
    size, step, tool, secs, rss, user, sys_ = line.split("\t")
    steps[(int(size), step, tool)] = (float(secs), int(rss) / 1024)
corpora = {int(l.split("\t")[0]): (int(l.split("\t")[1]), int(l.split("\t")[2])) for l in open(sys.argv[2])}
print(f"Many small files ({sys.argv[4]} files a package directory), against {sys.argv[3]}, local repositories (seconds, peak RSS MiB; ratio = restic / ours, above 1 is ours faster or smaller)\n")
print("| files | MiB | dirs | step | ours s | restic s | speed ratio | ours MiB | restic MiB | memory ratio |")
print("|---|---|---|---|---|---|---|---|---|---|")
for size in sorted(corpora):
    b, d = corpora[size]
    for step in ["full", "unchanged", "touched", "restore"]:
        o, r = steps[(size, step, "ours")], steps[(size, step, "restic")]
        print(f"| {size:,} | {b / 1048576:.0f} | {d:,} | {step} | {o[0]:.2f} | {r[0]:.2f} | {r[0] / o[0]:.2f}x | {o[1]:.0f} | {r[1]:.0f} | {r[1] / o[1]:.2f}x |")
EOF
cat "$W/results.md"
