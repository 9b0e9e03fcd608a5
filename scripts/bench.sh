#!/usr/bin/env bash
# Benchmark chebackup against restic on a generated corpus (run by `make bench`).
#
#   scripts/bench.sh [--size-mib N] [--flat-mib M | --no-flat]
#
#   --size-mib N   corpus size in MiB (default $BENCH_SIZE_MIB, else 1024)
#   --flat-mib M   corpus size for the memory-flatness run (default 4 x N)
#   --no-flat      skip the memory-flatness run
#
# Steps (both tools back up the very same corpus, edited once):
#   ours full, restic full, ours unchanged, restic unchanged, edit 5% of the files,
#   ours edited, restic edited, ours restore + verify, restic restore + verify,
#   then ours full backup of a corpus M MiB large into a fresh repository (peak RSS 1x vs 4x).
# Each step is timed with /usr/bin/time (wall seconds, peak RSS). Everything happens in
# bench-work/ at the repository root; only bench-work/results.md (a markdown table for
# docs/benchmarks.md) is kept. Targets are informational: the script fails only when a step
# fails or a restore does not match the corpus.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$ROOT"

SIZE_MIB=${BENCH_SIZE_MIB:-1024}
FLAT_MIB=""
FLAT=1
usage() { sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; }
while [[ $# -gt 0 ]]; do
    case "$1" in
        --size-mib) SIZE_MIB=${2:?--size-mib needs a value}; shift 2 ;;
        --size-mib=*) SIZE_MIB=${1#*=}; shift ;;
        --flat-mib) FLAT_MIB=${2:?--flat-mib needs a value}; shift 2 ;;
        --flat-mib=*) FLAT_MIB=${1#*=}; shift ;;
        --no-flat) FLAT=0; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "bench: unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
done
[[ "$SIZE_MIB" =~ ^[1-9][0-9]*$ ]] || { echo "bench: --size-mib must be a positive integer" >&2; exit 2; }
FLAT_MIB=${FLAT_MIB:-$((SIZE_MIB * 4))}
[[ "$FLAT_MIB" =~ ^[1-9][0-9]*$ ]] || { echo "bench: --flat-mib must be a positive integer" >&2; exit 2; }

# --- prerequisites -----------------------------------------------------------------------------
if [[ ! -x /usr/bin/time ]] || ! /usr/bin/time -f '%e %M' true >/dev/null 2>&1; then
    echo "bench: GNU time (/usr/bin/time) is missing: run scripts/install-deps.sh" >&2
    exit 1
fi
for tool in restic python3 tar diff du; do
    command -v "$tool" >/dev/null || { echo "bench: $tool is missing: run scripts/install-deps.sh" >&2; exit 1; }
done

W="$ROOT/bench-work"
LOGS="$W/logs"
TSV="$W/results.tsv"
OURS_BIN="$ROOT/.build-release/release/chebackup"
GEN="$ROOT/scripts/gen-corpus.py"
CORPUS="$W/corpus"
CORPUS_SEED=1
EDIT_SEED=2

