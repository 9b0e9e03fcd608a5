#!/usr/bin/env bash
# shellcheck disable=SC2317  # the functions run through step() and trap look unreachable to it
# The main job in Kubernetes mode, through the API server stand-in (tests/kube/apiserver.py, on
# kmock) and the real kubectl: a Che installation "in a cluster" (PostgreSQL 15 with dbche and
# keycloak, a Che server data directory and workspace /projects served by the two agents as
# processes on loopback, whose Pods in the API carry podIP 127.0.0.1 and their port; Che's
# CheCluster, labelled Secret and ConfigMap, and its server Deployment), a backup server
# (`chebackup rest-server`) and two controllers (`chebackup controller --kubeconfig`, one
# leader). Back up with `kubectl apply -f` of a CheClusterBackup, delete the installation, restore
# with a CheClusterRestore, and verify that everything came back exactly. This script plays the
# Deployment controller (nothing else runs pods or sets Deployment status here).
#
# What this cannot prove (it is not a real cluster): the real watch cache's timing, CRD
# validation and pruning, admission webhooks, RBAC enforcement, garbage collection, rollouts.
# Prints the snapshot id and the timings; leaves nothing running.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${CHEBACKUP:-.build-release/release/chebackup}
AGENT=${CHEBACKUP_AGENT:-$(dirname "$BIN")/chebackup-agent}
VENV=${CHEBACKUP_VENV:-/opt/chebackup-venv}
PY=$VENV/bin/python
SIZE=${DEMO_SIZE_MIB:-128}
NS=eclipse-che
die() { echo "demo-kubernetes: $*" >&2; exit 1; }
if [ ! -x "$BIN" ] || [ ! -x "$AGENT" ]; then die "$BIN or $AGENT is missing: run 'make demo-kubernetes'"; fi
if [ ! -x "$PY" ] || ! "$PY" -c 'import kmock' 2>/dev/null; then die "no kmock in $VENV: run scripts/install-deps.sh"; fi
for tool in kubectl jq curl bc; do command -v "$tool" >/dev/null || die "$tool is not on PATH: run scripts/install-deps.sh"; done

W=$(mktemp -d /tmp/chebackup-demo-kubernetes.XXXXXX)
chmod 755 "$W"
PIDS=()            # agents, backup server, controllers: stopped at exit
API_PID=
DEPLOY_PID=
WAITER=            # a running `kubectl wait`
stop_pid() { # SIGTERM, then SIGKILL after 5 s; reaps it
  kill "$1" 2>/dev/null || return 0
  for _ in $(seq 50); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}
cleanup() {
  local rc=$? pid
  for pid in ${WAITER:+"$WAITER"} ${DEPLOY_PID:+"$DEPLOY_PID"} "${PIDS[@]}" ${API_PID:+"$API_PID"}; do stop_pid "$pid"; done
  scripts/pg-cluster.sh stop "$W/pg" >/dev/null 2>&1 || true
  if [ "$rc" -ne 0 ] && [ -z "${KEEP:-}" ]; then echo "demo-kubernetes: FAILED (set KEEP=1 to keep $W)" >&2; fi
  if [ -z "${KEEP:-}" ]; then rm -rf "$W"; fi
}
trap cleanup EXIT
# shellcheck source=scripts/bench-lib.sh
source scripts/bench-lib.sh   # free_port, step, print_steps
wait_port() { # wait_port PORT WHAT
  for _ in $(seq 200); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  echo "demo-kubernetes: $2 did not listen on 127.0.0.1:$1" >&2; exit 1
}


# --- 1. the API server stand-in, with a token over TLS ------------------------------------------
TOKEN=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
KC=$W/kubeconfig
export KUBECONFIG=$KC KUBECACHEDIR=$W/kube-cache   # kubectl's discovery cache is keyed by host:port
"$PY" tests/kube/apiserver.py --port 0 --token "$TOKEN" --tls-dir "$W/tls" --state "$W/apiserver-state.json" \
  --kubeconfig "$KC" --namespace "$NS" > "$W/apiserver.out" 2> "$W/apiserver.log" &
API_PID=$!
for _ in $(seq 200); do
  grep -q '^apiserver: listening on ' "$W/apiserver.out" && break
  kill -0 "$API_PID" 2>/dev/null || { cat "$W/apiserver.out" "$W/apiserver.log" >&2; exit 1; }
  sleep 0.1
