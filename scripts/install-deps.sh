#!/usr/bin/env bash
# Installs everything che-backup needs to build, test, demo and benchmark. Idempotent: packages
# already present are not touched, and nothing is downloaded when everything is there.
set -euo pipefail

APT_PACKAGES=(
  pkg-config libcurl4-openssl-dev libssl-dev liblz4-dev   # build: libcurl, OpenSSL, liblz4
  postgresql openssh-server rclone restic                  # real services and peers for tests
  time lz4 procps bc pgbackrest openssl util-linux         # benchmarks, demo, TLS test certificates, runuser
)
PIP_PACKAGES=("moto[server]" boto3 cryptography jsonschema pyyaml)

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

if ! command -v moto_server >/dev/null 2>&1 || ! python3 -c "import boto3, cryptography, jsonschema, yaml" 2>/dev/null; then
  echo "install-deps: pip packages: ${PIP_PACKAGES[*]}"
  python3 -m pip install -q "${PIP_PACKAGES[@]}"
fi

command -v swift >/dev/null 2>&1 || { echo "install-deps: swift is not on the PATH (Swift 6 toolchain needed)" >&2; exit 1; }
