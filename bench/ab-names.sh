#!/bin/bash
# A/B of the mount's -o negative_timeout on creates (bench/README.md, "Misses answered from a
# listing of names"): per round and variant a fresh 3-node cluster on loopback with one mount,
# then from one process 2,000 creates (open O_CREAT|O_EXCL + close) in a new directory, 500
# small files (create, 64 KiB write, close) in another, and 2,000 unlinks. "off" mounts with
# the defaults, "on" with -o negative_timeout=1.
# Usage: bench/ab-names.sh [ROUNDS] (from a built tree: build/quorumfs-*; needs root).
set -u
cd "$(dirname "$0")/.."
source bench/local-cluster.sh
ROUNDS=${1:-3}
ab_workdir
write_wrapper "$WORK/mount-on" "$PWD/build/quorumfs-mount" -o negative_timeout=1
for r in $(seq "$ROUNDS"); do
  for v in off on; do
    if [ $v = on ]; then m=$WORK/mount-on; else m=$PWD/build/quorumfs-mount; fi
    D=$(mktemp -d "$WORK/c.XXXX")
    PIDS=()
    start_local_cluster "$D" 27400 "$PWD/build/quorumfs-chunkserver" "$m" || exit 1
    c=$(python3 - "$D/mnt" <<'PY'
import os, sys, time
d = os.path.join(sys.argv[1], "m"); os.mkdir(d)
t = time.perf_counter()
for i in range(2000):
    os.close(os.open(os.path.join(d, "f%d" % i), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
c = 2000 / (time.perf_counter() - t)
s = os.path.join(sys.argv[1], "s"); os.mkdir(s)
data = os.urandom(65536)
t = time.perf_counter()
for i in range(500):
    fd = os.open(os.path.join(s, "f%d" % i), os.O_CREAT | os.O_WRONLY, 0o644)
    os.write(fd, data)
    os.close(fd)
w = 500 / (time.perf_counter() - t)
t = time.perf_counter()
for i in range(2000):
    os.unlink(os.path.join(d, "f%d" % i))
print("create %.0f/s small_write %.0f/s unlink %.0f/s" % (c, w, 2000 / (time.perf_counter() - t)))
PY
)
    echo "$v: $c"
    stop_local_cluster "$D"
    rm -rf "$D"
    D=
  done
done
