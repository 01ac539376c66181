#!/bin/bash
# A/B of programs that make many files: per round and variant a fresh 3-node cluster on
# loopback with one mount, then bench/tarlike.py (1,000 files of 5,000 bytes made as tar makes
# them, in one directory), then `tar -x` of a tarball of /usr/include into it, timed, then
# checks (not timed): `diff -r` against /usr/include (names, contents, symlink targets) and the
# times, modes and owners of every entry against the same tarball extracted on local disk.
# Variants: "off" mounts with the defaults and "on" with -o negative_timeout=1; or, with
# OLD_MOUNT=PATH set, "old" is that mount binary and "new" build/quorumfs-mount, both with the
# defaults.
# Usage: [OLD_MOUNT=PATH] bench/ab-untar.sh [ROUNDS] (from a built tree: build/quorumfs-*;
# needs root).
set -u
cd "$(dirname "$0")/.."
source bench/local-cluster.sh
ROUNDS=${1:-3}
ab_workdir
if [ -n "${OLD_MOUNT:-}" ]; then
  VARIANTS="old new"
else
  VARIANTS="off on"
  write_wrapper "$WORK/mount-on" "$PWD/build/quorumfs-mount" -o negative_timeout=1
fi
tar -C /usr -cf "$WORK/include.tar" include
echo "tarball: $(tar -tf "$WORK/include.tar" | wc -l) entries, $(du -m "$WORK/include.tar" | cut -f1) MiB"
# What each entry should end as: the tarball extracted on local disk (a tarball keeps whole
# seconds of mtime, so /usr/include itself would not match).
mkdir "$WORK/ref"
tar -C "$WORK/ref" -xf "$WORK/include.tar"
attrs() { (cd "$1" && find . -printf '%p %y %m %U %G %T@\n' | sort); }
attrs "$WORK/ref" > "$WORK/ref.attrs"
for r in $(seq "$ROUNDS"); do
  for v in $VARIANTS; do
    case $v in
      on) m=$WORK/mount-on ;;
      old) m=$OLD_MOUNT ;;
      *) m=$PWD/build/quorumfs-mount ;;
    esac
    D=$(mktemp -d "$WORK/c.XXXX")
    PIDS=()
    start_local_cluster "$D" 27500 "$PWD/build/quorumfs-chunkserver" "$m" || exit 1
    mkdir "$D/mnt/tarlike"
    echo "$v: tarlike $(python3 bench/tarlike.py "$D/mnt/tarlike" 1000 2>&1)"
    t0=$(date +%s%N)
    tar -C "$D/mnt" -xf "$WORK/include.tar" || echo "$v: tar failed"
    t1=$(date +%s%N)
    if diff -r --no-dereference /usr/include "$D/mnt/include" > "$WORK/diff" 2>&1; then same=same; else same="DIFFERENT: $(head -3 "$WORK/diff")"; fi
    # The mount's own directories: "." differs (the mount point), so only ./include down.
    if diff <(grep '^\./include' "$WORK/ref.attrs") <(attrs "$D/mnt" | grep '^\./include') > "$WORK/adiff" 2>&1; then
      times="times, modes and owners same"
    else
      times="ATTRIBUTES DIFFER: $(head -4 "$WORK/adiff" | tr '\n' ' ')"
    fi
    echo "$v: untar $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", (b - a) / 1e9 }') s; $same; $times"
    stop_local_cluster "$D"
    rm -rf "$D"
    D=
  done
done
