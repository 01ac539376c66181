// quorumfs: the admin CLI.
//   quorumfs status --cluster FILE [--json]
//   quorumfs fsck   --cluster FILE [--repair] [--gc] [--deep] [--rebalance] [--path P] [--json]
//   quorumfs quorum --n N --w W --r R --p P [--nodes M] [--simulate] [--json]
// Exit codes: fsck as fsck(8) (0 clean, 1 all fixed, 4 errors left, 8 operational error);
// status 0 when every replica set has its quorums, 2 when some lack one, 8 on a bad cluster
// file; quorum 0, or 8 for impossible parameters; 16 for a usage error.
#include <CLI/CLI.hpp>
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "common/memory.h"
#include "tools/fsck.h"
#include "tools/json.h"
#include "tools/quorum_math.h"
#include "tools/status.h"

namespace quorumfs {
namespace {

void PrintFigures(const char* label, const QuorumFigures& f, int m) {
  std::printf("  %-44s %12.9f  (%.6f%%)\n", "P(write quorum: >= W of the N replicas up)",
              f.write_available, 100 * f.write_available);
  std::printf("  %-44s %12.9f  (%.6f%%)\n", "P(read quorum: >= R of the N replicas up)",
              f.read_available, 100 * f.read_available);
  std::printf("  %-44s %12.9f  (%.6f%%)\n", "P(both quorums for one replica set)", f.both_available,
              100 * f.both_available);
  char buf[96];
  std::snprintf(buf, sizeof(buf), "expected fraction of replica sets available");
  std::printf("  %-44s %12.9f  (%.6f%%)\n", buf, f.expected_sets_available,
              100 * f.expected_sets_available);
  std::snprintf(buf, sizeof(buf), "P(every replica set available, M=%d)", m);
  std::printf("  %-44s %12.9f  (%.6f%%)   [%s]\n", buf, f.all_sets_available,
              100 * f.all_sets_available, label);
}

int RunQuorum(int n, int w, int r, double p, int m, bool simulate, int64_t trials, bool json) {
  if (n < 1 || w < 1 || r < 1 || w > n || r > n || !(p >= 0 && p <= 1) || m < n) {
    std::fprintf(stderr, "quorumfs quorum: need 1 <= W,R <= N, 0 <= P <= 1 and --nodes >= N\n");
    return 8;
  }
  QuorumFigures f = ComputeQuorum(n, w, r, p, m);
  QuorumFigures s;
  if (simulate) s = SimulateQuorum(n, w, r, p, m, trials, 12345);
  if (json) {
    JsonWriter j;
    j.BeginObject();
    j.Key("n").Number(n);
    j.Key("w").Number(w);
    j.Key("r").Number(r);
    j.Key("p").Number(p);
    j.Key("nodes").Number(m);
    auto put = [&](const char* key, const QuorumFigures& q) {
      j.Key(key).BeginObject();
      j.Key("write_available").Number(q.write_available);
      j.Key("read_available").Number(q.read_available);
      j.Key("both_available").Number(q.both_available);
      j.Key("expected_sets_available").Number(q.expected_sets_available);
      j.Key("all_sets_available").Number(q.all_sets_available);
      j.EndObject();
    };
    put("closed_form", f);
    if (simulate) put("monte_carlo", s);
    j.Key("reads_see_latest_write").Bool(f.reads_see_latest);
    j.Key("write_failures_tolerated").Number(f.write_failures_tolerated);
    j.Key("read_failures_tolerated").Number(f.read_failures_tolerated);
    j.EndObject();
    std::printf("%s\n", j.str().c_str());
    return 0;
  }
  std::printf("N=%d W=%d R=%d, each node up with probability p=%g, cluster of M=%d nodes\n\n", n, w,
              r, p, m);
  std::printf("  R + W > N (every read sees the latest write): %s\n",
              f.reads_see_latest ? "yes" : "NO - reads may miss acknowledged writes");
  std::printf("  failures tolerated per replica set: writes %d, reads %d\n\n",
              f.write_failures_tolerated, f.read_failures_tolerated);
  std::printf("closed form: P(>= q of n up) = sum_{k>=q} C(n,k) p^k (1-p)^(n-k)\n");
  PrintFigures("closed form", f, m);
  if (simulate) {
    std::printf("\nMonte Carlo, %lld trials:\n", static_cast<long long>(trials));
    PrintFigures("Monte Carlo", s, m);
  }
  return 0;
}

}  // namespace
}  // namespace quorumfs

