#!/bin/bash
# A/B of two mount binaries on `cp` of a 1 GiB file inside the mount (cp calls copy_file_range,
# which a mount without it leaves to the kernel's read-and-write fallback), alternating: each
# variant gets a fresh 3-node cluster (loopback ports 7201-7203, data in a work dir under
# $ABDIR, default /var/tmp), one copy of a 1 GiB file of random bytes into the mount, then a cold
# `cp` (after `sync`, SIGUSR1 to the mount, drop_caches) and a warm one. Prints each time and the
# MiB stored under node a's chunks afterwards (three copies of the same bytes: about 1 GiB).
# Needs root. Usage:
#   OLD_MOUNT=/path/old/quorumfs-mount [NEW_MOUNT=build/quorumfs-mount] [ROUNDS=3] bench/ab-copy.sh
set -u
cd "$(dirname "$0")/.."
B=$(pwd)/build
CS=$B/quorumfs-chunkserver
OLD_MOUNT=${OLD_MOUNT:?set OLD_MOUNT to the other mount binary}
NEW_MOUNT=${NEW_MOUNT:-$B/quorumfs-mount}
source bench/local-cluster.sh
ab_workdir  # WORK (removed at exit, after the round's cluster is stopped), D, PIDS
trap "exit 130" INT TERM

SRC=$WORK/src
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
  D=$WORK/$label
  mkdir -p "$D"
  start_local_cluster "$D" 7201 "$CS" "$mnt" || return 1
  local mp=$MOUNT_PID
  cp "$SRC" "$D/mnt/src" && sync
  kill -USR1 "$mp"
  echo 3 > /proc/sys/vm/drop_caches
  echo "$label cold-cp $(seconds cp "$D/mnt/src" "$D/mnt/cold") s"
  echo "$label warm-cp $(seconds cp "$D/mnt/src" "$D/mnt/warm") s"
  cmp -s "$SRC" "$D/mnt/cold" && cmp -s "$SRC" "$D/mnt/warm" || echo "$label: COPY DIFFERS"
  echo "$label node-a-chunks $(du -sm "$D/a/chunks" | cut -f1) MiB"
  stop_local_cluster "$D"
  PIDS=()
  rm -rf "$D"
  D=
}

for _ in $(seq "${ROUNDS:-3}"); do
  variant old "$OLD_MOUNT"
  variant new "$NEW_MOUNT"
done
