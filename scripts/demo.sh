#!/usr/bin/env bash
# The main job on the embedded default: a local Che-like installation (PostgreSQL 15 with dbche
# and keycloak, a Che server data directory, workspace /projects volumes, the installation's
# objects), the two agents as sidecar processes, the internal backup server. Back up with
# `chebackup server:backup`, delete the whole installation (databases gone: a freshly
# initialised empty PostgreSQL; data and objects removed), restore with
# `chebackup server:restore --batch`, and verify that everything came back exactly.
# Prints the snapshot id and the timings; leaves nothing running.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${CHEBACKUP:-.build-release/release/chebackup}
AGENT=${CHEBACKUP_AGENT:-$(dirname "$BIN")/chebackup-agent}
SIZE=${DEMO_SIZE_MIB:-128}
[ -x "$BIN" ] && [ -x "$AGENT" ] || { echo "demo: $BIN or $AGENT is missing: run 'make demo'" >&2; exit 1; }

W=$(mktemp -d /tmp/chebackup-demo.XXXXXX)
chmod 755 "$W"
AGENT_PIDS=()
cleanup() {
  for pid in "${AGENT_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  scripts/pg-cluster.sh stop "$W/pg" >/dev/null 2>&1 || true
  rm -rf "$W"
}
trap cleanup EXIT
# shellcheck source=scripts/bench-lib.sh
source scripts/bench-lib.sh   # free_port, step, print_steps


echo "==> setting up a local Che installation in $W"
scripts/pg-cluster.sh start "$W/pg" >/dev/null
PGPORT_FIXED=$(sed -n 's/^export PGPORT=//p' "$W/pg/env")
scripts/pg-cluster.sh seed "$W/pg" >/dev/null
python3 scripts/gen-corpus.py "$W/che/data" --size-mib "$SIZE" --seed 3 >/dev/null
python3 scripts/gen-corpus.py "$W/che/projects" --size-mib $((SIZE / 4)) --seed 4 >/dev/null
mkdir -p "$W/che/objects/secrets" "$W/che/objects/configmaps"
cat > "$W/che/objects/checluster.yaml" <<YAML
apiVersion: org.eclipse.che/v2
kind: CheCluster
metadata: {name: eclipse-che, namespace: eclipse-che}
spec: {networking: {domain: che.example.com}, components: {cheServer: {debug: false}}}
YAML
printf 'apiVersion: v1\nkind: Secret\nmetadata: {name: che-db, namespace: eclipse-che}\ndata: {password: Y2hlLXBhc3N3b3Jk}\n' > "$W/che/objects/secrets/che-db.yaml"
printf 'apiVersion: v1\nkind: ConfigMap\nmetadata: {name: che, namespace: eclipse-che}\ndata: {CHE_HOST: che.example.com}\n' > "$W/che/objects/configmaps/che.yaml"
head -c 32 /dev/urandom | base64 > "$W/agent-token"; chmod 600 "$W/agent-token"

PG_AGENT_PORT=$(free_port); FILES_AGENT_PORT=$(free_port); SERVER_PORT=$(free_port)
# shellcheck disable=SC1091
(source "$W/pg/env"; exec "$AGENT" --role postgres --listen "127.0.0.1:$PG_AGENT_PORT" --token-file "$W/agent-token" \
  --database dbche --database keycloak) > "$W/postgres-agent.log" 2>&1 &
AGENT_PIDS+=($!)
"$AGENT" --role files --listen "127.0.0.1:$FILES_AGENT_PORT" --token-file "$W/agent-token" \
  --dir "che-data=$W/che/data" --dir "projects=$W/che/projects" > "$W/files-agent.log" 2>&1 &
AGENT_PIDS+=($!)
cat > "$W/chebackup.yaml" <<YAML
id: che-demo
namespace: eclipse-che
domain: che.example.com
cheVersion: 7.80.0
objectsDir: $W/che/objects
tokenFile: $W/agent-token
stateDir: $W/state
internalServer: {listen: "127.0.0.1:$SERVER_PORT"}
agents:
  - {role: postgres, address: "127.0.0.1:$PG_AGENT_PORT"}
  - {role: files, address: "127.0.0.1:$FILES_AGENT_PORT"}
YAML
export CHEBACKUP_CONFIG="$W/chebackup.yaml"
sleep 0.5

# What must come back.
scripts/pg-cluster.sh checksum "$W/pg" > "$W/expected-db.txt"
cp -a "$W/che" "$W/expected"

step "server:backup (internal server)" bash -c "'$BIN' server:backup | tee '$W/backup.out'"
ID=$(sed -n 's/^Backup snapshot ID: //p' "$W/backup.out")
step "snapshots" "$BIN" snapshots

echo "==> deleting the whole installation: databases, data, projects, objects"
scripts/pg-cluster.sh stop "$W/pg" >/dev/null
scripts/pg-cluster.sh start "$W/pg" "$PGPORT_FIXED" >/dev/null   # a freshly initialised, empty server
rm -rf "$W/che/data" "$W/che/projects" "$W/che/objects"
if cmp -s <(scripts/pg-cluster.sh checksum "$W/pg") "$W/expected-db.txt"; then echo "demo: deletion failed" >&2; exit 1; fi

step "server:restore --batch" "$BIN" server:restore --batch
step "verify databases" bash -c "scripts/pg-cluster.sh checksum '$W/pg' | diff '$W/expected-db.txt' - && echo 'databases: identical (rows, checksums, owners, sequences, indexes, roles)'"
step "verify Che data, projects, objects" bash -c "for d in data projects objects; do python3 scripts/compare-trees.py '$W/expected/'\$d '$W/che/'\$d || exit 1; done"

echo
echo "Snapshot $ID restored and verified."
print_steps
echo "demo: OK — the installation came back exactly"
