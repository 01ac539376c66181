#!/bin/bash
# A/B of two builds through the mount, alternating, a fresh 3-node cluster (loopback ports
# 7101-7103, data under /tmp/ab) each time: pbtool's meta workload, then 1000 creates, unlinks
# and creates again of the same names (bench/README.md, "Re-created names").
# Usage: OLD_BUILD=/path/to/old/build [NEW_BUILD=build] bench/ab-recreate.sh
set -u
D=
teardown() {  # unmount and stop the current variant's processes, also on failure or ^C
  [ -n "$D" ] || return 0
  mountpoint -q "$D/mnt" && { fusermount3 -u "$D/mnt" 2>/dev/null || umount -l "$D/mnt"; }
  for f in "$D"/*.pid; do [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null; done
  sleep 1
}
trap teardown EXIT
trap "exit 130" INT TERM
for round in 1 2; do
for v in old new; do
  if [ $v = old ]; then B=${OLD_BUILD:?set OLD_BUILD to a build dir of the old commit}; else B=${NEW_BUILD:-$(dirname "$0")/../build}; fi
  D=/tmp/ab/$v; rm -rf $D; mkdir -p $D/mnt
  printf 'epoch = 1\nreplicas = 3\nwrite_quorum = 2\nread_quorum = 2\nchunk_size = 1MiB\nnode a 127.0.0.1:7101\nnode b 127.0.0.1:7102\nnode c 127.0.0.1:7103\n' > $D/cluster.conf
  for n in a b c; do $B/quorumfs-chunkserver --id $n --data $D/$n --cluster $D/cluster.conf >> $D/$n.log 2>&1 & echo $! > $D/$n.pid; done
  sleep 0.5
  $B/quorumfs-mount --cluster $D/cluster.conf $D/mnt -f >> $D/mount.log 2>&1 & echo $! > $D/mount.pid
  for _ in $(seq 50); do mountpoint -q $D/mnt && break; sleep 0.1; done
  echo "== $v round $round"
  python3 "$(dirname "$0")/../../shared/peers/pbtool.py" meta $D/mnt $v 2000
  python3 "$(dirname "$0")/latency.py" create $D/mnt/re 1000 | sed 's/^/fresh   /'
  python3 "$(dirname "$0")/latency.py" create $D/mnt/re 1000 | sed 's/^/again   /'
  teardown
  D=
done; done
