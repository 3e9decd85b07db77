#!/usr/bin/env bash
# Runs the whole shardvault journey on the embedded default: a sharded cluster, a sharded
# backup, more writes, restores to the restore point and to a timestamp, all verified.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release -p shardvault-cli --quiet
exec target/release/shardvault demo "$@"