namespace {

// A number of seconds between lo and hi. CLI11's own range checks let nan
// through (every comparison with it is false), and a huge value overflows the conversion to
// nanoseconds.
CLI::Validator FiniteBetween(double lo, double hi) {
  return CLI::Validator(
      [lo, hi](std::string& text) -> std::string {
        char* end = nullptr;
        double v = std::strtod(text.c_str(), &end);
        if (text.empty() || end == text.c_str() || *end != '\0' || !std::isfinite(v) || v < lo ||
            v > hi) {
          return "must be a number from " + CLI::detail::to_string(lo) + " to " +
                 CLI::detail::to_string(hi) + ", not " + text;
        }
        return std::string();
      },
      "NUMBER");
}

}  // namespace

int main(int argc, char** argv) {
  quorumfs::KeepLargeBuffersInHeap();
  CLI::App app{"quorumfs: administer a quorumfs cluster"};
  app.require_subcommand(1);
  std::string cluster = "/etc/quorumfs/cluster.conf";
  bool json = false;

  auto* status = app.add_subcommand("status", "one screen on every node and the cluster's quorums");
  double status_timeout = 2.0;
  status->add_option("--cluster", cluster, "cluster file")->capture_default_str();
  status->add_flag("--json", json, "machine-readable output");
  status->add_option("--timeout", status_timeout, "seconds to wait for each node")
      ->check(FiniteBetween(0.001, 1e6));

  auto* quorum = app.add_subcommand("quorum", "availability of N/W/R quorums (closed form)");
  int n = 3, w = 2, r = 2, m = 0;
  double p = 0.99;
  bool simulate = false;
  int64_t trials = 1000000;
  quorum->add_option("--n", n, "replicas per key")->required();
  quorum->add_option("--w", w, "write quorum")->required();
  quorum->add_option("--r", r, "read quorum")->required();
  quorum->add_option("--p", p, "probability that one node is up")->required();
  quorum->add_option("--nodes", m, "nodes in the cluster (default N)");
  quorum->add_flag("--simulate", simulate, "check the closed form by Monte Carlo");
  quorum->add_option("--trials", trials, "Monte Carlo trials")->check(CLI::PositiveNumber);
  quorum->add_flag("--json", json, "machine-readable output");

  auto* fsck = app.add_subcommand("fsck", "check (and with --repair heal) the cluster");
  quorumfs::FsckOptions fo;
  fsck->add_option("--cluster", cluster, "cluster file")->capture_default_str();
  fsck->add_flag("--repair", fo.repair, "fix what is found");
  fsck->add_flag("--gc", fo.gc,
                 "delete unreferenced chunks, old tombstones, dead inodes and decided "
                 "transaction records past the grace period");
  fsck->add_flag("--deep", fo.deep, "read and hash every chunk replica");
  fsck->add_flag("--rebalance", fo.rebalance, "move data to new replica sets after a change");
  fsck->add_option("--path", fo.path, "check only this subtree");
  fsck->add_option("--jobs", fo.jobs, "parallel requests")->check(CLI::Range(1, 4096));
  fsck->add_option("--grace", fo.grace_s, "GC grace period, seconds (default 86400)")
      ->check(FiniteBetween(0, 1e9));
  fsck->add_flag("--no-writers", fo.no_writers,
                 "confirm that no mount is writing (needed for --grace under 1200 s)");
  fsck->add_flag("--drop-stale-copies", fo.drop_stale_copies,
                 "with --repair: also drop record copies on nodes outside their replica sets "
                 "that no replica holds as new (only if no membership change was installed "
                 "without its rebalance)");
  fsck->add_option("--recount-quiet", fo.recount_quiet_s,
                   "seconds a directory must be unchanged before --repair rewrites its counts "
                   "(default 62: the birth grace and twice the clock-skew bound; less only if "
                   "no create or unlink can take that long)")
      ->check(FiniteBetween(0.001, 1e6));
  fsck->add_option("--timeout", fo.timeout_s, "seconds an operation waits for a quorum")
      ->check(FiniteBetween(0.001, 1e6));
  fsck->add_flag("--json", json, "machine-readable output");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help prints and exits 0; a usage error exits 16, as fsck(8) does.
    int code = app.exit(e);
    return code == 0 ? 0 : 16;
  }
  if (status->parsed()) return quorumfs::RunStatus(cluster, json, status_timeout);
  if (quorum->parsed()) {
    return quorumfs::RunQuorum(n, w, r, p, m ? m : n, simulate, trials, json);
  }
  if (fsck->parsed()) {
    fo.cluster_file = cluster;
    fo.json = json;
    return quorumfs::RunFsck(fo);
  }
  return 8;
}
