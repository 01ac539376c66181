# Sourced by test.sh and demo.sh: installs the Debian packages quorumfs needs, if missing.
QUORUMFS_PACKAGES=(
  build-essential cmake pkg-config
  capnproto libcapnp-dev          # RPC and schema compiler
  libleveldb-dev libsnappy-dev    # record store (LevelDB's CMake target links snappy)
  libssl-dev                      # SHA-256
  libgtest-dev libgmock-dev       # tests
  libfuse3-dev fuse3              # the mount
  libcli11-dev                    # command-line flags
  git sqlite3 tar                 # programs the FUSE tests run on a mount
  iproute2                        # `ip netns`: the partition tests
)

ensure_packages() {
  local missing=()
  for p in "${QUORUMFS_PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
      missing+=("$p")
    fi
  done
  if [ ${#missing[@]} -eq 0 ]; then return 0; fi
  echo "installing: ${missing[*]}"
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${missing[@]}"
}
