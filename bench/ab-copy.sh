#!/bin/bash
# A/B of two mount binaries on `cp` of a 1 GiB file inside the mount (cp calls copy_file_range,
# which a mount without it leaves to the kernel's read-and-write fallback), alternating: each
# variant gets a fresh 3-node cluster (loopback ports 7201-7203, data under a temp dir in /tmp),
# one copy of a 1 GiB file of random bytes into the mount, then a cold `cp` (after `sync`,
# SIGUSR1 to the mount, drop_caches) and a warm one. Prints each time and the MiB stored under
# node a's chunks afterwards (three copies of the same bytes: about 1 GiB). Needs root. Usage:
#   OLD_MOUNT=/path/old/quorumfs-mount [NEW_MOUNT=build/quorumfs-mount] [ROUNDS=3] bench/ab-copy.sh
set -u
cd "$(dirname "$0")/.."
B=$(pwd)/build
CS=$B/quorumfs-chunkserver
OLD_MOUNT=${OLD_MOUNT:?set OLD_MOUNT to the other mount binary}
NEW_MOUNT=${NEW_MOUNT:-$B/quorumfs-mount}
D=
PIDS=()
SRC=
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
cleanup() {
  teardown
  [ -n "$SRC" ] && rm -f "$SRC"
}
trap cleanup EXIT
source bench/local-cluster.sh
trap "exit 130" INT TERM

SRC=$(mktemp /tmp/quorumfs-ab-copy-src.XXXXXX)
head -c 1073741824 /dev/urandom > "$SRC"

seconds() {  # seconds CMD...: runs it, prints the seconds it took
  local s e
  s=$(date +%s.%N)
  "$@" || return 1
  e=$(date +%s.%N)
  echo "$e - $s" | bc
}

variant() {  # variant LABEL MOUNT
  local label=$1 mnt=$2
  D=$(mktemp -d /tmp/quorumfs-ab-copy.XXXXXX)
  start_local_cluster "$D" 7201 "$CS" "$mnt" || return 1
  local mp=$MOUNT_PID
  cp "$SRC" "$D/mnt/src" && sync
  kill -USR1 "$mp"
  echo 3 > /proc/sys/vm/drop_caches
  echo "$label cold-cp $(seconds cp "$D/mnt/src" "$D/mnt/cold") s"
  echo "$label warm-cp $(seconds cp "$D/mnt/src" "$D/mnt/warm") s"
  cmp -s "$SRC" "$D/mnt/cold" && cmp -s "$SRC" "$D/mnt/warm" || echo "$label: COPY DIFFERS"
  echo "$label node-a-chunks $(du -sm "$D/a/chunks" | cut -f1) MiB"
  teardown
}

for _ in $(seq "${ROUNDS:-3}"); do
  variant old "$OLD_MOUNT"
  variant new "$NEW_MOUNT"
done
