#!/usr/bin/env bash
# Node engine benchmark, run by hand (never by the tests), as root:
#   cargo build --release -p shardvault-cli && bash bench/node_bench.sh
# Builds one PostgreSQL 15 server with a realistic data set (mixed numeric and text columns,
# three indexes), then, on the same data and in one run, times
#   shardvault node backup / node restore          (lz4, WORKERS workers)
#   pgBackRest backup / restore                     (lz4, --process-max WORKERS)
#   pg_basebackup --compress=client-lz4             (backup only)
# and the median latency of `shardvault wal-push` of a 16 MiB segment; then, for 1% and then
# 10% of the table's pages changed, in the same run,
#   shardvault node backup --incremental            (over the newest backup)
#   pgBackRest backup --type=incr and --type=diff
# a restore of shardvault's newest incremental (a chain of three), five more 1% incrementals
# and a restore of the chain of eight. Prints Markdown tables
# (throughput over the data directory's size, CPU seconds, peak RSS, bytes stored, ratios).
# Settings: SIZE_MB (data set, default 2048), WORKERS (default 2), ROOT (work dir, wiped),
# PORT, BIN (shardvault binary, default target/release/shardvault).
set -euo pipefail

SIZE_MB=${SIZE_MB:-2048}
WORKERS=${WORKERS:-2}
ROOT=${ROOT:-/var/tmp/sv-bench}
PORT=${PORT:-5499}
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
REPO_DIR=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN:-$REPO_DIR/target/release/shardvault}

[ "$(id -u)" = 0 ] || { echo "run as root (servers and tools run as postgres)"; exit 1; }
[ -x "$BIN" ] || { echo "$BIN missing: cargo build --release -p shardvault-cli"; exit 1; }
command -v pgbackrest >/dev/null || { echo "pgbackrest missing: apt-get install pgbackrest"; exit 1; }

AS_PG=(runuser -u postgres --)
as_pg() { "${AS_PG[@]}" "$@"; }
log() { echo "== $*" >&2; }

stop_server() { as_pg "$PGBIN/pg_ctl" -D "$ROOT/data" -m immediate stop >/dev/null 2>&1 || true; }
if [ -d "$ROOT/data" ]; then stop_server; fi
rm -rf "$ROOT"
mkdir -p "$ROOT"
chown postgres: "$ROOT"
cp "$BIN" "$ROOT/shardvault"
BIN=$ROOT/shardvault

# --- configs -------------------------------------------------------------------------------
cat > "$ROOT/node.json" <<EOF
{"member": "bench", "pgBin": "$PGBIN", "pgdata": "$ROOT/data", "host": "$ROOT", "port": $PORT,
 "user": "postgres",
 "destinations": [{"storage": {"type": "filesystem", "path": "$ROOT/sv-repo"}, "prefix": "bench",
   "compression": "lz4",
   "performance": {"uploadDiskConcurrency": $WORKERS, "uploadConcurrency": $WORKERS,
                   "downloadConcurrency": $WORKERS}}]}
EOF
cat > "$ROOT/pgbackrest.conf" <<EOF
[global]
repo1-path=$ROOT/pgbr-repo
compress-type=lz4
process-max=$WORKERS
start-fast=y
log-level-console=warn
log-level-file=off
lock-path=$ROOT/pgbr-lock
spool-path=$ROOT/pgbr-spool

[bench]
pg1-path=$ROOT/data
pg1-port=$PORT
pg1-socket-path=$ROOT
EOF
chown postgres: "$ROOT/node.json" "$ROOT/pgbackrest.conf"
chmod 600 "$ROOT/node.json"
PGBR=(pgbackrest "--config=$ROOT/pgbackrest.conf" --stanza=bench)

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)

