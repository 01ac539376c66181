#include "common/quorum.h"

#include <algorithm>

namespace quorumfs {

QuorumSpec QuorumSpec::FromGroups(const std::vector<ReplicaGroup>& groups) {
  QuorumSpec spec;
  spec.targets = ReplicaUnion(groups);
  for (const auto& g : groups) {
    std::vector<size_t> idx;
    for (const auto& m : g.members) {
      idx.push_back(std::find(spec.targets.begin(), spec.targets.end(), m) - spec.targets.begin());
    }
    spec.groups.push_back(std::move(idx));
  }
  return spec;
}

bool QuorumSpec::Satisfied(const std::vector<Vote>& votes, int need) const {
  for (const auto& g : groups) {
    int yes = 0;
    for (size_t i : g) yes += votes[i] == Vote::kYes;
    if (yes < need) return false;
  }
  return true;
}

bool QuorumSpec::Hopeless(const std::vector<Vote>& votes, int need) const {
  for (const auto& g : groups) {
    int possible = 0;
    for (size_t i : g) possible += votes[i] == Vote::kYes || votes[i] == Vote::kPending;
    if (possible < need) return true;
  }
  return false;
}

}  // namespace quorumfs
