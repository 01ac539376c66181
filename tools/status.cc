#include "tools/status.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <vector>

#include "common/cluster_client.h"
#include "tools/json.h"
#include "tools/quorum_math.h"

namespace quorumfs {

namespace {

std::string Human(uint64_t bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024 && u < 5) v /= 1024, ++u;
  char buf[32];
  std::snprintf(buf, sizeof(buf), u == 0 ? "%.0f %s" : "%.1f %s", v, units[u]);
  return buf;
}

// Calls f(subset) for k-subsets of {0..m-1} in order, until f returns false.
void ForEachSubset(int m, int k, const std::function<bool(const std::vector<int>&)>& f) {
  std::vector<int> idx(k);
  for (int i = 0; i < k; ++i) idx[i] = i;
  while (true) {
    if (!f(idx)) return;
    int i = k - 1;
    while (i >= 0 && idx[i] == m - k + i) --i;
    if (i < 0) return;
    ++idx[i];
    for (int j = i + 1; j < k; ++j) idx[j] = idx[j - 1] + 1;
  }
}

// A count of replica sets: exact up to 2^53, then in three figures.
std::string FormatCount(double v) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), v < 9007199254740992.0 ? "%.0f" : "%.3g", v);
  return buf;
}

}  // namespace

int RunStatus(const std::string& cluster_file, bool json, double timeout_s) {
  auto config = ClusterConfig::Load(cluster_file);
  if (!config.ok()) {
    std::fprintf(stderr, "quorumfs status: %s\n", config.status().message().c_str());
    return 8;
  }
  ClusterClientOptions opts;
  auto t = static_cast<int64_t>(timeout_s * 1e9) * kj::NANOSECONDS;
  opts.rpc.call_timeout = t;
  opts.rpc.connect_timeout = t;
  auto shared = std::make_shared<const ClusterConfig>(*config);
  ClusterClient client(shared, opts);

  struct Row {
    const NodeInfo* node;
    Result<NodeStatsInfo> stats = Status(StatusCode::kUnavailable, "not asked");
    double rtt_ms = 0;
  };
  std::vector<Row> rows;
  for (const auto& n : config->nodes) rows.push_back(Row{&n});
  // Nodes being removed are shown, but no replica set of the new membership includes them.
  for (const auto& n : config->leaving) rows.push_back(Row{&n});
  client.RunSync<bool>([&]() -> kj::Promise<bool> {
    kj::Vector<kj::Promise<void>> all;
    for (auto& row : rows) {
      auto start = std::chrono::steady_clock::now();
      Row* r = &row;
      all.add(client.rpc().Stats(row.node->id).then([r, start](Result<NodeStatsInfo>&& s) {
        r->rtt_ms =
            std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
                .count();
        r->stats = std::move(s);
      }));
    }
    return kj::joinPromises(all.releaseAsArray()).then([]() { return true; });
  });

  // A node counts towards quorums if it answers, votes, and is at our epoch.
  std::vector<bool> usable;
  for (const auto& r : rows) {
    usable.push_back(r.stats.ok() && r.stats->voting && r.stats->epoch == config->epoch);
  }
  auto usable_id = [&](const std::string& id) {
    for (size_t i = 0; i < rows.size(); ++i) {
      if (rows[i].node->id == id) return static_cast<bool>(usable[i]);
    }
    return false;  // named in `previous` only: not reachable under this file
  };
  int m = static_cast<int>(config->nodes.size());
  int n = config->replicas;
  int need = std::max(config->write_quorum, config->read_quorum);
  // Every N-subset of the membership is some key's replica set. During a membership change
  // (`previous`) every quorum is joint: a key needs its old replica set's quorums too, so the
  // old membership's sets count as well.
  std::vector<std::vector<std::string>> memberships = {config->NodeIds()};
  if (config->InTransition()) memberships.push_back(config->previous);
  // Counted, not enumerated (C(M, N) sets: 40 nodes at N = 20 are 1.4e11): a set lacks a
  // quorum iff it holds fewer than `need` usable nodes.
  double sets = 0, sets_broken = 0;
  std::vector<std::string> broken;
  int worst_down = 0;  // unusable nodes in the membership with the most
  for (size_t k = 0; k < memberships.size(); ++k) {
    const auto& members = memberships[k];
    int size = static_cast<int>(members.size());
    if (size < n) continue;
    std::vector<int> down_idx;
    for (int i = 0; i < size; ++i) {
      if (!usable_id(members[i])) down_idx.push_back(i);
    }
    int down = static_cast<int>(down_idx.size());
    worst_down = std::max(worst_down, down);
    sets += Binomial(size, n);
    for (int j = 0; j < need; ++j) sets_broken += Binomial(size - down, j) * Binomial(down, n - j);
    // Examples: n - need + 1 unusable nodes, the set filled up in membership order.
    int t = n - need + 1;
    if (down < t || broken.size() >= 5) continue;
    int tries = 0;
    ForEachSubset(down, t, [&](const std::vector<int>& pick) {
      std::vector<bool> in(size, false);
      for (int p : pick) in[down_idx[p]] = true;
      for (int i = 0, more = n - t; i < size && more > 0; ++i) {
        if (!in[i]) {
          in[i] = true;
          --more;
        }
      }
      std::string name;
      for (int i = 0; i < size; ++i) {
        if (in[i]) name += (name.empty() ? "" : ",") + members[i];
      }
      name = "{" + name + "}" + (k == 0 ? "" : " (previous membership)");
      // Different picks can fill up to one set: each is named once, and the search is bounded.
      if (std::find(broken.begin(), broken.end(), name) == broken.end()) broken.push_back(name);
      return broken.size() < 5 && ++tries < 10000;
    });
  }
  bool healthy = sets_broken == 0;
  std::string verdict;
  if (healthy && worst_down == 0) {
    verdict = "HEALTHY: all " + std::to_string(m) + " nodes up; every replica set has its quorums";
  } else if (healthy) {
    // The worst replica set holds min(down, N) of the unusable nodes.
    int more = n - need - std::min(worst_down, n);
    int all = static_cast<int>(rows.size());
    int all_down = static_cast<int>(std::count(usable.begin(), usable.end(), false));
    verdict = "DEGRADED: " + std::to_string(all_down) + " of " + std::to_string(all) +
              " nodes unusable; every replica set still has its quorums (the worst one tolerates " +
              std::to_string(more) + " more failure" + (more == 1 ? "" : "s") + ")";
  } else {
    verdict = "UNAVAILABLE: " + FormatCount(sets_broken) + " of " + FormatCount(sets) +
              " replica sets lack a quorum (e.g. ";
    for (size_t i = 0; i < broken.size(); ++i) verdict += (i ? " " : "") + broken[i];
    verdict += "); data on them cannot be changed";
  }

  // Full: not even one more chunk fits beyond the node's reserve.
  auto full = [&](const NodeStatsInfo& s) { return s.available < config->chunk_size; };
  if (json) {
    JsonWriter j;
    j.BeginObject();
    j.Key("cluster_file").String(cluster_file);
    j.Key("epoch").Number(static_cast<double>(config->epoch));
    j.Key("replicas").Number(n);
    j.Key("write_quorum").Number(config->write_quorum);
    j.Key("read_quorum").Number(config->read_quorum);
    j.Key("nodes").BeginArray();
    for (const auto& r : rows) {
      j.BeginObject();
      j.Key("id").String(r.node->id);
      j.Key("address").String(r.node->address);
      j.Key("up").Bool(r.stats.ok());
      j.Key("leaving").Bool(&r - rows.data() >= m);
      if (r.stats.ok()) {
        j.Key("rtt_ms").Number(r.rtt_ms);
        j.Key("version").String(r.stats->version);
        j.Key("epoch").Number(static_cast<double>(r.stats->epoch));
        j.Key("voting").Bool(r.stats->voting);
        j.Key("incarnation").String(r.stats->incarnation);
        j.Key("capacity").Number(static_cast<double>(r.stats->capacity));
        j.Key("used").Number(static_cast<double>(r.stats->used));
        j.Key("available").Number(static_cast<double>(r.stats->available));
        j.Key("full").Bool(full(*r.stats));
        j.Key("chunks").Number(static_cast<double>(r.stats->chunk_count));
        j.Key("chunk_bytes").Number(static_cast<double>(r.stats->chunk_bytes));
        j.Key("records").Number(static_cast<double>(r.stats->record_count));
      } else {
        j.Key("error").String(r.stats.status().ToString());
      }
      j.EndObject();
    }
    j.EndArray();
    j.Key("replica_sets").Number(sets);
    j.Key("replica_sets_with_quorum").Number(sets - sets_broken);
    j.Key("healthy").Bool(healthy);
    j.Key("verdict").String(verdict);
    j.EndObject();
    std::printf("%s\n", j.str().c_str());
  } else {
    std::printf("cluster %s: epoch %llu, N=%d W=%d R=%d, %d nodes\n\n", cluster_file.c_str(),
                static_cast<unsigned long long>(config->epoch), n, config->write_quorum,
                config->read_quorum, m);
    std::printf("%-8s %-22s %-5s %8s %-8s %10s %10s %9s %9s  %s\n", "NODE", "ADDRESS", "STATE",
                "RTT", "VERSION", "CAPACITY", "USED", "CHUNKS", "RECORDS", "NOTE");
    for (const auto& r : rows) {
      if (r.stats.ok()) {
        std::string note;
        if (full(*r.stats)) {
          note = "FULL: new chunks refused (" + Human(r.stats->available) +
                 " free beyond its --reserve); fsck --gc frees what removed files held";
        }
        if (&r - rows.data() >= m) note = "leaving: fsck --rebalance moves its keys off";
        if (!r.stats->voting) note = "rejoining: not voting until fsck --repair refills it";
        if (r.stats->epoch != config->epoch) {
          note = "epoch " + std::to_string(r.stats->epoch) + " differs from the cluster file's";
        }
        std::printf("%-8s %-22s %-5s %6.2fms %-8s %10s %10s %9llu %9llu  %s\n", r.node->id.c_str(),
                    r.node->address.c_str(), "up", r.rtt_ms, r.stats->version.c_str(),
                    Human(r.stats->capacity).c_str(), Human(r.stats->used).c_str(),
                    static_cast<unsigned long long>(r.stats->chunk_count),
                    static_cast<unsigned long long>(r.stats->record_count), note.c_str());
      } else {
        std::printf("%-8s %-22s %-5s %8s %-8s %10s %10s %9s %9s  %s\n", r.node->id.c_str(),
                    r.node->address.c_str(), "DOWN", "-", "-", "-", "-", "-", "-",
                    r.stats.status().message().c_str());
      }
    }
    std::printf("\nreplica sets with read and write quorum: %s of %s\n",
                FormatCount(sets - sets_broken).c_str(), FormatCount(sets).c_str());
    std::printf("%s\n", verdict.c_str());
  }
  return healthy ? 0 : 2;
}

}  // namespace quorumfs