done
grep -q '^apiserver: listening on https://' "$W/apiserver.out" || { echo "demo-kubernetes: the API server stand-in did not start" >&2; cat "$W/apiserver.log" >&2; exit 1; }
API_URL=$(sed -n 's/^apiserver: listening on //p' "$W/apiserver.out")
echo "==> API server stand-in (kmock) at $API_URL, kubeconfig $KC"

# --- 2. the CRDs ---------------------------------------------------------------------------------
kubectl apply --validate=false -f manifests/crds/

# --- 3. PostgreSQL, the two agents, the backup server --------------------------------------------
echo "==> setting up Che's data in $W"
scripts/pg-cluster.sh start "$W/pg" >/dev/null
PGPORT_FIXED=$(sed -n 's/^export PGPORT=//p' "$W/pg/env")
scripts/pg-cluster.sh seed "$W/pg" >/dev/null
python3 scripts/gen-corpus.py "$W/che/data" --size-mib "$SIZE" --seed 3 >/dev/null
python3 scripts/gen-corpus.py "$W/che/projects" --size-mib $((SIZE / 4)) --seed 4 >/dev/null
AGENT_TOKEN=$(python3 -c 'import secrets; print(secrets.token_hex(32))')   # 32 random bytes, hex
printf '%s' "$AGENT_TOKEN" > "$W/agent-token"; chmod 600 "$W/agent-token"
REPO_PASSWORD=$(python3 -c 'import secrets; print(secrets.token_hex(16))')

PG_AGENT_PORT=$(free_port); FILES_AGENT_PORT=$(free_port); SERVER_PORT=$(free_port)
# shellcheck disable=SC1091
(source "$W/pg/env"; exec "$AGENT" --role postgres --listen "127.0.0.1:$PG_AGENT_PORT" --token-file "$W/agent-token" \
  --database dbche --database keycloak) > "$W/postgres-agent.log" 2>&1 &
PIDS+=("$!")
"$AGENT" --role files --listen "127.0.0.1:$FILES_AGENT_PORT" --token-file "$W/agent-token" \
  --dir "che-data=$W/che/data" --dir "projects=$W/che/projects" > "$W/files-agent.log" 2>&1 &
PIDS+=("$!")
mkdir -p "$W/backup-server"
"$BIN" rest-server --path "$W/backup-server" --listen "127.0.0.1:$SERVER_PORT" > "$W/rest-server.log" 2>&1 &
PIDS+=("$!")
wait_port "$PG_AGENT_PORT" "the postgres agent"
wait_port "$FILES_AGENT_PORT" "the files agent"
wait_port "$SERVER_PORT" "the backup server"

# --- 4. the "cluster": token, backup server configuration, Che's objects, Deployment, agent Pods ---
# The same installation the Swift tests use (tests/kube/che-installation.yaml), its placeholders filled in.
AGENT_TOKEN=$AGENT_TOKEN REPO_PASSWORD=$REPO_PASSWORD SERVER_PORT=$SERVER_PORT DOMAIN=che.example.com \
  PG_AGENT_PORT=$PG_AGENT_PORT FILES_AGENT_PORT=$FILES_AGENT_PORT python3 -c \
  'import os, string, sys; sys.stdout.write(string.Template(open(sys.argv[1]).read()).substitute(os.environ))' \
  tests/kube/che-installation.yaml | kubectl apply --validate=false -f -
set_status() { kubectl patch "$1" "$2" --subresource=status --type=merge -p "{\"status\": $3}" >/dev/null; }
set_status checlusters eclipse-che '{"cheVersion": "7.99.0", "cheURL": "https://che.example.com"}'
set_status deployments che "{\"observedGeneration\": $(kubectl get deployment che -o 'jsonpath={.metadata.generation}'), \"replicas\": 1, \"availableReplicas\": 1, \"readyReplicas\": 1, \"conditions\": [{\"type\": \"Available\", \"status\": \"True\"}]}"
for pod in postgres-agent files-agent; do
  set_status pods "$pod" '{"phase": "Running", "podIP": "127.0.0.1", "conditions": [{"type": "Ready", "status": "True"}]}'
done
kubectl get pods -l chebackup.eclipse.org/agent \
  -o 'custom-columns=POD:.metadata.name,ROLE:.metadata.labels.chebackup\.eclipse\.org/agent,IP:.status.podIP,PORT:.spec.containers[1].ports[0].containerPort,READY:.status.conditions[0].status'

