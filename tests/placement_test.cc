#include "common/placement.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "common/chunk_id.h"
#include "common/cluster_config.h"

namespace quorumfs {
namespace {

using Ids = std::vector<std::string>;

ClusterConfig MustParse(const std::string& text) {
  Result<ClusterConfig> config = ClusterConfig::Parse(text, "test.conf");
  EXPECT_TRUE(config.ok()) << config.status().ToString();
  return config.ok() ? *config : ClusterConfig();
}

std::string ConfigText(const Ids& ids, const Ids& previous = {}) {
  std::string text = "epoch = 1\n";
  int port = 7101;
  for (const std::string& id : ids) {
    text += "node " + id + " 127.0.0.1:" + std::to_string(port++) + "\n";
  }
  if (!previous.empty()) {
    text += "previous";
    for (const std::string& id : previous) text += " " + id;
    text += "\n";
  }
  return text;
}

// Expected weights were computed outside this code base, e.g.
//   printf 'a\0key' | sha256sum | cut -c1-16
// They pin the placement function forever: a change here moves every key in every cluster.
TEST(PlacementTest, WeightFixedVectors) {
  EXPECT_EQ(RendezvousWeight("a", "key"), 0x44d4dce15174a224ull);
  EXPECT_EQ(RendezvousWeight("b", "key"), 0x33d1182d5229f5e1ull);
  EXPECT_EQ(RendezvousWeight("c", "key"), 0x576282414a3bf356ull);
  EXPECT_EQ(RendezvousWeight("d", "key"), 0x0652b275878e1b5eull);
  EXPECT_EQ(RendezvousWeight("e", "key"), 0x53d30a3749a8b76aull);
  // printf 'node-1\0' | sha256sum
  EXPECT_EQ(RendezvousWeight("node-1", ""), 0x5b4178aee1357c50ull);
}

TEST(PlacementTest, InodeKeyFixedVectors) {
  EXPECT_EQ(InoPlacementKey(42), std::string("\0\0\0\0\0\0\0\x2a", 8));
  EXPECT_EQ(InoPlacementKey(0x0102030405060708ull), "\x01\x02\x03\x04\x05\x06\x07\x08");
  EXPECT_EQ(InoPlacementKey(~0ull), std::string(8, '\xff'));
  // printf 'a\0\0\0\0\0\0\0\0\x2a' | sha256sum
  EXPECT_EQ(RendezvousWeight("a", InoPlacementKey(42)), 0xa2176c580e83e9a8ull);
  EXPECT_EQ(RendezvousWeight("e", InoPlacementKey(42)), 0xdc469effa68b8498ull);
}

TEST(PlacementTest, RankingFixedVectors) {
  Ids nodes = {"a", "b", "c", "d", "e"};
  EXPECT_EQ(RankNodes(nodes, "key"), (Ids{"c", "e", "a", "b", "d"}));
  EXPECT_EQ(RankNodes(nodes, InoPlacementKey(42)), (Ids{"e", "b", "a", "d", "c"}));
  // Chunk key: the 32 raw bytes of SHA-256("abc").
  EXPECT_EQ(RankNodes(nodes, ChunkId::Of("abc").view()), (Ids{"c", "b", "d", "e", "a"}));
  // Input order does not matter.
  EXPECT_EQ(RankNodes({"e", "d", "c", "b", "a"}, "key"), (Ids{"c", "e", "a", "b", "d"}));
  EXPECT_TRUE(RankNodes({}, "key").empty());
}

TEST(PlacementTest, TiesBrokenById) {
  // The same id twice has equal weights; the ranking must still be deterministic.
  EXPECT_EQ(RankNodes({"b", "a", "b"}, "key"), (Ids{"a", "b", "b"}));
}

TEST(PlacementTest, ReplicaGroupsSteadyState) {
  ClusterConfig config = MustParse(ConfigText({"a", "b", "c", "d", "e"}));
  std::vector<ReplicaGroup> groups = ReplicaGroupsFor(config, "key");
  ASSERT_EQ(groups.size(), 1u);
  EXPECT_EQ(groups[0].members, (Ids{"c", "e", "a"}));
  EXPECT_EQ(ReplicaUnion(groups), (Ids{"c", "e", "a"}));
  EXPECT_EQ(FullRanking(config, "key"), (Ids{"c", "e", "a", "b", "d"}));
}

TEST(PlacementTest, ReplicaGroupsDuringTransition) {
  // Growing from {a, b, c, d} to {a, b, c, d, e}.
  ClusterConfig config = MustParse(ConfigText({"a", "b", "c", "d", "e"}, {"a", "b", "c", "d"}));
  std::vector<ReplicaGroup> groups = ReplicaGroupsFor(config, "key");
  ASSERT_EQ(groups.size(), 2u);
  EXPECT_EQ(groups[0].members, (Ids{"c", "e", "a"}));
  EXPECT_EQ(groups[1].members, (Ids{"c", "a", "b"}));
  EXPECT_EQ(ReplicaUnion(groups), (Ids{"c", "e", "a", "b"}));
  // Previous ids are all current nodes, so the full ranking is just the current one.
  EXPECT_EQ(FullRanking(config, "key"), (Ids{"c", "e", "a", "b", "d"}));
}

TEST(PlacementTest, FullRankingAppendsPreviousOnlyIds) {
  // Parse() never produces this (previous ids must be nodes), but a hand-built config can.
  ClusterConfig config;
  config.epoch = 2;
  for (const char* id : {"a", "c", "e"}) config.nodes.push_back(NodeInfo{id, "", "", 0});
  config.previous = {"a", "b", "c", "d"};
  EXPECT_EQ(FullRanking(config, "key"), (Ids{"c", "e", "a", "b", "d"}));
  std::vector<ReplicaGroup> groups = ReplicaGroupsFor(config, "key");
  ASSERT_EQ(groups.size(), 2u);
  EXPECT_EQ(groups[0].members, (Ids{"c", "e", "a"}));
  EXPECT_EQ(groups[1].members, (Ids{"c", "a", "b"}));
}

TEST(PlacementTest, ReplicaUnionKeepsFirstOccurrence) {
  std::vector<ReplicaGroup> groups = {{{"x", "y", "z"}}, {{"z", "w", "x"}}};
  EXPECT_EQ(ReplicaUnion(groups), (Ids{"x", "y", "z", "w"}));
  EXPECT_TRUE(ReplicaUnion({}).empty());
}

constexpr int kKeys = 10000;

TEST(PlacementTest, BalanceOverFiveNodes) {
  Ids nodes = {"n1", "n2", "n3", "n4", "n5"};
  std::map<std::string, int> primaries;
  std::map<std::string, int> memberships;
  for (int i = 0; i < kKeys; ++i) {
    Ids ranked = RankNodes(nodes, InoPlacementKey(i));
    ++primaries[ranked[0]];
    for (int r = 0; r < 3; ++r) ++memberships[ranked[r]];
  }
  const double even_primary = kKeys / 5.0;
  const double even_member = kKeys * 3 / 5.0;
  for (const std::string& id : nodes) {
    EXPECT_GE(primaries[id], even_primary * 0.9) << id;
    EXPECT_LE(primaries[id], even_primary * 1.1) << id;
    EXPECT_GE(memberships[id], even_member * 0.9) << id;
    EXPECT_LE(memberships[id], even_member * 1.1) << id;
  }
}

TEST(PlacementTest, BalanceForChunkKeys) {
  Ids nodes = {"n1", "n2", "n3", "n4", "n5"};
  std::map<std::string, int> primaries;
  for (int i = 0; i < kKeys; ++i) {
    ++primaries[RankNodes(nodes, ChunkId::Of("chunk " + std::to_string(i)).view())[0]];
  }
  for (const std::string& id : nodes) {
    EXPECT_GE(primaries[id], kKeys / 5.0 * 0.9) << id;
    EXPECT_LE(primaries[id], kKeys / 5.0 * 1.1) << id;
  }
}

TEST(PlacementTest, AddingANodeMovesAboutOneSixth) {
  Ids five = {"n1", "n2", "n3", "n4", "n5"};
  Ids six = {"n1", "n2", "n3", "n4", "n5", "n6"};
  int moved = 0;
  int set_changes_over_one = 0;
  for (int i = 0; i < kKeys; ++i) {
    std::string key = InoPlacementKey(i);
    Ids before = RankNodes(five, key);
    Ids after = RankNodes(six, key);
    if (before[0] != after[0]) {
      ++moved;
      // Rendezvous hashing only ever moves a key to the new node.
      EXPECT_EQ(after[0], "n6") << "key " << i;
    }
    std::set<std::string> old_set(before.begin(), before.begin() + 3);
    int changed = 0;
    for (int r = 0; r < 3; ++r) changed += old_set.count(after[r]) == 0 ? 1 : 0;
    if (changed > 1) ++set_changes_over_one;
  }
  double fraction = static_cast<double>(moved) / kKeys;
  EXPECT_GE(fraction, 0.10);
  EXPECT_LE(fraction, 0.25);
  EXPECT_EQ(set_changes_over_one, 0);  // each replica set gains at most the new node
}

}  // namespace
}  // namespace quorumfs