# --- server and data -----------------------------------------------------------------------
log "initdb and start (port $PORT)"
as_pg "$PGBIN/initdb" -D "$ROOT/data" -U postgres --no-sync >/dev/null 2>&1
cat >> "$ROOT/data/postgresql.conf" <<EOF
port = $PORT
unix_socket_directories = '$ROOT'
listen_addresses = ''
shared_buffers = 128MB
max_wal_size = 8GB
checkpoint_timeout = 1h
wal_level = replica
archive_mode = on
archive_command = '$BIN wal-push %p --config $ROOT/node.json && pgbackrest --config=$ROOT/pgbackrest.conf --stanza=bench archive-push %p'
EOF
as_pg "$PGBIN/pg_ctl" -D "$ROOT/data" -l "$ROOT/postgres.log" -w start >/dev/null
trap stop_server EXIT
as_pg "${PGBR[@]}" stanza-create
PSQL=("$PGBIN/psql" -h "$ROOT" -p "$PORT" -U postgres -d postgres -qAt -v ON_ERROR_STOP=1)

# About 195 bytes per row with its index entries.
ROWS=$((SIZE_MB * 1024 * 1024 / 195))
BATCH=1000000
log "loading $ROWS rows (~$SIZE_MB MiB with indexes)"
as_pg "${PSQL[@]}" -c "CREATE TABLE facts (id bigint, account int, amount numeric(12,2),
  ratio float8, created timestamptz, status text, note text)"
for ((start = 1; start <= ROWS; start += BATCH)); do
  end=$((start + BATCH - 1 < ROWS ? start + BATCH - 1 : ROWS))
  as_pg "${PSQL[@]}" -c "INSERT INTO facts SELECT g, (random() * 100000)::int,
    round((random() * 10000)::numeric, 2), random(), now() - random() * interval '365 days',
    (ARRAY['new','paid','shipped','returned','cancelled'])[1 + floor(random() * 5)::int],
    md5(random()::text) || ' ' || substr(md5(random()::text), 1, (random() * 32)::int)
    FROM generate_series($start, $end) g"
done
as_pg "${PSQL[@]}" -c "CREATE INDEX ON facts (account)" -c "CREATE INDEX ON facts (created)" \
  -c "CREATE INDEX ON facts (status, amount)" -c "VACUUM ANALYZE facts" -c "CHECKPOINT"
# Let the load's WAL drain to both archives before timing anything.
as_pg "${PSQL[@]}" -c "SELECT pg_switch_wal()" >/dev/null
for _ in $(seq 1 600); do
  ready=$(find "$ROOT/data/pg_wal/archive_status" -name '*.ready' | wc -l)
  [ "$ready" = 0 ] && break
  sleep 1
done
DATA_BYTES=$(du -sb --exclude=pg_wal "$ROOT/data" | cut -f1)
log "data directory: $((DATA_BYTES / 1024 / 1024)) MiB (without pg_wal)"

# --- timing helpers ------------------------------------------------------------------------
declare -A SECS RSS CPU
timed() {
  local label=$1
  shift
  sync
  echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
  log "$label"
  if ! /usr/bin/time -f "%e %M %U %S" -o "$ROOT/time.$label" "$@" > "$ROOT/out.$label" 2>&1; then
    cat "$ROOT/out.$label" >&2
    exit 1
  fi
  local user sys
  read -r SECS[$label] RSS[$label] user sys < "$ROOT/time.$label"
  CPU[$label]=$(awk -v u="$user" -v s="$sys" 'BEGIN { printf "%.1f", u + s }')
}

timed sv_backup "${AS_PG[@]}" "$BIN" node backup --config "$ROOT/node.json" --name bench-1
timed pgbr_backup "${AS_PG[@]}" "${PGBR[@]}" --type=full backup
timed pgbb_backup "${AS_PG[@]}" "$PGBIN/pg_basebackup" -h "$ROOT" -p "$PORT" -U postgres \
  -D "$ROOT/pgbb" -Ft --compress=client-lz4 -X none
as_pg mkdir -m 700 "$ROOT/r-pgbr"
timed sv_restore "${AS_PG[@]}" "$BIN" node restore --config "$ROOT/node.json" --backup bench-1 \
  --pgdata "$ROOT/r-sv" --target-immediate --concurrency "$WORKERS"
timed pgbr_restore "${AS_PG[@]}" "${PGBR[@]}" --pg1-path="$ROOT/r-pgbr" --type=immediate restore

SV_STORED=$(du -sb "$ROOT/sv-repo/bench/basebackups" | cut -f1)
PGBR_STORED=$(du -sb "$ROOT/pgbr-repo/backup" | cut -f1)
PGBB_STORED=$(du -sb "$ROOT/pgbb" | cut -f1)

