#!/usr/bin/env bash
# Installs everything che-backup needs to build, test, demo and benchmark. Idempotent: packages
# already present are not touched, and nothing is downloaded when everything is there.
set -euo pipefail

APT_PACKAGES=(
  pkg-config libcurl4-openssl-dev libssl-dev liblz4-dev   # build: libcurl, OpenSSL, liblz4
  postgresql openssh-server rclone restic                  # real services and peers for tests
  time lz4 procps bc pgbackrest openssl util-linux         # benchmarks, demo, TLS test certificates, runuser
  curl jq                                                  # tests of the API server stand-in, demo-kubernetes
)
PIP_PACKAGES=("moto[server]" boto3 cryptography jsonschema pyyaml kubernetes-validate)   # kubernetes-validate: tests/manifests/validate.py

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: apt packages: ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v moto_server >/dev/null 2>&1 || ! python3 -c "import boto3, cryptography, jsonschema, yaml, kubernetes_validate" 2>/dev/null; then
  echo "install-deps: pip packages: ${PIP_PACKAGES[*]}"
  python3 -m pip install -q "${PIP_PACKAGES[@]}"
fi

command -v swift >/dev/null 2>&1 || { echo "install-deps: swift is not on the PATH (Swift 6 toolchain needed)" >&2; exit 1; }

# The Kubernetes API stand-in for tests (tests/kube/apiserver.py) runs on PyPI kmock in a venv:
#   "$VENV/bin/python" tests/kube/apiserver.py ...   and tests/kube/test_apiserver.sh needs kubectl.
VENV=${CHEBACKUP_VENV:-/opt/chebackup-venv}
in_venv_dir() { if [ -w "$(dirname "$VENV")" ] || [ -w "$VENV" ]; then "$@"; else as_root "$@"; fi; }
if [ ! -x "$VENV/bin/python" ]; then
  python3 -c 'import ensurepip' 2>/dev/null ||
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
  echo "install-deps: python venv at $VENV"
  in_venv_dir python3 -m venv --system-site-packages "$VENV"
fi
if ! "$VENV/bin/python" -c 'import kmock' 2>/dev/null; then
  echo "install-deps: pip packages in $VENV: kmock==0.8 aiohttp"
  in_venv_dir "$VENV/bin/python" -m pip install -q kmock==0.8 aiohttp
fi
if ! command -v kubectl >/dev/null 2>&1; then
  kubectl_policy=$(apt-cache policy kubectl 2>/dev/null || true)
  if grep -q 'Candidate: [0-9]' <<<"$kubectl_policy"; then
    echo "install-deps: apt package: kubectl"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends kubectl >/dev/null
  else
    echo "install-deps: kubectl is missing and no apt source offers it; install kubectl 1.32 by hand" \
         "(tests/kube/test_apiserver.sh and the Kubernetes tests need it)" >&2
  fi
fi
