// Rendezvous (highest-random-weight) placement (DESIGN.md, "Placement"). Every client and
// server computes the same ranking with no directory service; the weight function is fixed
// forever (first 8 bytes, big-endian, of SHA-256(node_id || 0x00 || key)) so that placement
// is stable across processes and versions.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/cluster_config.h"

namespace quorumfs {

// Weight of `node_id` for placement key `key` (raw bytes).
uint64_t RendezvousWeight(std::string_view node_id, std::string_view key);

// All of `node_ids` ordered by descending weight for `key` (ties broken by id).
std::vector<std::string> RankNodes(const std::vector<std::string>& node_ids, std::string_view key);

// One set of replicas that must reach its own quorum.
struct ReplicaGroup {
  std::vector<std::string> members;  // the first N nodes of the ranking
};

// Replica sets a key must reach quorum in: one group normally; during a membership change
// (config.previous non-empty) two: the key's new set and its old set (joint quorum).
std::vector<ReplicaGroup> ReplicaGroupsFor(const ClusterConfig& config, std::string_view key);

// The union of the groups' members, new set first, without repeats.
std::vector<std::string> ReplicaUnion(const std::vector<ReplicaGroup>& groups);

// Ranking of every node that may hold the key (current nodes, then previous-only ids), used
// for sloppy chunk placement: the first N are home, the rest are fallbacks in order.
std::vector<std::string> FullRanking(const ClusterConfig& config, std::string_view key);

// Placement keys as bytes: an inode number is 8 bytes big-endian; a chunk id its 32 bytes.
std::string InoPlacementKey(uint64_t ino);

}  // namespace quorumfs
