#!/usr/bin/env bash
# Self-check of tests/kube/apiserver.py with the real kubectl (and curl for what kubectl hides).
# Starts the fixture with --token, --tls-dir, --state and --kubeconfig on a free loopback port,
# exits non-zero on the first failed check, and always stops its server.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
venv=${CHEBACKUP_VENV:-/opt/chebackup-venv}
py=python3
[ -x "$venv/bin/python" ] && py="$venv/bin/python"
command -v kubectl >/dev/null || { echo "test_apiserver: kubectl not found" >&2; exit 1; }

tmp=$(mktemp -d)
pid=
cleanup() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then kill "$pid"; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT

port=$("$py" "$root/scripts/free-port.py")
token=test-token-$RANDOM$RANDOM
kc=$tmp/kubeconfig
export KUBECACHEDIR=$tmp/kube-cache          # discovery cache per run: ports get reused
url=https://127.0.0.1:$port

start() {
  : >"$tmp/out"
  "$py" "$here/apiserver.py" --port "$port" --token "$token" --tls-dir "$tmp/tls" --state "$tmp/state.json" \
    --kubeconfig "$kc" --pid-file "$tmp/pid" --bookmark-interval 1 >"$tmp/out" 2>>"$tmp/err" &
  pid=$!
  for _ in $(seq 100); do
    grep -q "^apiserver: listening on $url\$" "$tmp/out" && return 0
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  echo "test_apiserver: the server did not start" >&2; cat "$tmp/out" "$tmp/err" >&2; exit 1
}

n=0
ok() { n=$((n + 1)); echo "ok $n - $*"; }
fail() { echo "FAIL - $*" >&2; [ -s "$tmp/err" ] && { echo "--- server stderr:" >&2; cat "$tmp/err" >&2; }; exit 1; }
k() { kubectl --kubeconfig "$kc" "$@"; }
expect() { # expect DESCRIPTION WANT GOT
  [ "$3" = "$2" ] || fail "$1: wanted '$2', got '$3'"
  ok "$1"
}
api() { curl -sS --cacert "$tmp/tls/ca.crt" -H "Authorization: Bearer $token" "$@"; }
hook() { curl -sS --cacert "$tmp/tls/ca.crt" -X POST "$url$1" >/dev/null; }

start
ok "server ready: $(cat "$tmp/out")"

k apply --validate=false -f "$root/manifests/crds/" >/dev/null
expect "CRDs from manifests/crds applied" 4 "$(k get crd -o name | grep -c org.eclipse.che)"

cat >"$tmp/objects.yaml" <<'EOF'
apiVersion: v1
kind: Secret
metadata:
  name: che-secret
  labels: {app.kubernetes.io/part-of: che.eclipse.org}
stringData: {password: hunter2}
---
apiVersion: v1
kind: Secret
metadata: {name: other-secret}
stringData: {password: other}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings}
data: {mode: "one"}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: che-server}
spec:
  replicas: 2
  selector: {matchLabels: {app: che}}
  template:
    metadata: {labels: {app: che}}
    spec:
      containers: [{name: che, image: quay.io/eclipse/che-server:next}]
---
apiVersion: org.eclipse.che/v1
kind: CheClusterBackup
metadata: {name: backup-1}
spec: {useInternalBackupServer: true}
EOF
k apply --validate=false -f "$tmp/objects.yaml" >"$tmp/apply.out"
expect "apply creates 5 objects" 5 "$(grep -c created "$tmp/apply.out")"
sed -i 's/mode: "one"/mode: "two"/' "$tmp/objects.yaml"
k apply --validate=false -f "$tmp/objects.yaml" >"$tmp/apply.out"
expect "second apply updates the changed ConfigMap" "configmap/settings configured" "$(grep settings "$tmp/apply.out")"
expect "ConfigMap data after the update" two "$(k get configmap settings -o jsonpath='{.data.mode}')"

yaml=$(k get secret che-secret -o yaml)
for field in uid resourceVersion creationTimestamp; do
  grep -q "^  $field: " <<<"$yaml" || fail "get -o yaml has no metadata.$field"
