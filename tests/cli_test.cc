// `quorumfs status` and `quorumfs quorum` (issue: admin CLI), and tools/quorum_math.h.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <set>

#include "tests/admin_test_util.h"
#include "tests/test_cluster.h"
#include "tools/json.h"
#include "tools/quorum_math.h"

namespace quorumfs {
namespace {

using testing::CliResult;
using testing::TestCluster;

// The number after "key": inside the object that follows "object": (or anywhere when
// `object` is empty). NaN if absent.
double JsonNumber(const std::string& json, const std::string& object, const std::string& key) {
  size_t from = 0;
  if (!object.empty()) {
    from = json.find("\"" + object + "\":{");
    if (from == std::string::npos) return NAN;
  }
  size_t at = json.find("\"" + key + "\":", from);
  if (at == std::string::npos) return NAN;
  return std::strtod(json.c_str() + at + key.size() + 3, nullptr);
}

std::string TmpDir() {
  const char* t = std::getenv("TMPDIR");
  return t ? t : "/tmp";
}

CliResult Quorum(std::vector<std::string> args) {
  std::vector<std::string> full = {"quorum"};
  full.insert(full.end(), args.begin(), args.end());
  return testing::RunCli(full, TmpDir());
}

// ---- tools/quorum_math.h -------------------------------------------------------------------

TEST(QuorumMath, Binomial) {
  EXPECT_EQ(Binomial(3, 0), 1);
  EXPECT_EQ(Binomial(3, 2), 3);
  EXPECT_EQ(Binomial(5, 3), 10);
  EXPECT_EQ(Binomial(10, 5), 252);
  EXPECT_EQ(Binomial(3, 4), 0);
  EXPECT_EQ(Binomial(3, -1), 0);
}

TEST(QuorumMath, AtLeastUpByHand) {
  EXPECT_NEAR(AtLeastUp(3, 2, 0.9), 0.972, 1e-12);  // 3 * .81 * .1 + .729
  EXPECT_NEAR(AtLeastUp(3, 2, 0.5), 0.5, 1e-12);
  EXPECT_NEAR(AtLeastUp(5, 3, 0.9), 0.99144, 1e-12);  // .0729 + .32805 + .59049
  EXPECT_NEAR(AtLeastUp(5, 3, 0.5), 0.5, 1e-12);
  EXPECT_NEAR(AtLeastUp(3, 3, 0.9), 0.729, 1e-12);
  EXPECT_NEAR(AtLeastUp(3, 1, 0.9), 0.999, 1e-12);
  EXPECT_NEAR(AtLeastUp(3, 3, 0.5), 0.125, 1e-12);
  EXPECT_NEAR(AtLeastUp(3, 1, 0.5), 0.875, 1e-12);
  EXPECT_NEAR(AtLeastUp(4, 0, 0.3), 1.0, 1e-12);
  EXPECT_EQ(AtLeastUp(3, 2, 1.0), 1.0);
  EXPECT_EQ(AtLeastUp(3, 2, 0.0), 0.0);
}

TEST(QuorumMath, ComputeQuorum) {
  QuorumFigures f = ComputeQuorum(3, 3, 1, 0.9, 3);
  EXPECT_NEAR(f.write_available, 0.729, 1e-12);
  EXPECT_NEAR(f.read_available, 0.999, 1e-12);
  EXPECT_NEAR(f.both_available, 0.729, 1e-12);
  EXPECT_TRUE(f.reads_see_latest);
  EXPECT_EQ(f.write_failures_tolerated, 0);
  EXPECT_EQ(f.read_failures_tolerated, 2);
  EXPECT_NEAR(f.all_sets_available, 0.729, 1e-12);
  // Five nodes, N=3, W=R=2: every 3-subset keeps two up iff at most one node is down.
  QuorumFigures g = ComputeQuorum(3, 2, 2, 0.9, 5);
  EXPECT_NEAR(g.both_available, 0.972, 1e-12);
  EXPECT_NEAR(g.expected_sets_available, 0.972, 1e-12);
  EXPECT_NEAR(g.all_sets_available, std::pow(0.9, 5) + 5 * std::pow(0.9, 4) * 0.1, 1e-12);
  EXPECT_FALSE(ComputeQuorum(4, 2, 2, 0.9, 4).reads_see_latest);
}

TEST(QuorumMath, MonteCarloAgreesWithClosedForm) {
  for (auto [n, w, r, m] :
       std::vector<std::array<int, 4>>{{3, 2, 2, 3}, {5, 3, 3, 5}, {3, 3, 1, 3}, {3, 2, 2, 6}}) {
    for (double p : {0.9, 0.5}) {
      QuorumFigures f = ComputeQuorum(n, w, r, p, m);
      QuorumFigures s = SimulateQuorum(n, w, r, p, m, 200000, 7);
      SCOPED_TRACE(std::to_string(n) + "/" + std::to_string(w) + "/" + std::to_string(r) +
                   " M=" + std::to_string(m) + " p=" + std::to_string(p));
      EXPECT_NEAR(s.write_available, f.write_available, 0.01);
      EXPECT_NEAR(s.read_available, f.read_available, 0.01);
      EXPECT_NEAR(s.both_available, f.both_available, 0.01);
      EXPECT_NEAR(s.expected_sets_available, f.expected_sets_available, 0.01);
      EXPECT_NEAR(s.all_sets_available, f.all_sets_available, 0.01);
    }
  }
}

// ---- quorumfs quorum -----------------------------------------------------------------------

struct QuorumCase {
  int n, w, r;
  double p;
  double write, read, both;
};

TEST(QuorumCli, MatchesHandComputedValues) {
  const QuorumCase cases[] = {
      {3, 2, 2, 0.9, 0.972, 0.972, 0.972},       {3, 2, 2, 0.5, 0.5, 0.5, 0.5},
      {5, 3, 3, 0.9, 0.99144, 0.99144, 0.99144}, {5, 3, 3, 0.5, 0.5, 0.5, 0.5},
      {3, 3, 1, 0.9, 0.729, 0.999, 0.729},       {3, 3, 1, 0.5, 0.125, 0.875, 0.125},
  };
  for (const auto& c : cases) {
    CliResult r =
        Quorum({"--n", std::to_string(c.n), "--w", std::to_string(c.w), "--r", std::to_string(c.r),
                "--p", std::to_string(c.p), "--simulate", "--trials", "200000", "--json"});
    SCOPED_TRACE(r.out + r.err);
    ASSERT_EQ(r.code, 0);
    EXPECT_NEAR(JsonNumber(r.out, "closed_form", "write_available"), c.write, 1e-9);
    EXPECT_NEAR(JsonNumber(r.out, "closed_form", "read_available"), c.read, 1e-9);
    EXPECT_NEAR(JsonNumber(r.out, "closed_form", "both_available"), c.both, 1e-9);
    EXPECT_NEAR(JsonNumber(r.out, "closed_form", "all_sets_available"), c.both, 1e-9);
    for (const char* k : {"write_available", "read_available", "both_available",
                          "expected_sets_available", "all_sets_available"}) {
      EXPECT_NEAR(JsonNumber(r.out, "monte_carlo", k), JsonNumber(r.out, "closed_form", k), 0.01)
          << k;
    }
    EXPECT_NE(r.out.find("\"reads_see_latest_write\":true"), std::string::npos);
    EXPECT_EQ(JsonNumber(r.out, "", "write_failures_tolerated"), c.n - c.w);
    EXPECT_EQ(JsonNumber(r.out, "", "read_failures_tolerated"), c.n - c.r);
  }
}

TEST(QuorumCli, ManyNinesKeepTheirPrecision) {
  // P(>= 3 of 5 up) at p = 0.999 is 1 - 9.98e-9: it must not print as 1.
  CliResult r = Quorum({"--n", "5", "--w", "3", "--r", "3", "--p", "0.999", "--json"});
  ASSERT_EQ(r.code, 0) << r.All();
  double got = JsonNumber(r.out, "closed_form", "both_available");
  EXPECT_NEAR(got, AtLeastUp(5, 3, 0.999), 1e-14) << r.out;
  EXPECT_LT(got, 1.0) << r.out;
}

TEST(QuorumCli, ClusterOfMoreNodesAndTextOutput) {
  CliResult r = Quorum({"--n", "3", "--w", "2", "--r", "2", "--p", "0.9", "--nodes", "5",
                        "--simulate", "--trials", "200000", "--json"});
  ASSERT_EQ(r.code, 0) << r.All();
  double all = std::pow(0.9, 5) + 5 * std::pow(0.9, 4) * 0.1;
  EXPECT_NEAR(JsonNumber(r.out, "closed_form", "all_sets_available"), all, 1e-9) << r.out;
  EXPECT_NEAR(JsonNumber(r.out, "monte_carlo", "all_sets_available"), all, 0.01) << r.out;
  EXPECT_NEAR(JsonNumber(r.out, "closed_form", "expected_sets_available"), 0.972, 1e-9);
  EXPECT_NEAR(JsonNumber(r.out, "monte_carlo", "expected_sets_available"), 0.972, 0.01);

  CliResult text = Quorum({"--n", "3", "--w", "2", "--r", "2", "--p", "0.9"});
  ASSERT_EQ(text.code, 0) << text.All();
  EXPECT_NE(text.out.find("0.972000"), std::string::npos) << text.out;
  EXPECT_NE(text.out.find("R + W > N (every read sees the latest write): yes"), std::string::npos)
      << text.out;
  CliResult weak = Quorum({"--n", "4", "--w", "2", "--r", "2", "--p", "0.9"});
  ASSERT_EQ(weak.code, 0) << weak.All();
  EXPECT_NE(weak.out.find("NO - reads may miss"), std::string::npos) << weak.out;
}

TEST(QuorumCli, RefusesImpossibleParameters) {
  for (const auto& args : std::vector<std::vector<std::string>>{
           {"--n", "3", "--w", "4", "--r", "2", "--p", "0.9"},
           {"--n", "3", "--w", "2", "--r", "0", "--p", "0.9"},
           {"--n", "3", "--w", "2", "--r", "2", "--p", "1.5"},
           {"--n", "3", "--w", "2", "--r", "2", "--p", "nan"},
           {"--n", "3", "--w", "2", "--r", "2", "--p", "0.9", "--nodes", "2"},
       }) {
    CliResult r = Quorum(args);
    EXPECT_EQ(r.code, 8) << r.All();
    EXPECT_NE(r.err.find("quorumfs quorum:"), std::string::npos) << r.err;
  }
}

TEST(Cli, UsageErrorsExit16) {
  for (const auto& args : std::vector<std::vector<std::string>>{
           {},
           {"frobnicate"},
           {"quorum", "--n", "3"},
           {"quorum", "--n", "3", "--w", "2", "--r", "2", "--p", "0.9", "--simulate", "--trials",
            "0"},
           {"fsck", "--cluster", "/nonexistent", "--jobs", "0"},
           {"fsck", "--cluster", "/nonexistent", "--grace", "-1"},
           {"fsck", "--cluster", "/nonexistent", "--timeout", "0"},
           {"status", "--cluster", "/nonexistent", "--timeout", "-2"},
           // nan passes CLI11's own range checks, and a huge grace overflowed nanoseconds.
           {"fsck", "--cluster", "/nonexistent", "--grace", "nan", "--no-writers"},
           {"fsck", "--cluster", "/nonexistent", "--grace", "1e300"},
           {"fsck", "--cluster", "/nonexistent", "--grace", "inf"},
           {"fsck", "--cluster", "/nonexistent", "--timeout", "nan"},
           {"fsck", "--cluster", "/nonexistent", "--timeout", "1e300"},
           {"status", "--cluster", "/nonexistent", "--timeout", "nan"},
       }) {
    CliResult r = testing::RunCli(args, TmpDir());
    std::string cmd;
    for (const auto& a : args) cmd += " " + a;
    EXPECT_EQ(r.code, 16) << "quorumfs" << cmd << "\n" << r.All();
  }
  CliResult help = testing::RunCli({"fsck", "--help"}, TmpDir());
  EXPECT_EQ(help.code, 0) << help.All();
  EXPECT_NE(help.All().find("--rebalance"), std::string::npos);
}

// File names are bytes: fsck --json must stay valid JSON for a name that is not UTF-8 (every
// byte that starts no valid sequence becomes U+FFFD; valid multibyte characters pass through).
TEST(JsonWriterTest, NamesThatAreNotUtf8StayValidJson) {
  JsonWriter j;
  j.BeginArray();
  j.String(std::string("a\xff") + "b\xc3\xa9" + "\xed\xa0\x80" + "\xc3" + "\"\n\x01" +
           "\xf0\x9f\x98\x80" + "\xc0\xaf");
  j.EndArray();
  EXPECT_EQ(j.str(),
            "[\"a\\ufffdb\xc3\xa9\\ufffd\\ufffd\\ufffd\\ufffd\\\"\\n\\u0001\xf0\x9f\x98\x80"
            "\\ufffd\\ufffd\"]");
}

// ---- quorumfs status -----------------------------------------------------------------------

TEST(StatusCli, ReportsDownNodesAndLostQuorums) {
  TestCluster cluster;
  auto status = [&](bool json) {
    std::vector<std::string> args = {"status", "--cluster", cluster.cluster_file(), "--timeout",
                                     "1"};
    if (json) args.push_back("--json");
    CliResult r = testing::RunCli(args, cluster.dir());
    std::printf("---- status%s -> exit %d\n%s%s", json ? " --json" : "", r.code, r.out.c_str(),
                r.err.c_str());
    return r;
  };
  CliResult healthy = status(false);
  EXPECT_EQ(healthy.code, 0) << healthy.All();
  EXPECT_NE(healthy.out.find("HEALTHY"), std::string::npos);
  EXPECT_EQ(healthy.out.find("DOWN"), std::string::npos);
  CliResult healthy_json = status(true);
  EXPECT_EQ(healthy_json.code, 0);
  EXPECT_NE(healthy_json.out.find("\"healthy\":true"), std::string::npos) << healthy_json.out;
  EXPECT_NE(healthy_json.out.find("\"id\":\"a\""), std::string::npos);
  EXPECT_NE(healthy_json.out.find("\"epoch\":1"), std::string::npos);
  EXPECT_NE(healthy_json.out.find("\"voting\":true"), std::string::npos);
  EXPECT_NE(healthy_json.out.find("\"replica_sets_with_quorum\":1"), std::string::npos);

  // One of three down: degraded, but every replica set keeps its quorums.
  cluster.Kill(1);
  CliResult one = status(false);
  EXPECT_EQ(one.code, 0) << one.All();
  EXPECT_NE(one.out.find("DEGRADED"), std::string::npos) << one.out;
  EXPECT_NE(one.out.find("tolerates 0 more failures"), std::string::npos) << one.out;
  size_t row = one.out.find("\nb ");
  ASSERT_NE(row, std::string::npos) << one.out;
  std::string b_line = one.out.substr(row + 1, one.out.find('\n', row + 1) - row - 1);
  EXPECT_NE(b_line.find("DOWN"), std::string::npos) << b_line;
  EXPECT_EQ(one.out.find("DOWN"), row + 1 + b_line.find("DOWN")) << "only b is down";
  CliResult one_json = status(true);
  EXPECT_EQ(one_json.code, 0);
  EXPECT_NE(one_json.out.find("\"id\":\"b\",\"address\":\"127.0.0.1:" +
                              std::to_string(cluster.port(1)) + "\",\"up\":false"),
            std::string::npos)
      << one_json.out;
  EXPECT_NE(one_json.out.find("\"healthy\":true"), std::string::npos);

  // Two of three down: no quorum anywhere.
  cluster.Kill(2);
  CliResult two = status(false);
  EXPECT_EQ(two.code, 2) << two.All();
  EXPECT_NE(two.out.find("UNAVAILABLE"), std::string::npos) << two.out;
  CliResult two_json = status(true);
  EXPECT_EQ(two_json.code, 2);
  EXPECT_NE(two_json.out.find("\"healthy\":false"), std::string::npos) << two_json.out;
  EXPECT_NE(two_json.out.find("\"replica_sets_with_quorum\":0"), std::string::npos);

  // An unreadable cluster file is an operational error.
  CliResult bad =
      testing::RunCli({"status", "--cluster", cluster.dir() + "/nope.conf"}, cluster.dir());
  EXPECT_EQ(bad.code, 8) << bad.All();
}

// status counts the replica sets that lack a quorum instead of listing every N-subset: 40
// nodes at N = 20 are C(40, 20) = 137846528820 sets, which took hours to list. Three nodes
// answer; the other 37 addresses are loopback sockets bound but not listening (refused).
TEST(StatusCli, CountsReplicaSetsItCouldNotList) {
  TestCluster cluster;
  std::vector<int> closed;
  std::string nodes;
  for (int i = 0; i < 3; ++i) nodes += cluster.NodeLine(i) + "\n";
  for (int i = 3; i < 40; ++i) {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    ASSERT_GE(fd, 0);
    closed.push_back(fd);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
    socklen_t len = sizeof(a);
    ASSERT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len), 0);
    nodes +=
        "node n" + std::to_string(i) + " 127.0.0.1:" + std::to_string(ntohs(a.sin_port)) + "\n";
  }
  auto status = [&](const std::string& quorums) {
    std::string path = cluster.dir() + "/forty.conf";
    std::ofstream(path) << "epoch = 1\n" << quorums << nodes;
    auto start = std::chrono::steady_clock::now();
    CliResult r =
        testing::RunCli({"status", "--cluster", path, "--timeout", "2"}, cluster.dir(), 60);
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::printf("---- status (%.1f s) -> exit %d\n%s%s", s, r.code, r.out.c_str(), r.err.c_str());
    EXPECT_LT(s, 30);
    return r;
  };
  // N = 3 with a, b, c up: a set has its quorums iff it holds two of them:
  // C(3,2) * 37 + 1 = 112 of C(40,3) = 9880.
  CliResult small = status("replicas = 3\nwrite_quorum = 2\nread_quorum = 2\n");
  EXPECT_EQ(small.code, 2) << small.All();
  EXPECT_NE(small.out.find("UNAVAILABLE: 9768 of 9880 replica sets lack a quorum (e.g. "
                           "{a,n3,n4} {a,n3,n5} {a,n3,n6} {a,n3,n7} {a,n3,n8})"),
            std::string::npos)
      << small.out;
  EXPECT_NE(small.out.find("with read and write quorum: 112 of 9880"), std::string::npos)
      << small.out;
  CliResult big = status("replicas = 20\nwrite_quorum = 11\nread_quorum = 10\n");
  EXPECT_EQ(big.code, 2) << big.All();
  EXPECT_NE(big.out.find("UNAVAILABLE: 137846528820 of 137846528820 replica sets"),
            std::string::npos)
      << big.out;
  // Five different examples, each with 20 - 11 + 1 = 10 unusable nodes.
  size_t from = big.out.find("(e.g. {");
  ASSERT_NE(from, std::string::npos) << big.out;
  std::string examples = big.out.substr(from + 6, big.out.find(')', from) - from - 6);
  std::set<std::string> sets;
  for (size_t at = 0; (at = examples.find('{', at)) != std::string::npos; ++at) {
    sets.insert(examples.substr(at, examples.find('}', at) - at + 1));
  }
  EXPECT_EQ(sets.size(), 5u) << examples;
  for (int fd : closed) ::close(fd);
}

}  // namespace
}  // namespace quorumfs
