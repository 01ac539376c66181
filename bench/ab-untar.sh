#!/bin/bash
# A/B of the mount's -o negative_timeout on a program that makes many files: per round and
# variant a fresh 3-node cluster on loopback with one mount, then `tar -x` of a tarball of
# /usr/include into it, timed, and a `diff -r` of the result against /usr/include (a check of
# names, contents and symlink targets, not timed). "off" mounts with the defaults, "on" with
# -o negative_timeout=1.
# Usage: bench/ab-untar.sh [ROUNDS] (from a built tree: build/quorumfs-*; needs root).
set -u
cd "$(dirname "$0")/.."
source bench/local-cluster.sh
ROUNDS=${1:-3}
ab_workdir
write_wrapper "$WORK/mount-on" "$PWD/build/quorumfs-mount" -o negative_timeout=1
tar -C /usr -cf "$WORK/include.tar" include
echo "tarball: $(tar -tf "$WORK/include.tar" | wc -l) entries, $(du -m "$WORK/include.tar" | cut -f1) MiB"
for r in $(seq "$ROUNDS"); do
  for v in off on; do
    if [ $v = on ]; then m=$WORK/mount-on; else m=$PWD/build/quorumfs-mount; fi
    D=$(mktemp -d "$WORK/c.XXXX")
    PIDS=()
    start_local_cluster "$D" 27500 "$PWD/build/quorumfs-chunkserver" "$m" || exit 1
    t0=$(date +%s%N)
    tar -C "$D/mnt" -xf "$WORK/include.tar" || echo "$v: tar failed"
    t1=$(date +%s%N)
    if diff -r --no-dereference /usr/include "$D/mnt/include" > "$WORK/diff" 2>&1; then same=same; else same="DIFFERENT: $(head -3 "$WORK/diff")"; fi
    echo "$v: untar $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", (b - a) / 1e9 }') s; $same"
    stop_local_cluster "$D"
    rm -rf "$D"
    D=
  done
done
