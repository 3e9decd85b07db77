#!/usr/bin/env bash
# Volume snapshot benchmark, run by hand (never by the tests), as root:
#   cargo build --release -p shardvault-cli && bash bench/snapshot_bench.sh
# On a loop-mounted btrfs image, one ddp cluster (coordinator + 1 shard) whose shard holds
# about SIZE_MB of table data; in one run, on the same data, it takes
#   a snapshot backup   (backups[0]: useVolumeSnapshot, volumeSnapshotClass btrfs)
#   a streamed backup   (backups[1]: the same storage kind, lz4)
# and restores each into a new cluster, and prints a Markdown table: backup duration (from
# the SGShardedBackup's own timing), the barrier's write pause, the time from apply to a
# Ready restored cluster, and bytes in storage.
# Settings: SIZE_MB (default 2048), ROOT (work dir, wiped), BIN (default target/release/shardvault).
set -euo pipefail

SIZE_MB=${SIZE_MB:-2048}
ROOT=${ROOT:-/var/tmp/sv-snapbench}
REPO_DIR=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN:-$REPO_DIR/target/release/shardvault}
IMG_GB=$((SIZE_MB * 5 / 1024 + 4))

[ "$(id -u)" = 0 ] || { echo "run as root (it mounts a btrfs image)"; exit 1; }
[ -x "$BIN" ] || { echo "$BIN missing: cargo build --release -p shardvault-cli"; exit 1; }
command -v mkfs.btrfs >/dev/null || { echo "mkfs.btrfs missing: bash scripts/setup.sh"; exit 1; }

log() { echo "== $*" >&2; }
MNT=$ROOT/mnt
export SHARDVAULT_HOME=$MNT/state
sv() { "$BIN" "$@"; }

# Deletes the clusters (their servers outlive the daemon), stops the daemon and unmounts the
# image.
cleanup() {
  for c in bench from-snap from-streamed; do
    sv delete sgshardedcluster "$c" --wait >/dev/null 2>&1 || true
  done
  sv down >/dev/null 2>&1 || true
  for _ in $(seq 60); do
    mountpoint -q "$MNT" || return 0
    umount "$MNT" 2>/dev/null && return 0
    sleep 0.5
  done
  echo "$MNT is still mounted: umount it by hand" >&2
  return 1
}
if mountpoint -q "$MNT" 2>/dev/null; then cleanup; fi
rm -rf "$ROOT"
mkdir -p "$MNT"
trap cleanup EXIT
truncate -s "${IMG_GB}G" "$ROOT/btrfs.img"
mkfs.btrfs -q "$ROOT/btrfs.img"
mount -o loop "$ROOT/btrfs.img" "$MNT"
sv up >/dev/null

# cluster NAME: the ddp cluster spec (coordinator + 1 shard), without its last section.
cluster() {
  cat <<EOF
apiVersion: stackgres.io/v1alpha1
kind: SGShardedCluster
metadata:
  name: $1
spec:
  type: ddp
  database: bench
  postgres:
    version: '15'
  coordinator:
    instances: 1
  shards:
    clusters: 1
    instancesPerCluster: 1
EOF
}

cat > "$ROOT/cluster.yaml" <<EOF
apiVersion: stackgres.io/v1beta1
kind: SGObjectStorage
metadata:
  name: snaps
spec:
  type: filesystem
  filesystem:
    path: $MNT/objects-snap
---
apiVersion: stackgres.io/v1beta1
kind: SGObjectStorage
metadata:
  name: streamed
spec:
  type: filesystem
  filesystem:
    path: $MNT/objects-streamed
---
$(cluster bench)
  configurations:
    backups:
      - sgObjectStorage: snaps
        useVolumeSnapshot: true
        volumeSnapshotClass: btrfs
        fastVolumeSnapshot: true
      - sgObjectStorage: streamed
        compression: lz4
EOF
sv apply -f "$ROOT/cluster.yaml" >/dev/null
sv wait sgshardedcluster/bench --for=condition=Ready --timeout 300s >/dev/null

ROWS=$((SIZE_MB * 1024 * 1024 / 120))
log "loading $ROWS rows (~$SIZE_MB MiB) into the shard"
sv psql bench --shard 0 -- -q -c "CREATE TABLE t (id bigint, n numeric, s text)" \
  -c "INSERT INTO t SELECT g, g * 1.5, md5(g::text) || md5((g + 1)::text) FROM generate_series(1, $ROWS) g" \
  -c "CHECKPOINT" >/dev/null
SIZE=$(sv psql bench --shard 0 -- -At -c "SELECT pg_database_size('bench') / 1048576")
log "shard database: $SIZE MiB"

# backup NAME ENTRY: applies a sharded backup to entry ENTRY and waits until it completes.
backup() {
  sv apply -f - >/dev/null <<EOF
apiVersion: stackgres.io/v1
kind: SGShardedBackup
metadata:
  name: $1
  annotations:
    shardvault.io/backup-entry: "$2"
spec:
  sgShardedCluster: bench
EOF
  sv wait "sgshardedbackup/$1" --for=jsonpath='{.status.process.status}'=Completed --timeout 1h >/dev/null
}

# restore NAME BACKUP: applies a cluster restored from BACKUP; prints seconds to Ready.
restore() {
  local t0 t1
  t0=$(date +%s.%N)
  sv apply -f - >/dev/null <<EOF
$(cluster "$1")
  initialData:
    restore:
      fromBackup:
        name: $2
EOF
  sv wait "sgshardedcluster/$1" --for=condition=Ready --timeout 1h >/dev/null
  t1=$(date +%s.%N)
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }'
}

# field BACKUP PATH: a status field of a sharded backup (PATH: Python subscripts).
field() {
  sv get sgshardedbackup "$1" -o json | python3 -c "import json, sys; o = json.load(sys.stdin); print(o$2)"
}
took() {
  sv get sgshardedbackup "$1" -o json | python3 -c "
import json, sys
from datetime import datetime
t = json.load(sys.stdin)['status']['process']['timing']
f = lambda s: datetime.fromisoformat(s[:26].rstrip('Z') if '.' in s else s.rstrip('Z'))
print('%.2f' % (f(t['end']) - f(t['start'])).total_seconds())"
}

log "snapshot backup"
backup snap 0
log "streamed backup"
backup streamed 1
log "restore of the snapshot backup"
R_SNAP=$(restore from-snap snap)
log "restore of the streamed backup"
R_STREAM=$(restore from-streamed streamed)

count() { sv psql "$1" --shard 0 -- -At -c "SELECT count(*) FROM t"; }
[ "$(count from-snap)" = "$ROWS" ] && [ "$(count from-streamed)" = "$ROWS" ] \
  || { echo "a restore does not hold all $ROWS rows"; exit 1; }

echo
echo "Shard database $SIZE MiB on btrfs (loop image on the host disk), $(nproc) cores,"
echo "load average $(cut -d' ' -f1-3 /proc/loadavg) at the end."
echo
echo "| backup | took s | write pause ms | restore to Ready s | in storage MiB (with WAL) |"
echo "|---|---|---|---|---|"
for b in snap streamed; do
  case $b in snap) r=$R_SNAP; dir=$MNT/objects-snap ;; *) r=$R_STREAM; dir=$MNT/objects-streamed ;; esac
  echo "| $b | $(took $b) | $(field $b "['status']['restorePoint']['writePauseMs']") | $r | $(($(du -sb "$dir" | cut -f1) / 1048576)) |"
done