cleanup() {
    local rc=$?
    if [[ -d "$W" ]]; then
        find "$W" -mindepth 1 -maxdepth 1 ! -name results.md -exec rm -rf {} + 2>/dev/null || true
        rmdir "$W" 2>/dev/null || true
    fi
    if [[ $rc -ne 0 ]]; then echo "bench: FAILED (exit $rc)" >&2; fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say() { printf '\n==> %s\n' "$*"; }

rm -rf "$W"
mkdir -p "$LOGS"
: > "$TSV"
: > "$W/meta"

free_mib() { df -Pm "$W" | awk 'NR == 2 { print $4 }'; }
need=$((SIZE_MIB * 6 + 512))
if (( $(free_mib) < need )); then
    echo "bench: need about $need MiB free in $W for a $SIZE_MIB MiB corpus, have $(free_mib) MiB" >&2
    exit 1
fi

export BACKUP_REPOSITORY_PASSWORD="bench-password-$$"
export RESTIC_PASSWORD="$BACKUP_REPOSITORY_PASSWORD"
export RESTIC_CACHE_DIR="$W/restic-cache"
unset BACKUP_REPOSITORY_URL RESTIC_REPOSITORY RESTIC_PASSWORD_FILE RESTIC_PASSWORD_COMMAND || true

# --- helpers -----------------------------------------------------------------------------------
corpus_bytes() { find "$1" -type f -printf '%s\n' | awk '{ s += $1 } END { printf "%.0f\n", s }'; }

# Read every file once so that both tools start from the page cache, and write back the
# freshly generated files first so that their writeback is not charged to the next step.
# (GNU tar skips reading when its output is /dev/null itself, hence the cat.)
warm() { sync; tar -cf - -C "$1" . | cat > /dev/null; }

# run_step KEY TOOL LABEL BYTES -- COMMAND...: time COMMAND, record "KEY TOOL SECONDS RSS_KIB BYTES".
run_step() {
    local key=$1 tool=$2 label=$3 bytes=$4
    shift 5
    local log="$LOGS/$key-$tool.log" timing="$LOGS/$key-$tool.time"
    say "[$tool] $label"
    echo "    \$ $*"
    if ! /usr/bin/time -f '%e %M' -o "$timing" "$@" > "$log" 2>&1; then
        echo "bench: step \"$label\" ($tool) failed; last lines of its output:" >&2
        tail -n 30 "$log" >&2
        [[ -s "$timing" ]] && tail -n 3 "$timing" >&2
        exit 1
    fi
    sync
    local secs rss
    read -r secs rss < <(tail -n 1 "$timing")
    printf '%s\t%s\t%s\t%s\t%s\n' "$key" "$tool" "$secs" "$rss" "$bytes" >> "$TSV"
    awk -v s="$secs" -v r="$rss" -v b="$bytes" 'BEGIN {
        t = (s > 0.01 ? s : 0.01)
        printf "    %.2f s, %.1f MiB/s, peak RSS %.1f MiB\n", s, b / 1048576 / t, r / 1024 }'
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

# --- corpus ------------------------------------------------------------------------------------
say "generate a $SIZE_MIB MiB corpus (seed $CORPUS_SEED)"
python3 "$GEN" "$CORPUS" --size-mib "$SIZE_MIB" --seed "$CORPUS_SEED"
BYTES=$(corpus_bytes "$CORPUS")
FILES=$(find "$CORPUS" -type f | wc -l)
say "warm-up read of the corpus"
warm "$CORPUS"

# --- repositories ------------------------------------------------------------------------------
say "init repositories"
ours repo init -r "local:$W/ours" > "$LOGS/init-ours.log" 2>&1 || { cat "$LOGS/init-ours.log" >&2; exit 1; }
restic init -r "$W/restic" > "$LOGS/init-restic.log" 2>&1 || { cat "$LOGS/init-restic.log" >&2; exit 1; }
RESTIC_REPO_VERSION=$(restic -r "$W/restic" cat config 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["version"])')
if [[ "$RESTIC_REPO_VERSION" -ge 2 ]]; then
    RESTIC_COMPRESSION="repository format v$RESTIC_REPO_VERSION, compression ${RESTIC_COMPRESSION:-auto} (zstd)"
else
    RESTIC_COMPRESSION="repository format v$RESTIC_REPO_VERSION, no compression"
fi
echo "    ours: LZ4; restic $(restic version | awk '{ print $2 }'): $RESTIC_COMPRESSION"

# --- backups -----------------------------------------------------------------------------------
run_step full ours "full backup" "$BYTES" -- "$OURS_BIN" repo backup -r "local:$W/ours" --quiet "$CORPUS"
run_step full restic "full backup" "$BYTES" -- restic -r "$W/restic" backup -q "$CORPUS"
run_step unchanged ours "unchanged re-backup" "$BYTES" -- "$OURS_BIN" repo backup -r "local:$W/ours" --quiet "$CORPUS"
run_step unchanged restic "unchanged re-backup" "$BYTES" -- restic -r "$W/restic" backup -q "$CORPUS"

say "edit 5% of the files (seed $EDIT_SEED)"
python3 "$GEN" "$CORPUS" --edit-percent 5 --seed "$EDIT_SEED"
BYTES_EDITED=$(corpus_bytes "$CORPUS")
warm "$CORPUS"

run_step edited ours "backup after 5% edit" "$BYTES_EDITED" -- "$OURS_BIN" repo backup -r "local:$W/ours" --quiet "$CORPUS"
run_step edited restic "backup after 5% edit" "$BYTES_EDITED" -- restic -r "$W/restic" backup -q "$CORPUS"

OURS_REPO_BYTES=$(du -sb "$W/ours" | cut -f1)
RESTIC_REPO_BYTES=$(du -sb "$W/restic" | cut -f1)

# --- restores ----------------------------------------------------------------------------------
run_step restore ours "restore latest" "$BYTES_EDITED" -- "$OURS_BIN" repo restore latest -r "local:$W/ours" --target "$W/restore-ours" --quiet
verify ours "$W/restore-ours"
run_step restore restic "restore latest" "$BYTES_EDITED" -- restic -r "$W/restic" restore latest --target "$W/restore-restic" -q
# restic restores the absolute path of the corpus under the target.
verify restic "$W/restore-restic$CORPUS"

# --- memory flatness ---------------------------------------------------------------------------
FLAT_STATUS=skipped
FLAT_BYTES=0
FLAT_REPO_BYTES=0
if [[ $FLAT -eq 1 ]]; then
    say "free the disk for the memory-flatness run"
    rm -rf "$W/ours" "$W/restic" "$W/restore-ours" "$W/restore-restic" "$RESTIC_CACHE_DIR" "$CORPUS"
    need=$((FLAT_MIB * 5 / 2 + 512))
    if (( $(free_mib) < need )); then
        echo "bench: skipping the memory-flatness run: need about $need MiB free, have $(free_mib) MiB" >&2
        FLAT_STATUS="skipped (disk)"
    else
        say "generate a $FLAT_MIB MiB corpus (seed $CORPUS_SEED)"
        python3 "$GEN" "$W/corpus-flat" --size-mib "$FLAT_MIB" --seed "$CORPUS_SEED"
        FLAT_BYTES=$(corpus_bytes "$W/corpus-flat")
        warm "$W/corpus-flat"
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
SIZE_MIB="$SIZE_MIB" FILES="$FILES" BYTES="$BYTES" FLAT_MIB="$FLAT_MIB" FLAT_STATUS="$FLAT_STATUS" \
FLAT_BYTES="$FLAT_BYTES" FLAT_REPO_BYTES="$FLAT_REPO_BYTES" \
OURS_REPO_BYTES="$OURS_REPO_BYTES" RESTIC_REPO_BYTES="$RESTIC_REPO_BYTES" \
RESTIC_VERSION="$(restic version | awk '{ print $2 }')" RESTIC_COMPRESSION="$RESTIC_COMPRESSION" COMMIT="$COMMIT" \
VERIFY="$(tr '\n' ' ' < "$W/meta")" \
python3 - "$TSV" "$W/results.md" <<'PY'
import os, sys

tsv, md_path = sys.argv[1], sys.argv[2]
env = os.environ
MIB = 1048576
rows = {}
for line in open(tsv):
    key, tool, secs, rss, nbytes = line.split("\t")
    rows[(key, tool)] = (float(secs), int(rss), int(nbytes))

def rate(r): return r[2] / MIB / max(r[0], 0.01)
def fmt_s(r): return f"{r[0]:.2f}" if r else "—"
def fmt_rate(r): return f"{rate(r):.1f}" if r else "—"
def fmt_rss(r): return f"{r[1] / 1024:.1f}" if r else "—"
def gib(b): return f"{int(b) / MIB:,.1f} MiB"

steps = [("full", "full backup"), ("unchanged", "unchanged re-backup"),
         ("edited", "backup after 5% edit"), ("restore", "restore")]
header = ["step", "ours s", "ours MiB/s", "ours RSS MiB", "restic s", "restic MiB/s", "restic RSS MiB", "restic s / ours s"]
table = []
for key, label in steps:
    o, r = rows.get((key, "ours")), rows.get((key, "restic"))
    ratio = f"{r[0] / max(o[0], 0.01):.2f}x" if o and r else "—"
    table.append([label, fmt_s(o), fmt_rate(o), fmt_rss(o), fmt_s(r), fmt_rate(r), fmt_rss(r), ratio])
flat = rows.get(("flat", "ours"))
if flat:
    table.append([f"full backup, {env['FLAT_MIB']} MiB corpus", fmt_s(flat), fmt_rate(flat), fmt_rss(flat), "—", "—", "—", "—"])

# Targets (informational).
def get(key, tool): return rows.get((key, tool))
targets = []
def target(name, ok, detail):
    targets.append([name, "—" if ok is None else ("PASS" if ok else "FAIL"), detail])

o, r = get("full", "ours"), get("full", "restic")
target("full backup >= 3x restic throughput", r[0] / max(o[0], 0.01) >= 3.0,
       f"{rate(o):.1f} vs {rate(r):.1f} MiB/s ({r[0] / max(o[0], 0.01):.2f}x)")
o, r = get("unchanged", "ours"), get("unchanged", "restic")
target("unchanged re-backup no slower than restic", o[0] <= r[0], f"{o[0]:.2f} s vs {r[0]:.2f} s")
o, r = get("restore", "ours"), get("restore", "restic")
target("restore >= 2.5x restic throughput", r[0] / max(o[0], 0.01) >= 2.5,
       f"{rate(o):.1f} vs {rate(r):.1f} MiB/s ({r[0] / max(o[0], 0.01):.2f}x)")
worse = [label for key, label in steps if get(key, "ours")[1] >= get(key, "restic")[1]]
peak_o = max(get(k, "ours")[1] for k, _ in steps)
peak_r = max(get(k, "restic")[1] for k, _ in steps)
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
]
if flat:
    facts.append(("memory-flatness corpus", f"{gib(env['FLAT_BYTES'])}, repository {gib(env['FLAT_REPO_BYTES'])}"))

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
print()
print(text_table(["target", "result", "measured"], targets, left=(0, 1, 2)))
print("\n(MiB/s = corpus size / wall time; RSS = peak resident set size; targets are informational)")

with open(md_path, "w") as f:
    f.write("\n".join(f"- **{k}**: {v}" for k, v in facts) + "\n\n")
    f.write(md_table(header, table) + "\n\n")
    f.write(md_table(["target", "result", "measured"], targets, left=(0, 1, 2)) + "\n\n")
    f.write("MiB/s is the corpus size divided by the wall time of the step; RSS is the peak resident set size "
            "(`/usr/bin/time -f '%e %M'`). Targets are informational.\n")
PY

echo
echo "results written to bench-work/results.md"
if [[ $VERIFY_FAILED -ne 0 ]]; then
    echo "bench: a restore did not match the corpus" >&2
    exit 1
fi
