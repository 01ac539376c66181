#!/usr/bin/env bash
# bench/compare.sh — quorumfs side by side with local ext4, GlusterFS replica 3 and MooseFS
# goal 3, all measured in this one run on this machine (never numbers from another day).
# Brings up a 3-chunkserver quorumfs cluster with one mount, runs bench/run.sh on it and on
# each peer that can be installed, prints the table with the ratio quorumfs / best peer per
# row and the disk budget, and tears everything down. Needs root.
#   RUNS=3 PEERS="ext4 gluster moosefs" bench/compare.sh
# QFS_ALSO_OPTS="negative_timeout=1" also runs quorumfs a second time, on a fresh cluster
# mounted with -o QFS_ALSO_OPTS (column "quorumfs-o"; the ratio column stays the default's).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${BUILD_DIR:-$ROOT/build}
PEERS_SCRIPTS=${PEERS_SCRIPTS:-$ROOT/../shared/peers}
export PEERS_DIR=${PEERS_DIR:-/tmp/quorumfs-peers}
PEERS=${PEERS:-"ext4 gluster moosefs"}
RUNS=${RUNS:-3}
export RUNS PEERS_SCRIPTS
[ "$(id -u)" = 0 ] || { echo "needs root" >&2; exit 1; }
STAMP=$(date +%Y%m%d-%H%M%S)
RESULTS=$PEERS_DIR/compare-$STAMP
mkdir -p "$RESULTS" "$PEERS_DIR/results"
QFS=$PEERS_DIR/qfs
PIDS=()

teardown() {
  mountpoint -q "$QFS/mnt" 2>/dev/null && { fusermount3 -u "$QFS/mnt" || umount -l "$QFS/mnt"; }
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  sleep 0.5
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill -9 "$p" 2>/dev/null || true; done
  rm -rf "$QFS"
  if [[ " $PEERS " == *" gluster "* ]]; then (cd "$PEERS_SCRIPTS" && ./gluster-down.sh --purge) > /dev/null 2>&1 || true; fi
  if [[ " $PEERS " == *" moosefs "* ]]; then (cd "$PEERS_SCRIPTS" && ./moosefs-down.sh --purge) > /dev/null 2>&1 || true; fi
  rm -rf "$PEERS_DIR/localdir"
}
trap teardown EXIT
source "$ROOT/bench/local-cluster.sh"

cmake --build "$BUILD" -j"$(nproc)" --target quorumfs-chunkserver quorumfs-mount > /dev/null

# The disk budget: ext4's sequential write + fsync rate on the data disk, divided by N.
mkdir -p "$QFS"
budget_raw=$(dd if=/dev/zero of="$QFS/probe" bs=1M count=1024 conv=fsync 2>&1 | awk '/copied/ {print $(NF-1), $NF}')
rm -f "$QFS/probe"
echo "disk write+fsync: $budget_raw (budget = that / 3)" | tee "$RESULTS/budget.txt"

# quorumfs: 3 chunkservers and one mount.
start_local_cluster "$QFS" 7201 "$BUILD/quorumfs-chunkserver" "$BUILD/quorumfs-mount" || true

run() {  # run LABEL DIR [env]
  local label=$1 dir=$2
  echo "== $label" >&2
  env "${@:3}" "$ROOT/bench/run.sh" "$dir" "$label" | tee "$RESULTS/$label.md" >&2
}
run quorumfs "$QFS/mnt" QFS_MOUNT_PID=$MOUNT_PID
if [ -n "${QFS_ALSO_OPTS:-}" ]; then
  if mountpoint -q "$QFS/mnt"; then fusermount3 -u "$QFS/mnt" || umount -l "$QFS/mnt"; fi
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 0.5
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  wait 2> /dev/null || true
  PIDS=()
  rm -rf "$QFS"
  mkdir -p "$QFS"
  write_wrapper "$PEERS_DIR/mount-also" "$BUILD/quorumfs-mount" -o "$QFS_ALSO_OPTS"
  start_local_cluster "$QFS" 7201 "$BUILD/quorumfs-chunkserver" "$PEERS_DIR/mount-also" || true
  echo "quorumfs-o: -o $QFS_ALSO_OPTS" >> "$RESULTS/budget.txt"
  if mountpoint -q "$QFS/mnt"; then
    run quorumfs-o "$QFS/mnt" QFS_MOUNT_PID=$MOUNT_PID
  else
    echo "quorumfs with -o $QFS_ALSO_OPTS did not mount: column left out" >&2
  fi
fi
for peer in $PEERS; do
  case $peer in
    ext4) mkdir -p "$PEERS_DIR/localdir"; run local-ext4 "$PEERS_DIR/localdir" ;;
    gluster)
      if peer_packages glusterfs-server glusterfs-client >> "$RESULTS/gluster-up.log" 2>&1 &&
        (cd "$PEERS_SCRIPTS" && ./gluster-up.sh) >> "$RESULTS/gluster-up.log" 2>&1; then
        run gluster-r3 "$PEERS_DIR/gmnt"
      else echo "GlusterFS could not be brought up (see $RESULTS/gluster-up.log)" >&2; fi ;;
    moosefs)
      if peer_packages moosefs-master moosefs-chunkserver moosefs-client moosefs-cli \
        >> "$RESULTS/moosefs-up.log" 2>&1 &&
        (cd "$PEERS_SCRIPTS" && ./moosefs-up.sh) >> "$RESULTS/moosefs-up.log" 2>&1; then
        run moosefs-g3 "$PEERS_DIR/mmnt"
      else echo "MooseFS could not be brought up (see $RESULTS/moosefs-up.log)" >&2; fi ;;
  esac
done

# Side-by-side table with quorumfs / best peer per row.
python3 - "$RESULTS" <<'PY'
import os, re, sys
d = sys.argv[1]
tables = {}
for f in sorted(os.listdir(d)):
    if not f.endswith('.md'):
        continue
    label = f[:-3]
    for line in open(os.path.join(d, f)):
        cells = [c.strip() for c in line.strip().strip('|').split('|')]
        if len(cells) < 3 or cells[0] in ('workload', '') or cells[0].startswith('---'):
            continue
        tables.setdefault(cells[0], {})['unit'] = cells[1]
        tables[cells[0]][label] = cells[2]
labels = [l for l in ['quorumfs', 'quorumfs-o', 'local-ext4', 'gluster-r3', 'moosefs-g3'] if any(l in r for r in tables.values())]
def med(s):
    m = re.match(r'([0-9.]+)', s or '')
    return float(m.group(1)) if m else None
print('| workload | unit | ' + ' | '.join(labels) + ' | quorumfs / best peer |')
print('|---|---|' + '---|' * len(labels) + '---|')
for w, row in tables.items():
    q = med(row.get('quorumfs'))
    peers = [med(row.get(l)) for l in ('gluster-r3', 'moosefs-g3') if row.get(l)]
    peers = [p for p in peers if p]
    ratio = '-'
    if q and peers:
        best = min(peers) if row['unit'] == 's' else max(peers)
        ratio = '%.2fx' % ((best / q) if row['unit'] == 's' else (q / best))
    print('| %s | %s | %s | %s |' % (w, row['unit'], ' | '.join(row.get(l, '-') for l in labels), ratio))
PY
cat "$RESULTS/budget.txt"
