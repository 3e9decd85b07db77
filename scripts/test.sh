#!/usr/bin/env bash
# Runs every test of the workspace against real PostgreSQL servers and real files.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --workspace --bins --quiet
exec cargo nextest run --workspace --no-fail-fast "$@"