# --- 5. the Deployment controller's part: status follows spec (observedGeneration, replicas) -----
play_deployment_controller() {
  trap 'exit 0' TERM
  local want gen seen out
  while true; do
    sleep 0.5
    out=$(kubectl get deployment che -o 'jsonpath={.spec.replicas} {.metadata.generation} {.status.observedGeneration}' 2>/dev/null) || continue
    read -r want gen seen <<< "$out"
    if [ -n "$gen" ] && [ "$gen" != "${seen:-}" ]; then
      echo "deployment controller: che generation $gen has $want replicas"
      set_status deployments che "{\"observedGeneration\": $gen, \"replicas\": $want, \"availableReplicas\": $want, \"readyReplicas\": $want, \"conditions\": [{\"type\": \"Available\", \"status\": \"True\"}]}" || true
    fi
  done
}
play_deployment_controller > "$W/deployment-controller.log" 2>&1 &
DEPLOY_PID=$!

# What must come back.
scripts/pg-cluster.sh checksum "$W/pg" > "$W/expected-db.txt"
cp -a "$W/che" "$W/expected"
kubectl get secret che-db -o json | jq -S .data > "$W/expected-secret.json"
kubectl get configmap che -o json | jq -S .data > "$W/expected-configmap.json"
kubectl get checluster eclipse-che -o json | jq -S .spec > "$W/expected-checluster.json"

# --- 6. two controllers, one leader --------------------------------------------------------------
start_controller() {
  "$BIN" controller --kubeconfig "$KC" -n "$NS" --identity "$1" --lease-duration 5s -v > "$W/controller-$1.log" 2>&1 &
  PIDS+=("$!")
}
show_logs() {
  for f in "$W"/controller-*.log "$W"/postgres-agent.log "$W"/files-agent.log "$W"/rest-server.log "$W"/deployment-controller.log; do
    [ -f "$f" ] || continue
    echo "--- $(basename "$f") (last 40 lines)" >&2
    tail -n 40 "$f" >&2
  done
}
holder() { kubectl get lease che-backup-controller -o 'jsonpath={.spec.holderIdentity}' 2>/dev/null || true; }
lead() {
  start_controller A
  for _ in $(seq 150); do [ "$(holder)" = A ] && break; sleep 0.2; done
  [ "$(holder)" = A ] || { echo "demo-kubernetes: controller A did not take the Lease che-backup-controller" >&2; show_logs; exit 1; }
  start_controller B
  sleep 1
  echo "Lease che-backup-controller held by: $(holder) (controllers A and B running)"
}
step "two controllers, leader election" lead

# Waits until a CheClusterBackup/Restore is Succeeded (kubectl wait); stops at once if it Failed.
wait_succeeded() { # wait_succeeded KIND NAME
  kubectl wait --for=jsonpath='{.status.state}'=Succeeded "$1/$2" --timeout=300s &
  WAITER=$!
  local waiter=$WAITER state
  while kill -0 "$waiter" 2>/dev/null; do
    state=$(kubectl get "$1" "$2" -o 'jsonpath={.status.state}' 2>/dev/null || true)
    if [ "$state" = Failed ]; then
      echo "demo-kubernetes: $1 $2 Failed:" >&2
      kubectl get "$1" "$2" -o yaml >&2
      show_logs; exit 1
    fi
    sleep 1
  done
  WAITER=
  if ! wait "$waiter"; then
    echo "demo-kubernetes: $1 $2 did not succeed within 300 s:" >&2
    kubectl get "$1" "$2" -o yaml >&2 || true
    show_logs; exit 1
  fi
}

OP_COLUMNS='custom-columns=NAME:.metadata.name,STATE:.status.state,STAGE:.status.stage,SNAPSHOT:.status.snapshotId'

# --- 7. the backup -------------------------------------------------------------------------------
backup() {
  kubectl apply --validate=false -f - <<'YAML'
apiVersion: org.eclipse.che/v1
kind: CheClusterBackup
metadata: {name: nightly}
spec: {backupServerConfigRef: rest-server}
YAML
  wait_succeeded checlusterbackup nightly
}
step "CheClusterBackup nightly" backup
ID=$(kubectl get checlusterbackup nightly -o 'jsonpath={.status.snapshotId}')
echo "Backup snapshot ID: $ID"
kubectl get checlusterbackups
# The stand-in serves no server-side Table, so kubectl shows NAME and AGE only; the CRD's columns:
kubectl get checlusterbackups -o "$OP_COLUMNS"

