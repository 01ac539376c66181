#!/usr/bin/env bash
# bench/run.sh DIR [LABEL] — the workloads of ../shared/peers/bench.sh (same definitions, so
# numbers compare) run RUNS times (default 3) on any mounted directory; prints one table with
# the median and min-max of each workload and appends every run's TSV rows to
# $PEERS_DIR/results (default /tmp/quorumfs-peers/results).
#
# QFS_MOUNT_PID=<pid of a quorumfs-mount>: also empty that mount's own chunk cache (SIGUSR1)
# wherever the workloads drop the kernel's caches, so "cold" quorumfs numbers come from the
# chunkservers' disks, not from the client's cache.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
DIR=${1:?usage: bench/run.sh DIR [LABEL]}
LABEL=${2:-$(basename "$DIR")}
RUNS=${RUNS:-3}
PEERS_SCRIPTS=${PEERS_SCRIPTS:-$HERE/../../shared/peers}
[ -x "$PEERS_SCRIPTS/bench.sh" ] || [ -f "$PEERS_SCRIPTS/bench.sh" ] || {
  echo "cannot find the peers' bench.sh (set PEERS_SCRIPTS)" >&2; exit 1; }
command -v fio > /dev/null || {
  if [ "$(id -u)" = 0 ]; then DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fio > /dev/null
  else echo "needs fio" >&2; exit 1; fi; }
export PEERS_DIR=${PEERS_DIR:-/tmp/quorumfs-peers}
mkdir -p "$PEERS_DIR/results"

# A private copy of the workloads whose cache drops also reach the quorumfs client cache.
WORK=$(mktemp -d /tmp/qfs-bench.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
cp "$PEERS_SCRIPTS/bench.sh" "$PEERS_SCRIPTS/pbtool.py" "$PEERS_SCRIPTS/summarize.py" "$WORK/"
if [ -n "${QFS_MOUNT_PID:-}" ]; then
  sed -i "s|^drop() { sync;|drop() { sync; kill -USR1 $QFS_MOUNT_PID 2>/dev/null \|\| true;|" "$WORK/bench.sh"
  python3 - "$WORK/pbtool.py" "$QFS_MOUNT_PID" <<'PY'
import sys
p, pid = sys.argv[1], sys.argv[2]
s = open(p).read()
s = s.replace('    os.sync()\n    if DROP:', '    os.sync()\n    try:\n        os.kill(%s, 10)\n    except OSError:\n        pass\n    if DROP:' % pid, 1)
open(p, 'w').write(s)
PY
fi
FILES=()
for i in $(seq "$RUNS"); do
  echo "== $LABEL run $i/$RUNS" >&2
  before=$(ls "$PEERS_DIR/results" | sort)
  bash "$WORK/bench.sh" "$DIR" "$LABEL" > /dev/null
  after=$(ls "$PEERS_DIR/results" | sort)
  new=$(comm -13 <(echo "$before") <(echo "$after") | head -1)
  FILES+=("$PEERS_DIR/results/$new")
done
python3 "$WORK/summarize.py" "${FILES[@]}"