done
ok "get -o yaml shows uid, resourceVersion and creationTimestamp"
expect "stringData stored as base64 data" "$(printf hunter2 | base64)" "$(k get secret che-secret -o jsonpath='{.data.password}')"

expect "get checlusterbackup NAME -o jsonpath" true "$(k get checlusterbackup backup-1 -o jsonpath='{.spec.useInternalBackupServer}')"
expect "short name chebackup" backup-1 "$(k get chebackup -o jsonpath='{.items[0].metadata.name}')"

gen=$(k get checlusterbackup backup-1 -o jsonpath='{.metadata.generation}')
k patch checlusterbackup backup-1 --subresource=status --type=merge \
  -p '{"status":{"state":"Succeeded"},"spec":{"useInternalBackupServer":false}}' >/dev/null
expect "status patch sets status" Succeeded "$(k get checlusterbackup backup-1 -o jsonpath='{.status.state}')"
expect "status patch leaves spec and generation" "true $gen" \
  "$(k get checlusterbackup backup-1 -o jsonpath='{.spec.useInternalBackupServer} {.metadata.generation}')"

k patch checlusterbackup backup-1 --type=merge -p '{"spec":{"backupServerConfigRef":"s3"},"status":{"state":"Failed"}}' >/dev/null
expect "spec patch changes spec, bumps generation, keeps status" "s3 $((gen + 1)) Succeeded" \
  "$(k get checlusterbackup backup-1 -o jsonpath='{.spec.backupServerConfigRef} {.metadata.generation} {.status.state}')"

k wait --for=jsonpath='{.status.state}'=Succeeded checlusterbackup/backup-1 --timeout=10s >/dev/null
ok "wait --for=jsonpath on the status"

k scale deployment che-server --replicas=0 >/dev/null
expect "scale deployment --replicas=0" 0 "$(k get deployment che-server -o jsonpath='{.spec.replicas}')"

expect "label selector filters secrets" che-secret \
  "$(k get secrets -l app.kubernetes.io/part-of=che.eclipse.org -o jsonpath='{.items[*].metadata.name}')"
expect "set-based label selector" other-secret \
  "$(k get secrets -l '!app.kubernetes.io/part-of' -o jsonpath='{.items[*].metadata.name}')"
expect "field selector" settings "$(k get configmaps --field-selector metadata.name=settings -o name | cut -d/ -f2)"

k delete configmap settings >/dev/null
k get configmap settings >/dev/null 2>"$tmp/get.err" && fail "deleted ConfigMap is still there"
grep -q NotFound "$tmp/get.err" || fail "no NotFound after delete: $(cat "$tmp/get.err")"
ok "delete, then get answers NotFound"

kubectl --kubeconfig "$kc" --token wrong get secrets >/dev/null 2>"$tmp/auth.err" && fail "wrong token accepted"
grep -q Unauthorized "$tmp/auth.err" || fail "wrong token: $(cat "$tmp/auth.err")"
ok "wrong token: $(head -1 "$tmp/auth.err")"

# curl: optimistic concurrency, watches, fault hooks
cm_url=$url/api/v1/namespaces/eclipse-che/configmaps
api -X POST -H 'Content-Type: application/json' -d '{"metadata":{"name":"cas"},"data":{"v":"1"}}' "$cm_url" >/dev/null
rv=$(api "$cm_url/cas" | "$py" -c 'import json,sys; print(json.load(sys.stdin)["metadata"]["resourceVersion"])')
api -X PUT -H 'Content-Type: application/json' -d "{\"metadata\":{\"name\":\"cas\",\"resourceVersion\":\"$rv\"},\"data\":{\"v\":\"2\"}}" "$cm_url/cas" >/dev/null
code=$(api -o "$tmp/put.json" -w '%{http_code}' -X PUT -H 'Content-Type: application/json' \
  -d "{\"metadata\":{\"name\":\"cas\",\"resourceVersion\":\"$rv\"},\"data\":{\"v\":\"3\"}}" "$cm_url/cas")
expect "PUT with a stale resourceVersion" "409 Conflict" "$code $("$py" -c 'import json,sys; print(json.load(open(sys.argv[1]))["reason"])' "$tmp/put.json")"

