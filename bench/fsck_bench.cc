// quorumfs-bench-fsck: how long `quorumfs fsck` takes on a namespace of --files files holding
// --bytes in total (default 10,000 files / 2 GiB, in 100 directories) on three local
// chunkservers (N=3, W=2, R=2). Prints the median (min-max) of --runs checks and of --runs
// `--deep` checks (every replica read and hashed), with the data rate of the deep check.
#include <sys/resource.h>
#include <sys/wait.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <random>
#include <tuple>

#include "bench/local_cluster.h"

namespace quorumfs {
namespace {

// Distinct bytes per file (so no two chunks are the same), fast to make.
std::string FileBytes(uint64_t seed, size_t size) {
  std::string out(size, '\0');
  std::mt19937_64 rng(seed * 0x9E3779B97F4A7C15ull + 1);
  for (size_t i = 0; i < size; i += 8) {
    uint64_t v = rng();
    std::memcpy(&out[i], &v, std::min<size_t>(8, size - i));
  }
  return out;
}

// Runs fsck in a child process (as an operator would: its own client, its own threads), with
// its output discarded; returns (seconds, exit code, peak resident set in MiB).
std::tuple<double, int, double> TimeFsck(const std::string& cli, const std::string& cluster_file,
                                         bool deep) {
  auto t0 = Clock::now();
  pid_t pid = ::fork();
  if (pid == 0) {
    int null = ::open("/dev/null", O_WRONLY);
    ::dup2(null, 1);
    ::dup2(null, 2);
    if (deep) {
      ::execl(cli.c_str(), cli.c_str(), "fsck", "--cluster", cluster_file.c_str(), "--deep",
              nullptr);
    } else {
      ::execl(cli.c_str(), cli.c_str(), "fsck", "--cluster", cluster_file.c_str(), nullptr);
    }
    ::_exit(127);
  }
  int status = 0;
  struct rusage ru {};
  ::wait4(pid, &status, 0, &ru);
  return {Seconds(Clock::now() - t0), WIFEXITED(status) ? WEXITSTATUS(status) : -1,
          static_cast<double>(ru.ru_maxrss) / 1024.0};
}

int Run(int argc, char** argv) {
  CLI::App app{"quorumfs-bench-fsck"};
  std::string bin, cli, dir = "/tmp";
  int files = 10000, runs = 3, dirs = 100;
  bool no_deep = false;
  uint64_t bytes = 2ull << 30;
  app.add_option("--chunkserver", bin, "path of quorumfs-chunkserver");
  app.add_option("--cli", cli, "path of the quorumfs CLI");
  app.add_option("--dir", dir, "where the data dirs go");
  app.add_option("--files", files, "files in the namespace");
  app.add_option("--dirs", dirs, "directories they are spread over");
  app.add_option("--bytes", bytes, "total bytes of the files");
  app.add_option("--runs", runs, "runs per measurement");
  app.add_flag("--no-deep", no_deep, "time the check only");
  CLI11_PARSE(app, argc, argv);
  std::string self = argv[0];
  std::string here = self.substr(0, self.rfind('/') + 1);
  if (bin.empty()) bin = here + "quorumfs-chunkserver";
  if (cli.empty()) cli = here + "quorumfs";
  char tmpl[4096];
  std::snprintf(tmpl, sizeof(tmpl), "%s/quorumfs-fsckbench-XXXXXX", dir.c_str());
  std::string root = ::mkdtemp(tmpl);
  int code = 0;
  {
    LocalCluster servers(bin, root);
    auto config = ClusterConfig::Load(servers.cluster_file());
    if (!config.ok()) return 1;
    ClusterClient client(std::make_shared<const ClusterConfig>(*config), ClusterClientOptions{});
    Namespace& ns = client.ns();
    if (!client.RunSync<Result<Inode>>([&]() { return ns.EnsureRoot(); }).ok()) return 1;
    std::vector<uint64_t> parents;
    for (int d = 0; d < dirs; ++d) {
      CreateRequest req;
      req.type = FileType::kDirectory;
      auto r = client.RunSync<Result<Inode>>(
          [&]() { return ns.Create(kRootIno, "d" + std::to_string(d), req); });
      if (!r.ok()) return 1;
      parents.push_back(r->ino);
    }
    const size_t per_file = bytes / static_cast<uint64_t>(files);
    std::printf("filling: %d files of %zu bytes in %d directories...\n", files, per_file, dirs);
    std::fflush(stdout);
    double fill = Pipeline(
        client, files, 32,
        [&](int i) -> kj::Promise<bool> {
          CreateRequest req;
          uint64_t parent = parents[i % parents.size()];
          return ns.Create(parent, "f" + std::to_string(i), req)
              .then([&, i](Result<Inode> in) -> kj::Promise<bool> {
                if (!in.ok()) return false;
                auto data = std::make_shared<const std::string>(FileBytes(i, per_file));
                ChunkId id = ChunkId::Of(*data);
                uint64_t ino = in->ino;
                return client.chunks().Put(id, data).then(
                    [&, ino, id, size = data->size()](Status s) -> kj::Promise<bool> {
                      if (!s.ok()) return false;
                      LayoutUpdate u;
                      u.slots.push_back({0, Slot{}, Slot{id, static_cast<uint32_t>(size)}});
                      u.written_end = size;
                      return ns.PublishLayout(ino, u, std::make_shared<LayoutConflict>())
                          .then([](Result<Inode> r) { return r.ok(); });
                    });
              });
        },
        nullptr);
    std::printf("filled in %.1f s\n", fill);
    std::vector<double> check, deep, rss;
    for (int r = 0; r < runs; ++r) {
      auto [s, c, m] = TimeFsck(cli, servers.cluster_file(), false);
      check.push_back(s);
      rss.push_back(m);
      if (c != 0) code = 1, std::fprintf(stderr, "fsck exited %d\n", c);
      if (no_deep) continue;
      auto [ds, dc, dm] = TimeFsck(cli, servers.cluster_file(), true);
      deep.push_back(ds);
      if (dc != 0) code = 1, std::fprintf(stderr, "fsck --deep exited %d\n", dc);
    }
    Stat c = Summarize(check), m = Summarize(rss);
    std::printf("\n%-44s %10s %16s\n", "measurement", "median", "min-max");
    std::printf("%-44s %9.2fs %7.2f-%-7.2fs\n", "fsck (check)", c.median, c.min, c.max);
    std::printf("%-44s %7.0fMiB %7.0f-%-7.0fMiB  (%.1f KiB per file)\n",
                "fsck (check): peak resident memory", m.median, m.min, m.max,
                m.median * 1024.0 / files);
    if (!no_deep) {
      Stat d = Summarize(deep);
      double replica_bytes = 3.0 * static_cast<double>(per_file) * files;
      std::printf("%-44s %9.2fs %7.2f-%-7.2fs  (%.0f MB/s of replicas)\n",
                  "fsck --deep (every replica read and hashed)", d.median, d.min, d.max,
                  replica_bytes / d.median / 1e6);
    }
  }
  std::string rm = "rm -rf '" + root + "'";
  if (std::system(rm.c_str()) != 0) std::fprintf(stderr, "could not remove %s\n", root.c_str());
  return code;
}

}  // namespace
}  // namespace quorumfs

int main(int argc, char** argv) { return quorumfs::Run(argc, argv); }
