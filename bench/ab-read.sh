#!/bin/bash
# A/B of two chunkserver (and optionally mount) binaries on sequential 1 GiB reads, alternating:
# each variant gets a fresh 3-node cluster (loopback ports 7201-7203, data under a temp dir in
# /tmp), one `fio` write of 1 GiB with a closing fsync, then three cold reads, each after
# `sync`, SIGUSR1 to the mount (empties its chunk cache) and drop_caches, as bench/run.sh does.
# Needs root. Usage:
#   OLD_CS=/path/old/quorumfs-chunkserver [NEW_CS=build/quorumfs-chunkserver] \
#   [OLD_MOUNT=... NEW_MOUNT=...] [ROUNDS=2] bench/ab-read.sh
set -u
cd "$(dirname "$0")/.."
B=$(pwd)/build
OLD_CS=${OLD_CS:?set OLD_CS to the other chunkserver binary}
NEW_CS=${NEW_CS:-$B/quorumfs-chunkserver}
OLD_MOUNT=${OLD_MOUNT:-$B/quorumfs-mount}
NEW_MOUNT=${NEW_MOUNT:-$B/quorumfs-mount}
D=
PIDS=()
teardown() {  # unmount and stop the current variant's processes, also on failure or ^C
  [ -n "$D" ] || return 0
  mountpoint -q "$D/mnt" && { fusermount3 -u "$D/mnt" 2>/dev/null || umount -l "$D/mnt"; }
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  sleep 0.5
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done
  PIDS=()
  rm -rf "$D"
  D=
}
trap teardown EXIT
source bench/local-cluster.sh
trap "exit 130" INT TERM

variant() {  # variant LABEL CHUNKSERVER MOUNT
  local label=$1 cs=$2 mnt=$3
  D=$(mktemp -d /tmp/quorumfs-ab-read.XXXXXX)
  start_local_cluster "$D" 7201 "$cs" "$mnt" || return 1
  local mp=$MOUNT_PID
  fio --name=sw --filename="$D/mnt/sw" --rw=write --bs=1M --size=1G --ioengine=psync \
    --end_fsync=1 --fallocate=none --output-format=terse |
    awk -F';' -v l="$label" '{printf "%s write %.0f MB/s\n", l, $48/1000}'
  for i in 1 2 3; do
    sync
    kill -USR1 "$mp"
    echo 3 > /proc/sys/vm/drop_caches
    fio --name=sr --filename="$D/mnt/sw" --rw=read --bs=1M --size=1G --ioengine=psync \
      --output-format=terse | awk -F';' -v l="$label" -v i="$i" '{printf "%s read %d %.0f MB/s\n", l, i, $7/1000}'
  done
  teardown
}

for _ in $(seq "${ROUNDS:-2}"); do
  variant old "$OLD_CS" "$OLD_MOUNT"
  variant new "$NEW_CS" "$NEW_MOUNT"
done
