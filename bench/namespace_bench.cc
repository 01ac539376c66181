// quorumfs-bench-namespace: namespace operations per second against three local chunkservers
// (N=3, W=2, R=2), with 1 and 16 operations in flight: create, stat (lookup + getattr),
// rename within a directory, move to another directory, rename over an existing name, unlink,
// and readdir + getattr of a 10,000-entry directory. Each measurement runs `--runs` times; the
// median is printed with min-max beside it.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <map>

#include "bench/local_cluster.h"
#include "common/record_key.h"

namespace quorumfs {
namespace {

// Reports the first failure of an operation kind (and counts them), so a failing operation is
// named rather than only counted.
bool Ok(const char* what, const Status& s) {
  static std::map<std::string, int> failures;
  if (s.ok()) return true;
  if (failures[what]++ == 0) std::fprintf(stderr, "%s failed: %s\n", what, s.ToString().c_str());
  return false;
}

int Run(int argc, char** argv) {
  CLI::App app{"quorumfs-bench-namespace"};
  std::string bin, dir = "/tmp";
  int n = 2000, runs = 3, list_n = 10000;
  app.add_option("--chunkserver", bin, "path of quorumfs-chunkserver");
  app.add_option("--dir", dir, "where the data dirs go");
  app.add_option("--ops", n, "operations per measurement");
  app.add_option("--runs", runs, "runs per measurement");
  app.add_option("--list", list_n, "entries in the listed directory");
  bool two_rounds = false;
  bool counters = false;
  app.add_flag("--counters", counters,
               "print the proposer's work per operation after each measurement (to stderr)");
  app.add_flag("--two-rounds", two_rounds,
               "every record change prepares first (turns off one-round changes, to compare)");
  bool create_prereads = false;
  app.add_flag("--create-prereads", create_prereads,
               "every create reads the parent and the entry first (as before 2026-11-27, to "
               "compare)");
  CLI11_PARSE(app, argc, argv);
  if (bin.empty()) {
    std::string self = argv[0];
    bin = self.substr(0, self.rfind('/') + 1) + "quorumfs-chunkserver";
  }
  char tmpl[4096];
  std::snprintf(tmpl, sizeof(tmpl), "%s/quorumfs-nsbench-XXXXXX", dir.c_str());
  std::string root = ::mkdtemp(tmpl);
  std::map<std::string, std::vector<double>> results;
  {
    LocalCluster servers(bin, root);
    auto config = ClusterConfig::Load(servers.cluster_file());
    if (!config.ok()) return 1;
    ClusterClientOptions copts;
    copts.proposer.one_round_changes = !two_rounds;
    copts.ns.create_skips_prereads = !create_prereads;
    ClusterClient client(std::make_shared<const ClusterConfig>(*config), copts);
    Namespace& ns = client.ns();
    auto root_ino = client.RunSync<Result<Inode>>([&]() { return ns.EnsureRoot(); });
    if (!root_ino.ok()) {
      std::fprintf(stderr, "%s\n", root_ino.status().ToString().c_str());
      return 1;
    }
    // Per-operation proposer work of the measurement just made (--counters).
    Proposer::Counters last = client.proposer().counters();
    auto report = [&](const std::string& what, int ops) {
      Proposer::Counters now = client.proposer().counters();
      if (counters) {
        double k = 1.0 / ops;
        std::fprintf(stderr,
                     "%-36s per op: changes %.2f one-round %.2f (failed %.2f) first-writes %.2f "
                     "(failed %.2f) fast-reads %.2f slow-reads %.2f conflicts %.2f\n",
                     what.c_str(), k * (now.changes - last.changes),
                     k * (now.one_round - last.one_round),
                     k * (now.one_round_failed - last.one_round_failed),
                     k * (now.first_writes - last.first_writes),
                     k * (now.first_writes_failed - last.first_writes_failed),
                     k * (now.fast_reads - last.fast_reads), k * (now.slow_reads - last.slow_reads),
                     k * (now.conflicts - last.conflicts));
      }
      last = now;
    };
    int dir_seq = 0;
    for (int r = 0; r < runs; ++r) {
      for (int conc : {1, 16}) {
        std::string tag = conc == 1 ? " (1 in flight)" : " (16 in flight)";
        CreateRequest d;
        d.type = FileType::kDirectory;
        auto new_dir = [&]() {
          return client.RunSync<Result<Inode>>(
              [&]() { return ns.Create(kRootIno, "d" + std::to_string(dir_seq++), d); });
        };
        auto dir_r = new_dir();
        if (!dir_r.ok()) return 1;
        uint64_t parent = dir_r->ino;
        auto name = [](int i) { return "f" + std::to_string(i); };
        auto renamed = [](int i) { return "r" + std::to_string(i); };
        CreateRequest f;
        double s = Pipeline(
            client, n, conc,
            [&](int i) {
              return ns.Create(parent, name(i), f).then([](Result<Inode> x) {
                return Ok("create", x.status());
              });
            },
            nullptr);
        results["create" + tag].push_back(n / s);
        report("create" + tag, n);
        s = Pipeline(
            client, n, conc,
            [&](int i) {
              return ns.Lookup(parent, name(i)).then([&ns](Result<Inode> x) -> kj::Promise<bool> {
                if (!x.ok()) return false;
                return ns.GetAttr(x->ino).then([](Result<Inode> y) { return y.ok(); });
              });
            },
            nullptr);
        results["stat (lookup+getattr)" + tag].push_back(n / s);
        report("stat (lookup+getattr)" + tag, n);
        s = Pipeline(
            client, n, conc,
            [&](int i) {
              return ns.Rename(parent, name(i), parent, renamed(i)).then([](Status x) {
                return Ok("rename", x);
              });
            },
            nullptr);
        results["rename within a dir" + tag].push_back(n / s);
        report("rename within a dir" + tag, n);
        auto other = new_dir();
        if (!other.ok()) return 1;
        const uint64_t to = other->ino;
        s = Pipeline(
            client, n, conc,
            [&](int i) {
              return ns.Rename(parent, renamed(i), to, renamed(i)).then([](Status x) {
                return Ok("move", x);
              });
            },
            nullptr);
        results["move to another dir" + tag].push_back(n / s);
        report("move to another dir" + tag, n);
        // The "write a temporary file, rename it over the real one" pattern: a new file renamed
        // over an existing name in the same directory (timed: the renames only).
        auto temp = [](int i) { return "t" + std::to_string(i); };
        Pipeline(
            client, n, conc,
            [&](int i) {
              return ns.Create(to, temp(i), f).then([](Result<Inode> x) {
                return Ok("create", x.status());
              });
            },
            nullptr);
        s = Pipeline(
            client, n, conc,
            [&](int i) {
              return ns.Rename(to, temp(i), to, renamed(i)).then([](Status x) {
                return Ok("rename over", x);
              });
            },
            nullptr);
        results["rename over a name" + tag].push_back(n / s);
        report("rename over a name" + tag, n);
        s = Pipeline(
            client, n, conc,
            [&](int i) {
              return ns.Unlink(to, renamed(i)).then([](Status x) { return Ok("unlink", x); });
            },
            nullptr);
        results["unlink" + tag].push_back(n / s);
        report("unlink" + tag, n);
      }
      // readdir + getattr of a large directory.
      CreateRequest d;
      d.type = FileType::kDirectory;
      auto big = client.RunSync<Result<Inode>>(
          [&]() { return ns.Create(kRootIno, "big" + std::to_string(r), d); });
      if (!big.ok()) return 1;
      CreateRequest f;
      Pipeline(
          client, list_n, 16,
          [&](int i) {
            return ns.Create(big->ino, "e" + std::to_string(i), f).then([](Result<Inode> x) {
              return x.ok();
            });
          },
          nullptr);
      auto t0 = Clock::now();
      size_t listed = client.RunSync<size_t>([&]() -> kj::Promise<size_t> {
        auto count = std::make_shared<size_t>(0);
        auto page = std::make_shared<std::function<kj::Promise<size_t>(uint64_t)>>();
        *page = [&ns, big, count, page](uint64_t off) -> kj::Promise<size_t> {
          return ns.ReadDir(big->ino, off, 1024)
              .then([&ns, count, page](Result<DirListing> l) -> kj::Promise<size_t> {
                if (!l.ok()) return *count;
                // As readdirplus does: the page's inodes in one batched read.
                std::vector<uint64_t> inos;
                for (const auto& e : l->entries) inos.push_back(e.ino);
                bool end = l->end || l->entries.empty();
                uint64_t next = l->entries.empty() ? 0 : l->entries.back().offset;
                return ns.GetAttrMany(std::move(inos))
                    .then([count, page, end,
                           next](std::vector<Result<Inode>>&& a) -> kj::Promise<size_t> {
                      for (const auto& in : a) {
                        if (in.ok()) ++*count;
                      }
                      if (end) return *count;
                      return (*page)(next);
                    });
              });
        };
        return (*page)(0).attach(kj::heap(page));
      });
      results["readdir+getattr " + std::to_string(list_n) + " entries (s)"].push_back(
          Seconds(Clock::now() - t0));
      if (listed != static_cast<size_t>(list_n)) {
        std::fprintf(stderr, "listed %zu of %d entries\n", listed, list_n);
      }
    }
  }
  std::printf("quorumfs namespace, 3 chunkservers on loopback, N=3 W=2 R=2, %d runs of %d ops\n",
              runs, n);
  std::printf("| %-40s | %10s | %-23s |\n", "operation", "median", "min - max");
  for (const auto& [name, v] : results) {
    Stat st = Summarize(v);
    bool seconds = name.find("(s)") != std::string::npos;
    int prec = seconds ? 3 : 1;  // a listing takes a fraction of a second
    std::printf("| %-40s | %10.*f | %10.*f - %-10.*f |%s\n", name.c_str(), prec, st.median, prec,
                st.min, prec, st.max, seconds ? " s" : " ops/s");
  }
  if (std::system(("rm -rf '" + root + "'").c_str()) != 0) return 1;
  return 0;
}

}  // namespace
}  // namespace quorumfs

int main(int argc, char** argv) { return quorumfs::Run(argc, argv); }
