// quorumfs-bench-core: micro-benchmark of the cluster core on loopback (N=3, W=2, R=2).
// Starts its own three chunkservers in a temp dir, then measures, each run three times with the
// median printed and min-max beside it:
//   - the disk budget: sequential write + fsync rate of the data disk divided by N, measured
//     with as many bytes as the put phase writes to it (chunks x N MiB)
//   - chunk put MB/s (1 MiB chunks, `--window` in flight)
//   - chunk get MB/s: first read after the put (cold, O_DIRECT on the servers), from the
//     servers' page cache, and cold again (caches dropped; needs root)
//   - record changes/s with 1 and 16 concurrent proposers on distinct existing keys, p50/p99
//   latency
#include <fcntl.h>
#include <kj/vector.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <random>
#include <thread>

#include "bench/local_cluster.h"
#include "common/cluster_client.h"
#include "common/record_key.h"

namespace quorumfs {
namespace {

void Row(const char* name, const char* unit, const Stat& s, const std::string& note = "") {
  std::printf("| %-34s | %10.1f | %10.1f - %-10.1f | %-6s | %s\n", name, s.median, s.min, s.max,
              unit, note.c_str());
}

bool DropCaches() {
  ::sync();
  std::ofstream f("/proc/sys/vm/drop_caches");
  if (!f) return false;
  f << "3\n";
  return static_cast<bool>(f);
}

// Sequential write + fsync of `mib` MiB in `dir`: MB/s.
double DiskWriteRate(const std::string& dir, int mib) {
  std::string path = dir + "/disk-probe";
  std::string buf(1 << 20, 'd');
  auto t0 = Clock::now();
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  for (int i = 0; i < mib; ++i) {
    buf[0] = static_cast<char>(i);
    if (::write(fd, buf.data(), buf.size()) < 0) break;
  }
  ::fsync(fd);
  ::close(fd);
  double s = Seconds(Clock::now() - t0);
  ::unlink(path.c_str());
  return mib * 1.048576 / s;
}

int Run(int argc, char** argv) {
  CLI::App app{"quorumfs-bench-core: cluster core micro-benchmark (3 local chunkservers)"};
  std::string bin, dir = "/tmp";
  int chunks = 256, changes = 2000, runs = 3, window = 16;
  app.add_option("--chunkserver", bin,
                 "path of quorumfs-chunkserver (default: beside this binary)");
  app.add_option("--dir", dir, "where the data dirs go (the disk measured)");
  app.add_option("--chunks", chunks, "1 MiB chunks per run");
  app.add_option("--changes", changes, "record changes per run");
  app.add_option("--runs", runs, "runs per measurement");
  app.add_option("--window", window, "chunk operations in flight");
  bool two_rounds = false;
  app.add_flag("--two-rounds", two_rounds,
               "every record change prepares first (turns off one-round changes, to compare)");
  CLI11_PARSE(app, argc, argv);
  if (bin.empty()) {
    std::string self = argv[0];
    bin = self.substr(0, self.rfind('/') + 1) + "quorumfs-chunkserver";
  }
  char tmpl[4096];
  std::snprintf(tmpl, sizeof(tmpl), "%s/quorumfs-bench-XXXXXX", dir.c_str());
  std::string root = ::mkdtemp(tmpl);

  std::vector<double> disk;
  // As many bytes as the put phase writes to this disk (each chunk on N = 3 servers that share
  // it): a smaller probe is mostly absorbed by the page cache and overstates the disk.
  const int probe_mib = std::max(256, chunks * 3);
  for (int r = 0; r < runs; ++r) disk.push_back(DiskWriteRate(root, probe_mib));
  Stat disk_stat = Summarize(disk);
  double budget = disk_stat.median / 3;

  LocalCluster servers(bin, root);
  auto config = ClusterConfig::Load(servers.cluster_file());
  if (!config.ok()) {
    std::fprintf(stderr, "%s\n", config.status().ToString().c_str());
    return 1;
  }
  ClusterClientOptions copts;
  copts.proposer.one_round_changes = !two_rounds;
  ClusterClient client(std::make_shared<const ClusterConfig>(*config), copts);

  std::mt19937_64 rng(1);
  std::vector<double> put, get_first, get_warm, get_cold;
  for (int r = 0; r < runs; ++r) {
    std::vector<std::shared_ptr<const std::string>> data;
    std::vector<ChunkId> ids;
    for (int i = 0; i < chunks; ++i) {
      std::string d(1 << 20, '\0');
      for (size_t j = 0; j < d.size(); j += 8) {
        uint64_t v = rng();
        std::memcpy(&d[j], &v, 8);
      }
      ids.push_back(ChunkId::Of(d));
      data.push_back(std::make_shared<const std::string>(std::move(d)));
    }
    double s = Pipeline(
        client, chunks, window,
        [&](int i) {
          return client.chunks().Put(ids[i], data[i]).then([](Status st) {
            if (!st.ok()) std::fprintf(stderr, "put: %s\n", st.ToString().c_str());
            return st.ok();
          });
        },
        nullptr);
    put.push_back(chunks * 1.048576 / s);
    // One pass getting every chunk; returns its MB/s.
    auto get_all = [&]() {
      double t = Pipeline(
          client, chunks, window,
          [&](int i) {
            return client.chunks().Get(ids[i]).then([](Result<std::string> d) { return d.ok(); });
          },
          nullptr);
      return chunks * 1.048576 / t;
    };
    // Servers write chunks with O_DIRECT, so nothing of them is cached yet, and read a chunk
    // with O_DIRECT the first time (the "first read" row, from the disk), caching it from its
    // second read on: one more unmeasured pass fills the servers' page cache for the "page
    // cache" row. The "cold" row then reads chunks read before, after the caches are dropped.
    if (DropCaches())
      get_first.push_back(get_all());
    else
      (void)get_all();
    (void)get_all();
    get_warm.push_back(get_all());
    if (DropCaches()) get_cold.push_back(get_all());
  }

  std::vector<double> one_rate, one_p50, one_p99, many_rate, many_p50, many_p99;
  uint64_t key_base = 1 << 20;
  for (int r = 0; r < runs; ++r) {
    for (int concurrency : {1, 16}) {
      std::vector<double> lat;
      // Changes of existing records: a pool of 256 keys, each written once before the clock
      // starts, changed in turn (with 16 in flight, no two concurrent changes share a key).
      const int pool = 256;
      uint64_t base = key_base;
      key_base += pool;
      auto change = [&, base](int i) {
        std::string payload(200, static_cast<char>('a' + i % 26));
        return client.proposer()
            .Change(
                InodeKey(base + i % pool),
                [payload](const std::optional<std::string>&) { return Decision::Write(payload); })
            .then([](Result<RecordValue> v) { return v.ok(); });
      };
      Pipeline(client, pool, concurrency, change, nullptr);
      double s = Pipeline(client, changes, concurrency, change, &lat);
      std::sort(lat.begin(), lat.end());
      double rate = changes / s;
      double p50 = lat[lat.size() / 2] * 1e3, p99 = lat[lat.size() * 99 / 100] * 1e3;
      if (concurrency == 1) {
        one_rate.push_back(rate), one_p50.push_back(p50), one_p99.push_back(p99);
      } else {
        many_rate.push_back(rate), many_p50.push_back(p50), many_p99.push_back(p99);
      }
    }
  }

  std::printf("quorumfs cluster core, 3 chunkservers on loopback, N=3 W=2 R=2, %d runs\n", runs);
  std::printf("| %-34s | %10s | %-23s | %-6s | %s\n", "measure", "median", "min - max", "unit",
              "note");
  Row("disk write+fsync (data dir)", "MB/s", disk_stat);
  Row("budget = disk / N", "MB/s", Stat{budget, disk_stat.min / 3, disk_stat.max / 3});
  Stat put_stat = Summarize(put);
  char note[128];
  std::snprintf(note, sizeof(note), "%.0f%% of budget (target >= 90%%)",
                100 * put_stat.median / budget);
  Row("chunk put, 1 MiB, pipelined", "MB/s", put_stat, note);
  Row("chunk get, page cache", "MB/s", Summarize(get_warm), "target >= 1200");
  if (!get_first.empty())
    Row("chunk get, first read, cold", "MB/s", Summarize(get_first), "O_DIRECT on the servers");
  if (!get_cold.empty()) Row("chunk get, cold", "MB/s", Summarize(get_cold), "read before");
  Row("record change, 1 proposer", "ops/s", Summarize(one_rate));
  Row("  p50 latency", "ms", Summarize(one_p50), "target <= 1 ms");
  Row("  p99 latency", "ms", Summarize(one_p99));
  Row("record change, 16 concurrent", "ops/s", Summarize(many_rate), "target >= 5000");
  Row("  p50 latency", "ms", Summarize(many_p50));
  Row("  p99 latency", "ms", Summarize(many_p99));
  std::fflush(stdout);
  if (std::system(("rm -rf '" + root + "'").c_str()) != 0) return 1;
  return 0;
}

}  // namespace
}  // namespace quorumfs

int main(int argc, char** argv) { return quorumfs::Run(argc, argv); }