# --- wal-push latency ----------------------------------------------------------------------
SEG=$(find "$ROOT/data/pg_wal" -maxdepth 1 -regextype posix-extended -regex '.*/[0-9A-F]{24}' | sort | head -1)
mkdir -p "$ROOT/walpush"
for i in $(seq 1 21); do
  cp "$SEG" "$ROOT/walpush/$(printf '0000000900000000%08X' "$i")"
done
chown -R postgres: "$ROOT/walpush"
LAT=()
for f in "$ROOT"/walpush/*; do
  t0=$(date +%s%N)
  as_pg "$BIN" wal-push "$f" --config "$ROOT/node.json"
  t1=$(date +%s%N)
  LAT+=($(((t1 - t0) / 1000000)))
done
WAL_MEDIAN=$(printf '%s\n' "${LAT[@]}" | sort -n | sed -n 11p)

# --- incrementals ------------------------------------------------------------------------
# One row on every Nth page changes: 1% (N=100), then 10% (N=10) of the table's pages.
repo_bytes() { du -sb "$1" | cut -f1; }
declare -A STORED
INCR_STEPS=()
for pct in 1 10; do
  log "changing one row on ${pct}% of the pages"
  as_pg "${PSQL[@]}" -c "UPDATE facts SET ratio = ratio + 1
    WHERE (ctid::text::point)[0]::bigint % $((100 / pct)) = 0 AND (ctid::text::point)[1] = 1" \
    -c "CHECKPOINT"
  before=$(repo_bytes "$ROOT/sv-repo/bench/basebackups")
  timed "sv_incr_$pct" "${AS_PG[@]}" "$BIN" node backup --config "$ROOT/node.json" \
    --name "bench-incr-$pct" --incremental
  STORED[sv_incr_$pct]=$(($(repo_bytes "$ROOT/sv-repo/bench/basebackups") - before))
  for type in incr diff; do
    before=$(repo_bytes "$ROOT/pgbr-repo/backup")
    timed "pgbr_${type}_$pct" "${AS_PG[@]}" "${PGBR[@]}" --type=$type backup
    STORED[pgbr_${type}_$pct]=$(($(repo_bytes "$ROOT/pgbr-repo/backup") - before))
  done
  INCR_STEPS+=("sv_incr_$pct" "pgbr_incr_$pct" "pgbr_diff_$pct")
done
timed sv_restore_chain "${AS_PG[@]}" "$BIN" node restore --config "$ROOT/node.json" \
  --backup bench-incr-10 --pgdata "$ROOT/r-sv-chain" --target-immediate --concurrency "$WORKERS"
# Five more incrementals of 1% each make a chain of eight (the full one and seven).
for n in 3 4 5 6 7; do
  as_pg "${PSQL[@]}" -c "UPDATE facts SET ratio = ratio + 1
    WHERE (ctid::text::point)[0]::bigint % 100 = $n AND (ctid::text::point)[1] = 1" \
    -c "CHECKPOINT"
  timed "sv_incr_chain_$n" "${AS_PG[@]}" "$BIN" node backup --config "$ROOT/node.json" \
    --name "bench-chain-$n" --incremental
done
timed sv_restore_chain8 "${AS_PG[@]}" "$BIN" node restore --config "$ROOT/node.json" \
  --backup bench-chain-7 --pgdata "$ROOT/r-sv-chain8" --target-immediate --concurrency "$WORKERS"

# --- report --------------------------------------------------------------------------------
mib() { awk -v b="$1" 'BEGIN { printf "%.0f", b / 1048576 }'; }
rate() { awk -v b="$DATA_BYTES" -v s="$1" 'BEGIN { printf "%.0f", b / 1048576 / s }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b / a }'; }
cat <<EOF

Data directory $(mib "$DATA_BYTES") MiB (pg_wal excluded), lz4, $WORKERS workers, $(nproc) cores,
load average $(cut -d' ' -f1-3 /proc/loadavg) at the end, page cache dropped before each run
when the kernel allows it. CPU is user+sys of the timed command and its children (for
pg_basebackup the server's reading is not included); peak RSS is the largest single process.

| step | tool | seconds | MiB/s | CPU s (client) | peak RSS MiB | stored MiB |
|---|---|---|---|---|---|---|
| backup | shardvault | ${SECS[sv_backup]} | $(rate "${SECS[sv_backup]}") | ${CPU[sv_backup]} | $((RSS[sv_backup] / 1024)) | $(mib "$SV_STORED") |
| backup | pgBackRest | ${SECS[pgbr_backup]} | $(rate "${SECS[pgbr_backup]}") | ${CPU[pgbr_backup]} | $((RSS[pgbr_backup] / 1024)) | $(mib "$PGBR_STORED") |
| backup | pg_basebackup client-lz4 | ${SECS[pgbb_backup]} | $(rate "${SECS[pgbb_backup]}") | ${CPU[pgbb_backup]} | $((RSS[pgbb_backup] / 1024)) | $(mib "$PGBB_STORED") |
| restore | shardvault | ${SECS[sv_restore]} | $(rate "${SECS[sv_restore]}") | ${CPU[sv_restore]} | $((RSS[sv_restore] / 1024)) | |
| restore | pgBackRest | ${SECS[pgbr_restore]} | $(rate "${SECS[pgbr_restore]}") | ${CPU[pgbr_restore]} | $((RSS[pgbr_restore] / 1024)) | |

Backup: shardvault is $(ratio "${SECS[sv_backup]}" "${SECS[pgbr_backup]}")x pgBackRest's throughput and $(ratio "${SECS[sv_backup]}" "${SECS[pgbb_backup]}")x pg_basebackup's.
Restore: shardvault is $(ratio "${SECS[sv_restore]}" "${SECS[pgbr_restore]}")x pgBackRest's throughput.
wal-push of a 16 MiB segment (process start to exit, 21 runs): median ${WAL_MEDIAN} ms.
EOF

{
  echo
  echo "Incrementals on the same change (stored: bytes the backup added to its repository):"
  echo
  echo "| step | seconds | CPU s | peak RSS MiB | stored MiB | time vs full | stored vs full |"
  echo "|---|---|---|---|---|---|---|"
  for step in "${INCR_STEPS[@]}"; do
    full=sv_backup
    full_stored=$SV_STORED
    case $step in pgbr_*) full=pgbr_backup full_stored=$PGBR_STORED ;; esac
    echo "| $step | ${SECS[$step]} | ${CPU[$step]} | $((RSS[$step] / 1024)) | $(mib "${STORED[$step]}") |" \
      "$(awk -v a="${SECS[$step]}" -v b="${SECS[$full]}" 'BEGIN { printf "%.0f%%", 100 * a / b }') |" \
      "$(awk -v a="${STORED[$step]}" -v b="$full_stored" 'BEGIN { printf "%.1f%%", 100 * a / b }') |"
  done
  echo
  echo "Restore of shardvault's chain of three (full, 1%, 10%): ${SECS[sv_restore_chain]} s," \
    "$(awk -v a="${SECS[sv_restore_chain]}" -v b="${SECS[sv_restore]}" 'BEGIN { printf "%.2f", a / b }')x the full restore," \
    "CPU ${CPU[sv_restore_chain]} s, peak RSS $((RSS[sv_restore_chain] / 1024)) MiB."
  echo "Restore of the chain of eight (five more 1% incrementals, ${SECS[sv_incr_chain_3]}," \
    "${SECS[sv_incr_chain_4]}, ${SECS[sv_incr_chain_5]}, ${SECS[sv_incr_chain_6]}, ${SECS[sv_incr_chain_7]} s):" \
    "${SECS[sv_restore_chain8]} s," \
    "$(awk -v a="${SECS[sv_restore_chain8]}" -v b="${SECS[sv_restore]}" 'BEGIN { printf "%.2f", a / b }')x the full restore," \
    "CPU ${CPU[sv_restore_chain8]} s, peak RSS $((RSS[sv_restore_chain8] / 1024)) MiB."
  echo "Load average at the start: $LOAD_START; at the end: $(cut -d' ' -f1-3 /proc/loadavg)."
}
