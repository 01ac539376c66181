#!/bin/bash
# A/B of the chunkserver's inline record syncs through a mount (bench/README.md, "The
# chunkserver's RPC loop syncs record batches itself"): per round and variant a fresh 3-node
# cluster on loopback with one mount, a 1 GiB `dd conv=fsync` of random bytes, then 2,000
# creates and 2,000 unlinks from one process. "off" runs the servers with
# --inline-sync-below 0 (the sync thread only), "on" with the default.
# Usage: bench/ab-inline-fuse.sh [ROUNDS] (from a built tree: build/quorumfs-*; needs root).
set -u
cd "$(dirname "$0")/.."
source bench/local-cluster.sh
ROUNDS=${1:-3}
ab_workdir
write_wrapper "$WORK/cs-off" "$PWD/build/quorumfs-chunkserver" --inline-sync-below 0
dd if=/dev/urandom of="$WORK/src" bs=1M count=1024 2>/dev/null
for r in $(seq "$ROUNDS"); do
  for v in off on; do
    if [ $v = on ]; then cs=$PWD/build/quorumfs-chunkserver; else cs=$WORK/cs-off; fi
    D=$(mktemp -d "$WORK/c.XXXX")
    PIDS=()
    start_local_cluster "$D" 27300 "$cs" "$PWD/build/quorumfs-mount" || exit 1
    sync
    w=$(dd if="$WORK/src" of="$D/mnt/big" bs=1M conv=fsync 2>&1 | tail -1 | awk '{print $(NF-1), $NF}')
    c=$(python3 - "$D/mnt" <<'PY'
import os, sys, time
d = os.path.join(sys.argv[1], "m"); os.mkdir(d)
t = time.perf_counter()
for i in range(2000):
    os.close(os.open(os.path.join(d, "f%d" % i), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
c = 2000 / (time.perf_counter() - t)
t = time.perf_counter()
for i in range(2000):
    os.unlink(os.path.join(d, "f%d" % i))
print("create %.0f/s unlink %.0f/s" % (c, 2000 / (time.perf_counter() - t)))
PY
)
    echo "$v: seq_write $w; $c"
    stop_local_cluster "$D"
    rm -rf "$D"
    D=
  done
done
