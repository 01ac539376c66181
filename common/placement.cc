#include "common/placement.h"

#include <algorithm>
#include <unordered_set>
#include <utility>

#include "common/chunk_id.h"

namespace quorumfs {

uint64_t RendezvousWeight(std::string_view node_id, std::string_view key) {
  // node_id || 0x00 || key. Node ids never contain NUL, so the separator keeps (id, key)
  // pairs from colliding ("ab"+"c" vs "a"+"bc").
  std::string input;
  input.reserve(node_id.size() + 1 + key.size());
  input.append(node_id);
  input.push_back('\0');
  input.append(key);
  std::array<uint8_t, 32> digest = Sha256(input.data(), input.size());
  uint64_t weight = 0;
  for (int i = 0; i < 8; ++i) weight = weight << 8 | digest[i];
  return weight;
}

std::vector<std::string> RankNodes(const std::vector<std::string>& node_ids, std::string_view key) {
  std::vector<std::pair<uint64_t, const std::string*>> weighted;
  weighted.reserve(node_ids.size());
  for (const std::string& id : node_ids) weighted.emplace_back(RendezvousWeight(id, key), &id);
  std::sort(weighted.begin(), weighted.end(), [](const auto& a, const auto& b) {
    if (a.first != b.first) return a.first > b.first;
    return *a.second < *b.second;
  });
  std::vector<std::string> ranked;
  ranked.reserve(weighted.size());
  for (const auto& w : weighted) ranked.push_back(*w.second);
  return ranked;
}

namespace {

ReplicaGroup FirstN(std::vector<std::string> ranked, int n) {
  size_t keep = n < 0 ? 0 : std::min(ranked.size(), static_cast<size_t>(n));
  ranked.resize(keep);
  return ReplicaGroup{std::move(ranked)};
}

}  // namespace

std::vector<ReplicaGroup> ReplicaGroupsFor(const ClusterConfig& config, std::string_view key) {
  std::vector<ReplicaGroup> groups;
  groups.push_back(FirstN(RankNodes(config.NodeIds(), key), config.replicas));
  if (config.InTransition()) {
    groups.push_back(FirstN(RankNodes(config.previous, key), config.replicas));
  }
  return groups;
}

std::vector<std::string> ReplicaUnion(const std::vector<ReplicaGroup>& groups) {
  std::vector<std::string> out;
  std::unordered_set<std::string> seen;
  for (const ReplicaGroup& g : groups) {
    for (const std::string& id : g.members) {
      if (seen.insert(id).second) out.push_back(id);
    }
  }
  return out;
}

std::vector<std::string> FullRanking(const ClusterConfig& config, std::string_view key) {
  std::vector<std::string> current = config.NodeIds();
  std::vector<std::string> ranking = RankNodes(current, key);
  std::unordered_set<std::string> in_current(current.begin(), current.end());
  std::vector<std::string> previous_only;
  for (const std::string& id : config.previous) {
    if (in_current.count(id) == 0) previous_only.push_back(id);
  }
  for (std::string& id : RankNodes(previous_only, key)) ranking.push_back(std::move(id));
  return ranking;
}

std::string InoPlacementKey(uint64_t ino) {
  std::string key(8, '\0');
  for (int i = 7; i >= 0; --i) {
    key[i] = static_cast<char>(ino & 0xff);
    ino >>= 8;
  }
  return key;
}

}  // namespace quorumfs
