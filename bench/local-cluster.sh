# Sourced by the bench scripts: a 3-node quorumfs cluster on loopback with one mount.
# start_local_cluster DIR PORT CHUNKSERVER MOUNT: writes DIR/cluster.conf (N=3, W=2, R=2,
# 1 MiB chunks, nodes a, b, c on ports PORT..PORT+2), starts the three servers (data in DIR/a,
# b, c; logs DIR/*.log) and mounts DIR/mnt. Appends every process id to the caller's PIDS
# array and sets MOUNT_PID; returns 1 (saying why) if the mount did not come up in 5 s.
start_local_cluster() {
  local dir=$1 port=$2 chunkserver=$3 mount=$4 n i=0
  cat > "$dir/cluster.conf" <<CONF
epoch = 1
replicas = 3
write_quorum = 2
read_quorum = 2
chunk_size = 1MiB
node a 127.0.0.1:$port
node b 127.0.0.1:$((port + 1))
node c 127.0.0.1:$((port + 2))
CONF
  for n in a b c; do
    "$chunkserver" --id $n --data "$dir/$n" --cluster "$dir/cluster.conf" >> "$dir/$n.log" 2>&1 &
    PIDS+=($!)
  done
  sleep 0.5
  mkdir -p "$dir/mnt"
  "$mount" --cluster "$dir/cluster.conf" "$dir/mnt" -f >> "$dir/mount.log" 2>&1 &
  MOUNT_PID=$!
  PIDS+=($MOUNT_PID)
  for i in $(seq 50); do mountpoint -q "$dir/mnt" && return 0; sleep 0.1; done
  echo "quorumfs mount at $dir/mnt did not come up: $(tail -3 "$dir/mount.log")" >&2
  return 1
}

# stop_local_cluster DIR: unmounts DIR/mnt if it is mounted, then stops every process in the
# caller's PIDS (SIGTERM, SIGKILL 0.5 s later) and waits for them.
stop_local_cluster() {
  local dir=$1 p
  if [ -n "$dir" ] && mountpoint -q "$dir/mnt"; then
    fusermount3 -u "$dir/mnt" || umount -l "$dir/mnt"
  fi
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  sleep 0.5
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done
  wait 2>/dev/null
}

# ab_workdir: for the A/B scripts, a work dir in $WORK (under $ABDIR, default /var/tmp), empty
# D and PIDS for the rounds, and an EXIT trap that stops the round's cluster before removing
# the work dir (rm must not walk a live mount).
ab_workdir() {
  WORK=$(mktemp -d "${ABDIR:-/var/tmp}/qfs-ab.XXXX")
  D=
  PIDS=()
  trap 'stop_local_cluster "$D"; rm -rf "$WORK"' EXIT
}

# write_wrapper FILE PROGRAM ARGS...: an executable FILE that runs PROGRAM with its own
# arguments followed by ARGS (a server or mount with extra flags, for start_local_cluster).
write_wrapper() {
  local file=$1 program=$2
  shift 2
  printf '#!/bin/sh\nexec %q "$@"' "$program" > "$file"
  printf ' %q' "$@" >> "$file"
  printf '\n' >> "$file"
  chmod +x "$file"
}

# peer_packages PKG...: installs a peer's Debian packages when missing (as
# ../shared/peers/README.md lists them); fails if they cannot be installed (the caller skips
# that peer with a message).
peer_packages() {  # peer_packages PKG...
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "installing for the peers: ${missing[*]}" >&2
  DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" > /dev/null
}
