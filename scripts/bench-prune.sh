#!/usr/bin/env bash
# Forget and prune, chebackup against restic, on the same history (run by `make bench`, or alone).
#
#   scripts/bench-prune.sh [--size-mib N] [--versions V] [--no-build]
#
#   --size-mib N   corpus size in MiB (default $BENCH_PRUNE_MIB, else 256)
#   --versions V   backups of the corpus, 20% of its files edited between two (default 8)
#   --no-build     use the release binary already built (.build-release)
#
# Both tools back up the very same V versions into fresh repositories (untimed), then, timed with
# /usr/bin/time (wall seconds, peak RSS): forget --keep-last 2, prune (each with its default
# of 5% unused space tolerated), check --read-data; the repository size before and after; the
# newest snapshot restored and compared with the corpus. Appends a "Forget and prune" section to
# bench-work/results.md (replacing a previous one). Fails only when a step fails or a restore
# does not match.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$ROOT"
# shellcheck source=scripts/bench-lib.sh
source "$ROOT/scripts/bench-lib.sh"

SIZE_MIB=${BENCH_PRUNE_MIB:-256}
VERSIONS=8
BUILD=1
while [[ $# -gt 0 ]]; do
    case "$1" in
        --size-mib) SIZE_MIB=${2:?}; shift 2 ;;
        --versions) VERSIONS=${2:?}; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "bench-prune: unknown option $1" >&2; exit 64 ;;
    esac
done
if [[ $BUILD -eq 1 ]]; then swift build -c release --scratch-path .build-release --product chebackup >/dev/null; fi
BIN="$ROOT/.build-release/release/chebackup"
command -v restic >/dev/null || { echo "bench-prune: restic is not installed (scripts/install-deps.sh)" >&2; exit 1; }

W="$ROOT/bench-work/prune"
rm -rf "$W"
mkdir -p "$W/logs"
export BACKUP_REPOSITORY_PASSWORD="bench-prune-$$" RESTIC_PASSWORD="bench-prune-$$" RESTIC_CACHE_DIR="$W/restic-cache"
unset BACKUP_REPOSITORY_URL RESTIC_REPOSITORY || true
TSV="$W/steps.tsv"
: > "$TSV"

# timed NAME COMMAND...: wall seconds and peak RSS (KiB) into steps.tsv.
timed() {
    local name=$1; shift
    sync
    /usr/bin/time -f "%e %M" -o "$W/logs/$name.time" "$@" > "$W/logs/$name.out" 2> "$W/logs/$name.err" || {
        echo "bench-prune: $name failed:" >&2; cat "$W/logs/$name.err" >&2; exit 1; }
    printf '%s\t%s\n' "$name" "$(cat "$W/logs/$name.time")" >> "$TSV"
}

say "corpus of $SIZE_MIB MiB, $VERSIONS versions"
python3 scripts/gen-corpus.py "$W/corpus" --size-mib "$SIZE_MIB" >/dev/null
"$BIN" repo init -r "local:$W/ours" >/dev/null
restic init -r "$W/restic" >/dev/null
for v in $(seq 1 "$VERSIONS"); do
    "$BIN" repo backup -r "local:$W/ours" "$W/corpus" -q >/dev/null
    restic -r "$W/restic" backup "$W/corpus" -q >/dev/null
    if [[ $v -lt $VERSIONS ]]; then python3 scripts/gen-corpus.py "$W/corpus" --edit-percent 20 --seed "$v" >/dev/null; fi
done
before_ours=$(du -sb "$W/ours" | cut -f1); before_restic=$(du -sb "$W/restic" | cut -f1)

say "forget --keep-last 2, prune, check --read-data"
timed ours-forget "$BIN" repo forget -r "local:$W/ours" --keep-last 2 -q
timed restic-forget restic -r "$W/restic" forget --keep-last 2
timed ours-prune "$BIN" repo prune -r "local:$W/ours" -q
timed restic-prune restic -r "$W/restic" prune
timed ours-check "$BIN" repo check -r "local:$W/ours" --read-data -q
timed restic-check restic -r "$W/restic" check --read-data
after_ours=$(du -sb "$W/ours" | cut -f1); after_restic=$(du -sb "$W/restic" | cut -f1)

say "restore the newest snapshot and compare"
"$BIN" repo restore -r "local:$W/ours" latest --target "$W/ours-restore" -q >/dev/null
restic -r "$W/restic" restore latest --target "$W/restic-restore" >/dev/null
python3 scripts/compare-trees.py "$W/corpus" "$W/ours-restore" >/dev/null || { echo "bench-prune: our restore differs" >&2; exit 1; }
python3 scripts/compare-trees.py "$W/corpus" "$W/restic-restore$W/corpus" >/dev/null || { echo "bench-prune: restic's restore differs" >&2; exit 1; }

python3 - "$TSV" "$W/section.md" "$SIZE_MIB" "$VERSIONS" "$before_ours" "$after_ours" "$before_restic" "$after_restic" "$(restic version | awk '{ print $2 }')" <<'PY'
import sys
tsv, out, size, versions, bo, ao, br, ar, rv = sys.argv[1:]
rows = {}
for line in open(tsv):
    name, rest = line.rstrip("\n").split("\t")
    wall, rss = rest.split()
    rows[name] = (float(wall), int(rss))
mib = lambda b: f"{int(b) / 2**20:.0f} MiB"
lines = ["## Forget and prune", "",
         f"{size} MiB corpus, {versions} backups with 20% of the files edited between two, forget --keep-last 2, "
         f"then prune with each tool's default (5% unused space tolerated); restic {rv}. Same machine, same run.", "",
         "| step | ours s | restic s | restic ÷ ours | ours peak RSS | restic peak RSS |", "|---|---:|---:|---:|---:|---:|"]
for step in ("forget", "prune", "check"):
    o, r = rows[f"ours-{step}"], rows[f"restic-{step}"]
    ratio = r[0] / o[0] if o[0] > 0 else float("inf")
    lines.append(f"| {step} | {o[0]:.2f} | {r[0]:.2f} | {ratio:.2f}x | {o[1] // 1024} MiB | {r[1] // 1024} MiB |")
lines += ["", f"Repository before → after: ours {mib(bo)} → {mib(ao)}, restic {mib(br)} → {mib(ar)}. "
          "Both newest snapshots restored identical to the corpus; both checks passed.", ""]
open(out, "w").write("\n".join(lines))
print("\n".join(lines))
PY
RESULTS="$ROOT/bench-work/results.md"
if [[ -f "$RESULTS" ]]; then
    python3 - "$RESULTS" <<'PY'
import sys
path = sys.argv[1]
text = open(path).read()
cut = text.find("## Forget and prune\n")
if cut >= 0:
    open(path, "w").write(text[:cut].rstrip("\n") + "\n")
PY
    printf '\n' >> "$RESULTS"
fi
cat "$W/section.md" >> "$RESULTS"
echo "results appended to bench-work/results.md"