hook "/_fault/conflict?plural=checlusterbackups&count=1"
k patch checlusterbackup backup-1 --type=merge -p '{"spec":{"useInternalBackupServer":true}}' >/dev/null 2>"$tmp/conflict.err" \
  && fail "injected conflict did not happen"
grep -q Conflict "$tmp/conflict.err" || fail "injected conflict: $(cat "$tmp/conflict.err")"
k patch checlusterbackup backup-1 --type=merge -p '{"spec":{"useInternalBackupServer":true}}' >/dev/null
ok "/_fault/conflict: one 409, then writes go through"

api "$cm_url?watch=true&allowWatchBookmarks=true&timeoutSeconds=3" >"$tmp/bookmarks"
grep -q '"type": "BOOKMARK"' "$tmp/bookmarks" || fail "no BOOKMARK: $(cat "$tmp/bookmarks")"
ok "watch with allowWatchBookmarks sees a BOOKMARK, timeoutSeconds ends it"

api "$cm_url?watch=true&resourceVersion=$rv&timeoutSeconds=1" >"$tmp/resume"
expect "watch from a resourceVersion sends only later events" "MODIFIED" "$("$py" -c '
import json, sys
print(" ".join(json.loads(l)["type"] for l in open(sys.argv[1])))' "$tmp/resume")"

hook /_fault/compact
api "$cm_url?watch=true&resourceVersion=$rv" >"$tmp/expired"
expect "watch from before /_fault/compact" "ERROR 410 Expired" "$("$py" -c '
import json, sys
e = json.loads(open(sys.argv[1]).readline()); print(e["type"], e["object"]["code"], e["object"]["reason"])' "$tmp/expired")"

set +e
api "$cm_url?watch=true" >"$tmp/broken" 2>&1 &
watcher=$!
set -e
sleep 0.5
hook /_fault/break-watches
wait "$watcher" && fail "watch survived /_fault/break-watches"
ok "/_fault/break-watches cuts an open watch: $(tail -1 "$tmp/broken" | cut -c1-60)"

hook "/_fault/fail?count=1&code=503"
k get secrets >/dev/null 2>&1 && k get secrets >/dev/null 2>&1 || true
api "$url/_requests" | "$py" -c '
import json, sys
log = json.load(sys.stdin)
assert any(e["code"] == 503 for e in log), "no 503 in /_requests"
assert any(e["method"] == "PATCH" and e["path"].split("?")[0].endswith("/checlusterbackups/backup-1/status")
           and e["contentType"] == "application/merge-patch+json" for e in log), "no status PATCH in /_requests"' \
  || { api "$url/_requests" >&2; fail "/_requests"; }
ok "/_fault/fail answers 503 once; /_requests shows the status PATCH through /status"

# Restart on the same port and state: objects and the resourceVersion counter survive, watch history does not.
last_rv=$(api "$cm_url" | "$py" -c 'import json,sys; print(json.load(sys.stdin)["metadata"]["resourceVersion"])')
kill -9 "$pid"; wait "$pid" 2>/dev/null || true
start
expect "after a restart the CheClusterBackup is still there" "Succeeded" \
  "$(k get checlusterbackup backup-1 -o jsonpath='{.status.state}')"
expect "after a restart the Secret is still there" che-secret \
  "$(k get secrets -l app.kubernetes.io/part-of=che.eclipse.org -o jsonpath='{.items[*].metadata.name}')"
api "$cm_url?watch=true&resourceVersion=$((last_rv - 1))" >"$tmp/expired2"
grep -q '"code": 410' "$tmp/expired2" || fail "watch from before the restart: $(cat "$tmp/expired2")"
ok "after a restart a watch from an older resourceVersion gets 410"
k create configmap after-restart --from-literal=a=b --dry-run=client -o yaml | k apply --validate=false -f - >/dev/null
new_rv=$(k get configmap after-restart -o jsonpath='{.metadata.resourceVersion}')
[ "$new_rv" -gt "$last_rv" ] || fail "resourceVersion went back after the restart: $new_rv <= $last_rv"
ok "resourceVersion keeps increasing after the restart ($last_rv -> $new_rv)"

echo "PASS: $n checks"
