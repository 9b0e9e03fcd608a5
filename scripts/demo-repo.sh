#!/usr/bin/env bash
# The main job on the embedded default, at the repository layer: create a local repository,
# back up a generated tree and a database-dump-like stream in one snapshot, back up again
# unchanged, restore everything, verify it bit for bit (and metadata), check every pack, and
# print the timings. Leaves nothing behind.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${CHEBACKUP:-.build-release/release/chebackup}
SIZE=${DEMO_SIZE_MIB:-256}
[ -x "$BIN" ] || { echo "demo: $BIN is missing: run 'make demo'" >&2; exit 1; }

W=$(mktemp -d /tmp/chebackup-demo.XXXXXX)
trap 'rm -rf "$W"' EXIT
export BACKUP_REPOSITORY_PASSWORD="demo-$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')"
REPO="local:$W/repository"

declare -a STEPS TIMES
step() {  # step NAME COMMAND...: runs and times a step
  local name=$1; shift
  echo "==> $name"
  local t0 t1
  t0=$(date +%s.%N)
  "$@"
  t1=$(date +%s.%N)
  STEPS+=("$name"); TIMES+=("$(echo "$t1 - $t0" | bc -l)")
}

echo "==> generating a ${SIZE} MiB tree and a database dump stream in $W"
python3 scripts/gen-corpus.py "$W/che-data" --size-mib "$SIZE" >/dev/null
tar -C "$W/che-data" -cf "$W/dbche.dump" text
DUMP_MIB=$(( $(stat -c %s "$W/dbche.dump") / 1048576 ))

step "init repository" "$BIN" repo init -r "$REPO"
step "backup (tree + stream)" bash -c "'$BIN' repo backup -r '$REPO' '$W/che-data' --stdin --stdin-name dbche.dump < '$W/dbche.dump' | tee '$W/backup.out'"
ID=$(sed -n 's/^Backup snapshot ID: //p' "$W/backup.out")
step "backup again (unchanged)" "$BIN" repo backup -r "$REPO" "$W/che-data" --stdin --stdin-name dbche.dump < "$W/dbche.dump"
step "list snapshots" "$BIN" repo snapshots -r "$REPO"
step "restore $ID" "$BIN" repo restore "$ID" -r "$REPO" --target "$W/restored"
step "verify tree (bytes + metadata)" python3 scripts/compare-trees.py "$W/che-data" "$W/restored/che-data"
step "verify stream" cmp "$W/dbche.dump" "$W/restored/dbche.dump"
step "stream to stdout" bash -c "'$BIN' repo restore '$ID' -r '$REPO' --stdout --part dbche.dump | cmp - '$W/dbche.dump'"
step "check --read-data" "$BIN" repo check --read-data -r "$REPO"

echo
echo "Snapshot $ID: ${SIZE} MiB tree + ${DUMP_MIB} MiB stream, repository $(du -sh "$W/repository" | cut -f1) on disk"
printf '%-34s %10s\n' "step" "seconds"
for i in "${!STEPS[@]}"; do printf '%-34s %10.2f\n' "${STEPS[$i]}" "${TIMES[$i]}"; done
echo "demo: OK — everything restored bit for bit"
