#!/usr/bin/env bash
# Starts (or stops) the real services the tests use, on free loopback ports, each with its own
# temporary directory, keys and configuration:
#   rclone serve restic  — an independent restic REST server
#   moto_server          — S3, with signature checking switched on (IAM user made with the
#                          first unauthenticated calls)
#   sshd                 — OpenSSH with an ed25519 host key and an ed25519 client key
#
#   scripts/test-services.sh start DIR   # writes DIR/env (export lines) and DIR/pids
#   scripts/test-services.sh stop DIR    # stops them and removes DIR
set -euo pipefail

cmd=${1:?usage: test-services.sh start|stop DIR}
dir=${2:?usage: test-services.sh start|stop DIR}

# shellcheck source=scripts/bench-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/bench-lib.sh"   # free_port

wait_port() {  # wait_port PORT NAME LOG
  for _ in $(seq 1 100); do
    if python3 -c "import socket,sys; s=socket.socket(); s.settimeout(0.2); sys.exit(s.connect_ex(('127.0.0.1',$1)))" 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "test-services: $2 did not start on port $1; its log:" >&2
  tail -n 20 "$3" >&2 || true
  return 1
}

stop() {
  [ -f "$dir/pids" ] && while read -r pid; do kill "$pid" 2>/dev/null || true; done < "$dir/pids"
  sleep 0.2
  [ -f "$dir/pids" ] && while read -r pid; do kill -9 "$pid" 2>/dev/null || true; done < "$dir/pids"
  rm -rf "$dir"
}

if [ "$cmd" = stop ]; then stop; exit 0; fi
[ "$cmd" = start ] || { echo "usage: test-services.sh start|stop DIR" >&2; exit 2; }

mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
: > "$dir/pids"
: > "$dir/env"

# --- rclone serve restic -------------------------------------------------------------------
rport=$(free_port)
mkdir -p "$dir/rclone"
rclone serve restic --addr "127.0.0.1:$rport" "$dir/rclone" > "$dir/rclone.log" 2>&1 &
echo $! >> "$dir/pids"
wait_port "$rport" "rclone serve restic" "$dir/rclone.log"
echo "export CHEBACKUP_TEST_RCLONE_URL=rest:http://127.0.0.1:$rport/" >> "$dir/env"

# --- moto_server with signatures checked ------------------------------------------------------
mport=$(free_port)
INITIAL_NO_AUTH_ACTION_COUNT=3 moto_server -H 127.0.0.1 -p "$mport" > "$dir/moto.log" 2>&1 &
echo $! >> "$dir/pids"
wait_port "$mport" "moto_server" "$dir/moto.log"
python3 - "$mport" > "$dir/moto-keys" <<'PY'
import json, sys, boto3
iam = boto3.client("iam", endpoint_url=f"http://127.0.0.1:{sys.argv[1]}", region_name="us-east-1",
                   aws_access_key_id="bootstrap", aws_secret_access_key="bootstrap")
iam.create_user(UserName="chebackup")
iam.put_user_policy(UserName="chebackup", PolicyName="s3-all", PolicyDocument=json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
key = iam.create_access_key(UserName="chebackup")["AccessKey"]
print(key["AccessKeyId"], key["SecretAccessKey"])
PY
read -r akid secret < "$dir/moto-keys"
{
  echo "export CHEBACKUP_TEST_S3_URL=s3:http://127.0.0.1:$mport"
  echo "export CHEBACKUP_TEST_S3_KEY_ID=$akid"
  echo "export CHEBACKUP_TEST_S3_SECRET=$secret"
} >> "$dir/env"

# --- OpenSSH sshd -------------------------------------------------------------------------------
sport=$(free_port)
mkdir -p "$dir/ssh" /run/sshd
ssh-keygen -q -t ed25519 -N '' -f "$dir/ssh/host_ed25519" -C chebackup-test-host
ssh-keygen -q -t ed25519 -N '' -f "$dir/ssh/client_ed25519" -C chebackup-test-client
cp "$dir/ssh/client_ed25519.pub" "$dir/ssh/authorized_keys"
chmod 600 "$dir/ssh/authorized_keys"
cat > "$dir/ssh/sshd_config" <<CFG
Port $sport
ListenAddress 127.0.0.1
HostKey $dir/ssh/host_ed25519
AuthorizedKeysFile $dir/ssh/authorized_keys
PidFile $dir/ssh/sshd.pid
UsePAM no
StrictModes no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin yes
Subsystem sftp internal-sftp
# The suite opens dozens of sessions at once; sshd's default (MaxStartups 10:30:100) drops
# 30% of unauthenticated connections past 10, which libcurl reports as a lost banner.
MaxStartups 256
CFG
/usr/sbin/sshd -f "$dir/ssh/sshd_config" -D -e > "$dir/sshd.log" 2>&1 &
echo $! >> "$dir/pids"
wait_port "$sport" "sshd" "$dir/sshd.log"
echo "[127.0.0.1]:$sport $(cut -d' ' -f1,2 "$dir/ssh/host_ed25519.pub")" > "$dir/ssh/known_hosts"
fingerprint=$(ssh-keygen -lf "$dir/ssh/host_ed25519.pub" | awk '{print $2}')
mkdir -p "$dir/sftp"
{
  echo "export CHEBACKUP_TEST_SFTP_URL=sftp:$(id -un)@127.0.0.1:$sport/$dir/sftp"
  echo "export CHEBACKUP_TEST_SFTP_DIR=$dir/sftp"
  echo "export CHEBACKUP_TEST_SSH_KEY_FILE=$dir/ssh/client_ed25519"
  echo "export CHEBACKUP_TEST_SSH_KNOWN_HOSTS=$dir/ssh/known_hosts"
  echo "export CHEBACKUP_TEST_SSH_FINGERPRINT=$fingerprint"
} >> "$dir/env"

echo "test-services: rclone :$rport, moto :$mport, sshd :$sport (state in $dir)"
