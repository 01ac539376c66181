#!/usr/bin/env bash
# Runs quorumfs on this machine: installs missing packages, builds, starts a 3-node cluster in
# ./demo (data dirs, logs and cluster file there) and mounts it at ./demo/mnt.
#   ./scripts/demo.sh         start (or restart) the demo
#   ./scripts/demo.sh stop    unmount and stop the servers
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
DEMO=$ROOT/demo
BUILD=${BUILD_DIR:-$ROOT/build}

stop() {
  if mountpoint -q "$DEMO/mnt" 2>/dev/null; then
    fusermount3 -u "$DEMO/mnt" 2>/dev/null || umount -l "$DEMO/mnt" || true
  fi
  for f in "$DEMO"/*.pid; do
    [ -e "$f" ] || continue
    pid=$(cat "$f")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$f"
  done
}

if [ "${1:-}" = "stop" ]; then
  stop
  echo "quorumfs demo stopped (data kept in $DEMO; remove it to start fresh)"
  exit 0
fi

source scripts/packages.sh
ensure_packages
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release > /dev/null
cmake --build "$BUILD" -j"$(nproc)" --target quorumfs-chunkserver quorumfs-mount quorumfs

stop
mkdir -p "$DEMO/mnt"
cat > "$DEMO/cluster.conf" <<CONF
# quorumfs demo cluster: three chunkservers on this machine
epoch         = 1
replicas      = 3
write_quorum  = 2
read_quorum   = 2
chunk_size    = 1MiB
node a  127.0.0.1:7101
node b  127.0.0.1:7102
node c  127.0.0.1:7103
CONF
for n in a b c; do
  "$BUILD/quorumfs-chunkserver" --id $n --data "$DEMO/$n" --cluster "$DEMO/cluster.conf" \
    >> "$DEMO/$n.log" 2>&1 &
  echo $! > "$DEMO/$n.pid"
done
sleep 0.5
"$BUILD/quorumfs-mount" --cluster "$DEMO/cluster.conf" "$DEMO/mnt" -f >> "$DEMO/mount.log" 2>&1 &
echo $! > "$DEMO/mount.pid"
for _ in $(seq 50); do mountpoint -q "$DEMO/mnt" && break; sleep 0.1; done
mountpoint -q "$DEMO/mnt" || { echo "mount failed; see $DEMO/mount.log"; exit 1; }

cat <<TXT

quorumfs is mounted at $DEMO/mnt (3 chunkservers, N=3 W=2 R=2).

Try:
  cp -a /etc $DEMO/mnt/etc && ls -l $DEMO/mnt/etc | head
  $BUILD/quorumfs status --cluster $DEMO/cluster.conf
  kill \$(cat $DEMO/b.pid)        # one node down: everything keeps working
  $BUILD/quorumfs fsck --cluster $DEMO/cluster.conf
  $BUILD/quorumfs quorum --n 3 --w 2 --r 2 --p 0.99

Logs: $DEMO/*.log.   Stop: ./scripts/demo.sh stop
TXT