# --- 8. delete the installation ------------------------------------------------------------------
echo "==> deleting the installation: CheCluster, Che's Secret and ConfigMap, databases, data, projects"
kubectl delete checluster eclipse-che
kubectl delete secret che-db
kubectl delete configmap che
scripts/pg-cluster.sh stop "$W/pg" >/dev/null
scripts/pg-cluster.sh start "$W/pg" "$PGPORT_FIXED" >/dev/null   # a freshly initialised, empty server
rm -rf "$W/che/data" "$W/che/projects"
if cmp -s <(scripts/pg-cluster.sh checksum "$W/pg") "$W/expected-db.txt"; then echo "demo-kubernetes: deletion failed" >&2; exit 1; fi
if kubectl get checluster eclipse-che >/dev/null 2>&1; then echo "demo-kubernetes: the CheCluster is still there" >&2; exit 1; fi

# --- 9. the restore ------------------------------------------------------------------------------
restore() {
  kubectl apply --validate=false -f - <<'YAML'
apiVersion: org.eclipse.che/v1
kind: CheClusterRestore
metadata: {name: back}
spec: {backupServerConfigRef: rest-server}
YAML
  wait_succeeded checlusterrestore back
}
step "CheClusterRestore back" restore
kubectl get checlusterrestores -o "$OP_COLUMNS"
RESTORED=$(kubectl get checlusterrestore back -o 'jsonpath={.status.snapshotId}')
[ "$RESTORED" = "$ID" ] || { echo "demo-kubernetes: restored snapshot $RESTORED, not $ID" >&2; exit 1; }

# --- 10. verify ----------------------------------------------------------------------------------
verify_objects() {
  same() { # same WHAT EXPECTED ACTUAL-JSON
    if diff <(jq -S . "$2") <(printf '%s' "$3" | jq -S .) >/dev/null; then echo "$1: identical"; else
      echo "demo-kubernetes: $1 differs:" >&2; diff <(jq -S . "$2") <(printf '%s' "$3" | jq -S .) >&2; return 1; fi
  }
  same "Secret che-db data" "$W/expected-secret.json" "$(kubectl get secret che-db -o json | jq .data)"
  same "ConfigMap che data" "$W/expected-configmap.json" "$(kubectl get configmap che -o json | jq .data)"
  same "CheCluster eclipse-che spec" "$W/expected-checluster.json" "$(kubectl get checluster eclipse-che -o json | jq .spec)"
  local replicas
  replicas=$(kubectl get deployment che -o 'jsonpath={.spec.replicas}')
  [ "$replicas" = 1 ] || { echo "demo-kubernetes: Che's Deployment has $replicas replicas after the restore, not 1" >&2; return 1; }
  local scales   # the replicas of each write to deployments/che/scale, from the stand-in's request log
  scales=$(curl -sS --cacert "$W/tls/ca.crt" "$API_URL/_requests" |
    jq -c '[.[] | select((.path | test("/deployments/che/scale")) and (.method == "PATCH" or .method == "PUT")) | .body.spec.replicas]')
  [ "$(jq '.[0] == 0 and .[-1] == 1' <<<"$scales")" = true ] ||
    { echo "demo-kubernetes: Che's Deployment was scaled $scales, not to 0 and back to 1" >&2; return 1; }
  echo "Deployment che: scaled to 0 during the restore, back to 1 and Available"
}
verify_events() {
  kubectl get events -o 'custom-columns=OBJECT:.involvedObject.name,TYPE:.type,REASON:.reason,MESSAGE:.message'
  local reasons want
  reasons=$(kubectl get events -o json | jq -r '[.items[] | select(.involvedObject.name == "nightly" or .involvedObject.name == "back") | .reason] | unique | join(" ")')
  for want in BackupStarted BackupSucceeded RestoreStarted RestoreSucceeded; do
    grep -qw "$want" <<<"$reasons" || { echo "demo-kubernetes: no $want event (events: $reasons)" >&2; return 1; }
  done
  echo "events: $reasons"
}
step "verify databases" bash -c "scripts/pg-cluster.sh checksum '$W/pg' | diff '$W/expected-db.txt' - && echo 'databases: identical (rows, checksums, owners, sequences, indexes, roles)'"
step "verify Che data, projects" bash -c "for d in data projects; do python3 scripts/compare-trees.py '$W/expected/'\$d '$W/che/'\$d || exit 1; done"
step "verify Che's objects" verify_objects
step "verify events" verify_events

echo
echo "Snapshot $ID restored and verified (API server stand-in on kmock, real kubectl; not a real cluster)."
print_steps
echo "demo-kubernetes: OK"
