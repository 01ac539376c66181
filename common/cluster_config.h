// ClusterConfig: the one small file every node and client shares (DESIGN.md, "Cluster
// configuration"). Parse() validates everything and names the offending line on error.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"

namespace quorumfs {

struct NodeInfo {
  std::string id;       // stable name, [A-Za-z0-9_.-]{1,64}
  std::string address;  // host:port as written (IPv4, [IPv6] or hostname)
  std::string host;     // address without the port
  uint16_t port = 0;
};

struct ClusterConfig {
  static constexpr uint64_t kMinChunkSize = 64 * 1024;
  static constexpr uint64_t kMaxChunkSize = 16 * 1024 * 1024;

  uint64_t epoch = 0;
  int replicas = 3;      // N
  int write_quorum = 2;  // W
  int read_quorum = 2;   // R
  uint64_t chunk_size = 1024 * 1024;
  std::vector<NodeInfo> nodes;
  // Ids of the previous membership while a change is under way (`previous a b c`); empty
  // otherwise. Each id is a current node or a leaving one.
  std::vector<std::string> previous;
  // Nodes being removed (`leaving <id> <host:port>`): members of `previous` only, so they hold
  // no key of the new membership but stay reachable until the rebalance has moved their keys.
  // Allowed only with `previous`; dropped from the file the rebalance writes at its end.
  std::vector<NodeInfo> leaving;

  // Parses the text of a cluster file. `source` names it in error messages.
  // Errors (InvalidArgument, message "<source>:<line>: <reason>"): unknown key, bad number,
  // missing epoch, R+W <= N, W > N, R > N, W or R < 1, fewer than N nodes (in the current
  // and, if present, the previous list), duplicate node id or address, bad address, chunk
  // size outside [64KiB, 16MiB] or not a power of two, a `previous` id that is neither a node
  // nor leaving, a `leaving` node that is not in `previous` (or is also a node).
  static Result<ClusterConfig> Parse(const std::string& text, const std::string& source);

  // Reads and parses a file; IoError if it cannot be read.
  static Result<ClusterConfig> Load(const std::string& path);

  // The file's text (Parse(Format()) gives back an equal config).
  std::string Format() const;

  // Returns the node (current or leaving) with this id, or nullptr.
  const NodeInfo* FindNode(const std::string& id) const;

  bool InTransition() const { return !previous.empty(); }

  // Ids of the current members, in file order.
  std::vector<std::string> NodeIds() const;
};

}  // namespace quorumfs
