#!/usr/bin/env bash
# Installs what shardvault needs on a Debian machine: PostgreSQL 15 server binaries
# (Debian's packages) and the Rust test runner. Safe to run again.
set -euo pipefail
need_apt=()
[ -x /usr/lib/postgresql/15/bin/postgres ] || need_apt+=(postgresql-15 postgresql-client-15)
[ -f /usr/share/postgresql/15/extension/postgres_fdw.control ] || need_apt+=(postgresql-contrib)
if [ "${#need_apt[@]}" -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_apt[@]}"
fi
id postgres >/dev/null 2>&1 || { echo "setup: the postgres user is missing after installing PostgreSQL" >&2; exit 1; }
if ! command -v cargo-nextest >/dev/null 2>&1; then
  cargo install --locked cargo-nextest
fi
