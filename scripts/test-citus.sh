#!/usr/bin/env bash
# Runs the citus tests (crates/control/tests/citus.rs) against real Citus on PostgreSQL 15.
# Citus is not packaged for this Debian: install it for PostgreSQL 15 first. Fails, rather
# than passing silently, when the extension is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
control=/usr/share/postgresql/15/extension/citus.control
if [ ! -f "$control" ] || [ ! -f /usr/lib/postgresql/15/lib/citus.so ]; then
  echo "test-citus: the citus extension is not installed for PostgreSQL 15 ($control or citus.so missing)." >&2
  echo "test-citus: install Citus for PostgreSQL 15 (e.g. built from its repository against postgresql-server-dev-15), then run this again." >&2
  exit 1
fi
bash scripts/setup.sh
cargo build --workspace --bins --quiet
exec cargo nextest run -p shardvault-control --features citus-tests --test citus --no-fail-fast "$@"
