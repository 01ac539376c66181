#!/usr/bin/env bash
# bench/copy-peers.sh — `cp` of a 1 GiB file inside the mount, side by side in one run:
# quorumfs (3 chunkservers, one mount), GlusterFS replica 3 and MooseFS goal 3 (brought up by
# ../shared/peers, their packages installed when missing). Each round copies, on every file
# system in turn, cold (after `sync` and drop_caches; SIGUSR1 empties quorumfs's chunk cache)
# and warm, and removes the copies; the table gives each median and min-max. Tears everything
# down after itself. Needs root.   ROUNDS=3 bench/copy-peers.sh
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${BUILD_DIR:-$ROOT/build}
PEERS_SCRIPTS=${PEERS_SCRIPTS:-$ROOT/../shared/peers}
export PEERS_DIR=${PEERS_DIR:-/tmp/quorumfs-peers}
[ "$(id -u)" = 0 ] || { echo "needs root" >&2; exit 1; }
QFS=$PEERS_DIR/qfs-copy
SRC=$PEERS_DIR/copy-src
PIDS=()
teardown() {
  stop_local_cluster "$QFS" || true  # (errexit off inside: a gone process is fine)
  rm -rf "$QFS" "$SRC"
  (cd "$PEERS_SCRIPTS" && ./gluster-down.sh --purge) > /dev/null 2>&1 || true
  (cd "$PEERS_SCRIPTS" && ./moosefs-down.sh --purge) > /dev/null 2>&1 || true
}
trap teardown EXIT
source "$ROOT/bench/local-cluster.sh"
mkdir -p "$PEERS_DIR" "$QFS"

start_local_cluster "$QFS" 7201 "$BUILD/quorumfs-chunkserver" "$BUILD/quorumfs-mount"
QFS_PID=$MOUNT_PID
LABELS=(quorumfs)
DIRS=("$QFS/mnt")
if peer_packages glusterfs-server glusterfs-client > /dev/null 2>&1 &&
  (cd "$PEERS_SCRIPTS" && ./gluster-up.sh) > "$PEERS_DIR/copy-gluster-up.log" 2>&1; then
  LABELS+=(gluster-r3)
  DIRS+=("$PEERS_DIR/gmnt")
else echo "GlusterFS could not be brought up: left out" >&2; fi
if peer_packages moosefs-master moosefs-chunkserver moosefs-client moosefs-cli > /dev/null 2>&1 &&
  (cd "$PEERS_SCRIPTS" && ./moosefs-up.sh) > "$PEERS_DIR/copy-moosefs-up.log" 2>&1; then
  LABELS+=(moosefs-g3)
  DIRS+=("$PEERS_DIR/mmnt")
else echo "MooseFS could not be brought up: left out" >&2; fi

head -c 1073741824 /dev/urandom > "$SRC"
for i in "${!DIRS[@]}"; do cp "$SRC" "${DIRS[$i]}/copy-src"; done
sync

seconds() {  # seconds CMD...
  local s e
  s=$(date +%s.%N)
  "$@"
  e=$(date +%s.%N)
  echo "$e - $s" | bc
}
OUT=$(mktemp)
for round in $(seq "${ROUNDS:-3}"); do
  for i in "${!DIRS[@]}"; do
    d=${DIRS[$i]} l=${LABELS[$i]}
    sync
    [ "$l" = quorumfs ] && kill -USR1 "$QFS_PID"
    echo 3 > /proc/sys/vm/drop_caches
    echo "$l cold $(seconds cp "$d/copy-src" "$d/copy-cold")" | tee -a "$OUT" >&2
    echo "$l warm $(seconds cp "$d/copy-src" "$d/copy-warm")" | tee -a "$OUT" >&2
    cmp -s "$SRC" "$d/copy-cold" && cmp -s "$SRC" "$d/copy-warm" || echo "$l: COPY DIFFERS (round $round)" >&2
    rm -f "$d/copy-cold" "$d/copy-warm"
  done
done
python3 - "$OUT" <<'PY'
import sys, statistics
rows = {}
for line in open(sys.argv[1]):
    label, kind, t = line.split()
    rows.setdefault((label, kind), []).append(float(t))
print("| file system | cold cp 1 GiB, s (min-max) | warm cp 1 GiB, s (min-max) |")
print("|---|---|---|")
for label in dict.fromkeys(k[0] for k in rows):
    cells = []
    for kind in ("cold", "warm"):
        v = rows[(label, kind)]
        cells.append("%.2f (%.2f-%.2f)" % (statistics.median(v), min(v), max(v)))
    print("| %s | %s | %s |" % (label, cells[0], cells[1]))
PY
rm -f "$OUT"
