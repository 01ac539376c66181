#include "common/cluster_config.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

namespace quorumfs {
namespace {

// Lines 1-4: a valid three-node cluster with every other setting at its default.
constexpr char kBase[] =
    "epoch = 1\n"
    "node a 127.0.0.1:7101\n"
    "node b 127.0.0.1:7102\n"
    "node c 127.0.0.1:7103\n";

// Checks that `text` is rejected with InvalidArgument "test.conf:<line>: ...<reason>...".
::testing::AssertionResult RejectedWith(const std::string& text, int line,
                                        const std::string& reason) {
  Result<ClusterConfig> config = ClusterConfig::Parse(text, "test.conf");
  if (config.ok()) return ::testing::AssertionFailure() << "parsed OK:\n" << text;
  const Status& st = config.status();
  if (st.code() != StatusCode::kInvalidArgument) {
    return ::testing::AssertionFailure() << "wrong code: " << st.ToString();
  }
  std::string prefix = "test.conf:" + std::to_string(line) + ": ";
  if (st.message().rfind(prefix, 0) != 0) {
    return ::testing::AssertionFailure()
           << "message '" << st.message() << "' lacks prefix '" << prefix << "'";
  }
  if (st.message().find(reason) == std::string::npos) {
    return ::testing::AssertionFailure()
           << "message '" << st.message() << "' lacks '" << reason << "'";
  }
  return ::testing::AssertionSuccess();
}

std::string With(const std::string& extra) { return std::string(kBase) + extra; }

void ExpectSameConfig(const ClusterConfig& a, const ClusterConfig& b) {
  EXPECT_EQ(a.epoch, b.epoch);
  EXPECT_EQ(a.replicas, b.replicas);
  EXPECT_EQ(a.write_quorum, b.write_quorum);
  EXPECT_EQ(a.read_quorum, b.read_quorum);
  EXPECT_EQ(a.chunk_size, b.chunk_size);
  ASSERT_EQ(a.nodes.size(), b.nodes.size());
  for (size_t i = 0; i < a.nodes.size(); ++i) {
    EXPECT_EQ(a.nodes[i].id, b.nodes[i].id);
    EXPECT_EQ(a.nodes[i].address, b.nodes[i].address);
    EXPECT_EQ(a.nodes[i].host, b.nodes[i].host);
    EXPECT_EQ(a.nodes[i].port, b.nodes[i].port);
  }
  EXPECT_EQ(a.previous, b.previous);
}

TEST(ClusterConfigTest, Defaults) {
  Result<ClusterConfig> config = ClusterConfig::Parse(kBase, "test.conf");
  ASSERT_TRUE(config.ok()) << config.status().ToString();
  EXPECT_EQ(config->epoch, 1u);
  EXPECT_EQ(config->replicas, 3);
  EXPECT_EQ(config->write_quorum, 2);
  EXPECT_EQ(config->read_quorum, 2);
  EXPECT_EQ(config->chunk_size, 1024u * 1024u);
  EXPECT_FALSE(config->InTransition());
  EXPECT_TRUE(config->previous.empty());
  EXPECT_EQ(config->NodeIds(), (std::vector<std::string>{"a", "b", "c"}));
  const NodeInfo* b = config->FindNode("b");
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(b->address, "127.0.0.1:7102");
  EXPECT_EQ(b->host, "127.0.0.1");
  EXPECT_EQ(b->port, 7102);
  EXPECT_EQ(config->FindNode("z"), nullptr);
}

TEST(ClusterConfigTest, FullSyntax) {
  const std::string text =
      "# quorumfs cluster\r\n"
      "\n"
      "   epoch=7   # raised on every change\n"
      "replicas=5\n"
      "\twrite_quorum =3\n"
      "read_quorum= 3\r\n"
      "chunk_size = 4MiB\n"
      "node n1  10.0.0.1:7101\n"
      "node\tn2\tNode-2.example.com:7102   # a host name\n"
      "node n_3 [::1]:7103\n"
      "node N.4 [fe80::1:2]:65535\n"
      "node n-5 localhost:1\n"
      "previous n1 n2 n_3 N.4 n-5\n"
      "   # trailing comment only\n";
  Result<ClusterConfig> config = ClusterConfig::Parse(text, "test.conf");
  ASSERT_TRUE(config.ok()) << config.status().ToString();
  EXPECT_EQ(config->epoch, 7u);
  EXPECT_EQ(config->replicas, 5);
  EXPECT_EQ(config->write_quorum, 3);
  EXPECT_EQ(config->read_quorum, 3);
  EXPECT_EQ(config->chunk_size, 4u * 1024 * 1024);
  ASSERT_EQ(config->nodes.size(), 5u);
  EXPECT_EQ(config->nodes[1].host, "Node-2.example.com");
  EXPECT_EQ(config->nodes[1].port, 7102);
  EXPECT_EQ(config->nodes[2].address, "[::1]:7103");
  EXPECT_EQ(config->nodes[2].host, "::1");  // brackets stripped: ready for getaddrinfo
  EXPECT_EQ(config->nodes[2].port, 7103);
  EXPECT_EQ(config->nodes[3].host, "fe80::1:2");
  EXPECT_EQ(config->nodes[3].port, 65535);
  EXPECT_EQ(config->nodes[4].host, "localhost");
  EXPECT_EQ(config->nodes[4].port, 1);
  EXPECT_TRUE(config->InTransition());
  EXPECT_EQ(config->previous, (std::vector<std::string>{"n1", "n2", "n_3", "N.4", "n-5"}));
}

TEST(ClusterConfigTest, ChunkSizeForms) {
  struct Case {
    const char* text;
    uint64_t bytes;
  } cases[] = {
      {"65536", 64 * 1024}, {"64KiB", 64 * 1024}, {"128KiB", 128 * 1024}, {"1MiB", 1024 * 1024},
      {"1024KiB", 1 << 20}, {"16MiB", 16 << 20},  {"16777216", 16 << 20}, {"2097152", 2 << 20},
  };
  for (const Case& c : cases) {
    Result<ClusterConfig> config =
        ClusterConfig::Parse(With(std::string("chunk_size = ") + c.text + "\n"), "test.conf");
    ASSERT_TRUE(config.ok()) << c.text << ": " << config.status().ToString();
    EXPECT_EQ(config->chunk_size, c.bytes) << c.text;
  }
}

TEST(ClusterConfigTest, PreviousMayListASubsetOrAllNodes) {
  // Every previous id is a node; previous may name all of them.
  Result<ClusterConfig> config =
      ClusterConfig::Parse(With("node d 127.0.0.1:7104\nprevious a b c d\n"), "test.conf");
  ASSERT_TRUE(config.ok()) << config.status().ToString();
  EXPECT_EQ(config->previous.size(), 4u);
  // Growing: d is new and not in previous.
  config = ClusterConfig::Parse(With("node d 127.0.0.1:7104\nprevious c a b\n"), "test.conf");
  ASSERT_TRUE(config.ok()) << config.status().ToString();
  EXPECT_EQ(config->previous, (std::vector<std::string>{"c", "a", "b"}));
  // `previous` may come before the node lines it names.
  config = ClusterConfig::Parse("previous a b c\n" + std::string(kBase), "test.conf");
  ASSERT_TRUE(config.ok()) << config.status().ToString();
}

// ---- Rejections: one EXPECT per path, each naming its line and rule. ----

TEST(ClusterConfigTest, RejectsKeyValueSyntax) {
  EXPECT_TRUE(RejectedWith(With("foo = 1\n"), 5, "unknown key 'foo'"));
  EXPECT_TRUE(RejectedWith(With("nodes d 127.0.0.1:7104\n"), 5, "unknown key 'nodes'"));
  EXPECT_TRUE(RejectedWith(With("Epoch = 2\n"), 5, "unknown key 'Epoch'"));
  EXPECT_TRUE(RejectedWith(With("= 3\n"), 5, "missing key before '='"));
  EXPECT_TRUE(RejectedWith(With("replicas =\n"), 5, "missing value for 'replicas'"));
  EXPECT_TRUE(RejectedWith(With("replicas = # three\n"), 5, "missing value for 'replicas'"));
  EXPECT_TRUE(RejectedWith(With("replicas = 3 4\n"), 5, "expected one value for 'replicas'"));
  EXPECT_TRUE(RejectedWith(With("read quorum = 2\n"), 5, "expected 'key = value'"));
  EXPECT_TRUE(RejectedWith(With("replicas 3\n"), 5, "expected '=' after 'replicas'"));
  EXPECT_TRUE(
      RejectedWith(With("\n\nepoch = 2\n"), 7, "duplicate key 'epoch' (first set on line 1)"));
}

TEST(ClusterConfigTest, RejectsBadNumbers) {
  EXPECT_TRUE(RejectedWith("epoch = x\n", 1, "bad number for epoch: 'x'"));
  EXPECT_TRUE(RejectedWith("epoch = -1\n", 1, "bad number for epoch: '-1'"));
  EXPECT_TRUE(RejectedWith("epoch = +1\n", 1, "bad number for epoch: '+1'"));
  EXPECT_TRUE(RejectedWith("epoch = 1.0\n", 1, "bad number for epoch: '1.0'"));
  EXPECT_TRUE(RejectedWith("epoch = 18446744073709551616\n", 1, "bad number for epoch"));
  EXPECT_TRUE(RejectedWith("epoch = 0\n", 1, "epoch must be at least 1"));
  EXPECT_TRUE(RejectedWith(With("replicas = 3x\n"), 5, "bad number for replicas: '3x'"));
  EXPECT_TRUE(RejectedWith(With("replicas = 2147483648\n"), 5, "bad number for replicas"));
  EXPECT_TRUE(RejectedWith(With("write_quorum = two\n"), 5, "bad number for write_quorum"));
  EXPECT_TRUE(RejectedWith(With("read_quorum = 0x2\n"), 5, "bad number for read_quorum"));
}

TEST(ClusterConfigTest, RejectsMissingEpoch) {
  EXPECT_TRUE(RejectedWith("node a 127.0.0.1:7101\nnode b 127.0.0.1:7102\nnode c 127.0.0.1:7103\n",
                           0, "missing required key 'epoch'"));
  EXPECT_TRUE(RejectedWith("", 0, "missing required key 'epoch'"));
}

TEST(ClusterConfigTest, RejectsBadQuorums) {
  EXPECT_TRUE(RejectedWith(With("replicas = 0\n"), 5, "replicas must be at least 1"));
  EXPECT_TRUE(RejectedWith(With("write_quorum = 0\n"), 5, "write_quorum must be at least 1"));
  EXPECT_TRUE(RejectedWith(With("read_quorum = 0\n"), 5, "read_quorum must be at least 1"));
  EXPECT_TRUE(
      RejectedWith(With("write_quorum = 4\n"), 5, "write_quorum must not exceed replicas (4 > 3)"));
  EXPECT_TRUE(RejectedWith(With("read_quorum = 4\nwrite_quorum = 1\n"), 5,
                           "read_quorum must not exceed replicas (4 > 3)"));
  // The error points at the setting that completed the violation (the later line).
  EXPECT_TRUE(RejectedWith(With("write_quorum = 3\nreplicas = 2\n"), 6,
                           "write_quorum must not exceed replicas (3 > 2)"));
  EXPECT_TRUE(RejectedWith(With("write_quorum = 1\n"), 5,
                           "read_quorum + write_quorum must exceed replicas (2 + 1 <= 3)"));
  EXPECT_TRUE(RejectedWith(With("read_quorum = 1\n"), 5,
                           "read_quorum + write_quorum must exceed replicas (1 + 2 <= 3)"));
  EXPECT_TRUE(RejectedWith(With("replicas = 4\nnode d 127.0.0.1:7104\n"), 5,
                           "read_quorum + write_quorum must exceed replicas (2 + 2 <= 4)"));
}

TEST(ClusterConfigTest, RejectsTooFewNodes) {
  // Defaults only: the rule involves no explicit key, so line 0.
  EXPECT_TRUE(RejectedWith("epoch = 1\nnode a 127.0.0.1:7101\nnode b 127.0.0.1:7102\n", 0,
                           "fewer nodes than replicas (2 < 3)"));
  EXPECT_TRUE(RejectedWith("epoch = 1\n", 0, "fewer nodes than replicas (0 < 3)"));
  EXPECT_TRUE(RejectedWith(With("replicas = 5\nwrite_quorum = 3\nread_quorum = 3\n"), 5,
                           "fewer nodes than replicas (3 < 5)"));
}

TEST(ClusterConfigTest, RejectsBadChunkSize) {
  EXPECT_TRUE(RejectedWith(With("chunk_size = 1GiB\n"), 5, "bad size for chunk_size: '1GiB'"));
  EXPECT_TRUE(RejectedWith(With("chunk_size = MiB\n"), 5, "bad size for chunk_size: 'MiB'"));
  EXPECT_TRUE(RejectedWith(With("chunk_size = 1mib\n"), 5, "bad size for chunk_size: '1mib'"));
  EXPECT_TRUE(RejectedWith(With("chunk_size = -1\n"), 5, "bad size for chunk_size"));
  EXPECT_TRUE(
      RejectedWith(With("chunk_size = 99999999999999999MiB\n"), 5, "bad size for chunk_size"));
  EXPECT_TRUE(RejectedWith(With("chunk_size = 32KiB\n"), 5,
                           "chunk_size must be between 64KiB and 16MiB (got 32KiB)"));
  EXPECT_TRUE(RejectedWith(With("chunk_size = 32MiB\n"), 5,
                           "chunk_size must be between 64KiB and 16MiB (got 32MiB)"));
  EXPECT_TRUE(RejectedWith(With("chunk_size = 0\n"), 5, "chunk_size must be between"));
  EXPECT_TRUE(RejectedWith(With("chunk_size = 96KiB\n"), 5,
                           "chunk_size must be a power of two (got 96KiB)"));
  EXPECT_TRUE(RejectedWith(With("chunk_size = 1000000\n"), 5,
                           "chunk_size must be a power of two (got 1000000)"));
}

TEST(ClusterConfigTest, RejectsBadNodeLines) {
  EXPECT_TRUE(RejectedWith(With("node d\n"), 5, "expected 'node <id> <host:port>'"));
  EXPECT_TRUE(RejectedWith(With("node\n"), 5, "expected 'node <id> <host:port>'"));
  EXPECT_TRUE(
      RejectedWith(With("node d 127.0.0.1:7104 extra\n"), 5, "expected 'node <id> <host:port>'"));
  EXPECT_TRUE(RejectedWith(With("node d/e 127.0.0.1:7104\n"), 5, "bad node id 'd/e'"));
  EXPECT_TRUE(RejectedWith(With("node d:e 127.0.0.1:7104\n"), 5, "bad node id 'd:e'"));
  std::string long_id(65, 'x');
  EXPECT_TRUE(
      RejectedWith(With("node " + long_id + " 127.0.0.1:7104\n"), 5, "bad node id '" + long_id));
  std::string max_id(64, 'x');
  EXPECT_TRUE(ClusterConfig::Parse(With("node " + max_id + " 127.0.0.1:7104\n"), "t").ok());
  EXPECT_TRUE(
      RejectedWith(With("node a 127.0.0.1:7104\n"), 5, "duplicate node id 'a' (first on line 2)"));
}

TEST(ClusterConfigTest, RejectsDuplicateAddresses) {
  EXPECT_TRUE(RejectedWith(With("node d 127.0.0.1:7101\n"), 5,
                           "duplicate address '127.0.0.1:7101' (also node 'a' on line 2)"));
  // Different spellings of one address are still duplicates.
  EXPECT_TRUE(RejectedWith(With("node d [::1]:7104\nnode e [0:0::1]:07104\n"), 6,
                           "duplicate address '[0:0::1]:07104' (also node 'd' on line 5)"));
  EXPECT_TRUE(RejectedWith(With("node d Host.example:7104\nnode e host.EXAMPLE:7104\n"), 6,
                           "duplicate address 'host.EXAMPLE:7104' (also node 'd' on line 5)"));
  // Same host, different port is fine.
  EXPECT_TRUE(ClusterConfig::Parse(With("node d 127.0.0.1:7104\n"), "t").ok());
}

TEST(ClusterConfigTest, RejectsBadAddresses) {
  EXPECT_TRUE(RejectedWith(With("node d 127.0.0.1\n"), 5,
                           "bad address '127.0.0.1' for node 'd': missing ':port'"));
  EXPECT_TRUE(RejectedWith(With("node d :7104\n"), 5, "missing host"));
  EXPECT_TRUE(RejectedWith(With("node d 127.0.0.1:0\n"), 5,
                           "port must be a number from 1 to 65535, got '0'"));
  EXPECT_TRUE(RejectedWith(With("node d 127.0.0.1:65536\n"), 5,
                           "port must be a number from 1 to 65535, got '65536'"));
  EXPECT_TRUE(RejectedWith(With("node d 127.0.0.1:http\n"), 5,
                           "port must be a number from 1 to 65535, got 'http'"));
  EXPECT_TRUE(RejectedWith(With("node d 127.0.0.1:\n"), 5,
                           "port must be a number from 1 to 65535, got ''"));
  EXPECT_TRUE(
      RejectedWith(With("node d 256.0.0.1:7104\n"), 5, "'256.0.0.1' is not an IPv4 address"));
  EXPECT_TRUE(RejectedWith(With("node d 10.0.1:7104\n"), 5, "'10.0.1' is not an IPv4 address"));
  EXPECT_TRUE(RejectedWith(With("node d ::1:7104\n"), 5, "an IPv6 address must be in brackets"));
  EXPECT_TRUE(RejectedWith(With("node d [::1:7104\n"), 5, "missing ']' after IPv6 address"));
  EXPECT_TRUE(RejectedWith(With("node d [::1]7104\n"), 5, "missing ':port' after ']'"));
  EXPECT_TRUE(RejectedWith(With("node d [::1]\n"), 5, "missing ':port' after ']'"));
  EXPECT_TRUE(RejectedWith(With("node d [zz::1]:7104\n"), 5, "'zz::1' is not an IPv6 address"));
  EXPECT_TRUE(
      RejectedWith(With("node d [127.0.0.1]:7104\n"), 5, "'127.0.0.1' is not an IPv6 address"));
  EXPECT_TRUE(RejectedWith(With("node d -host:7104\n"), 5, "'-host' is not a valid host name"));
  EXPECT_TRUE(RejectedWith(With("node d a..b:7104\n"), 5, "'a..b' is not a valid host name"));
  EXPECT_TRUE(RejectedWith(With("node d my_host:7104\n"), 5, "'my_host' is not a valid host name"));
}

TEST(ClusterConfigTest, RejectsBadPrevious) {
  EXPECT_TRUE(RejectedWith(With("previous a b z\n"), 5, "previous id 'z' has no address"));
  EXPECT_TRUE(RejectedWith(With("previous a b\n"), 5, "fewer previous ids than replicas (2 < 3)"));
  EXPECT_TRUE(RejectedWith(With("previous\n"), 5, "'previous' needs at least one node id"));
  EXPECT_TRUE(RejectedWith(With("previous a a b c\n"), 5, "duplicate id 'a' in 'previous'"));
  EXPECT_TRUE(RejectedWith(With("previous a b c\nprevious a b c\n"), 6,
                           "duplicate 'previous' line (first on line 5)"));
  EXPECT_TRUE(RejectedWith(With("previous a b c!\n"), 5, "bad node id 'c!'"));
}

TEST(ClusterConfigTest, ErrorNamesSource) {
  Result<ClusterConfig> config = ClusterConfig::Parse("epoch = x\n", "/etc/quorumfs/x.conf");
  ASSERT_FALSE(config.ok());
  EXPECT_EQ(config.status().message(), "/etc/quorumfs/x.conf:1: bad number for epoch: 'x'");
}

// ---- Format ----

TEST(ClusterConfigTest, FormatIsCanonical) {
  const std::string text =
      "# comment\n"
      "epoch=3\n"
      "chunk_size = 65536\n"
      "node b   [::1]:7102   # trailing\n"
      "node a host-a:7101\n"
      "node c 10.0.0.3:7103\n"
      "previous   a b  c\n";
  Result<ClusterConfig> config = ClusterConfig::Parse(text, "test.conf");
  ASSERT_TRUE(config.ok()) << config.status().ToString();
  EXPECT_EQ(config->Format(),
            "epoch = 3\n"
            "replicas = 3\n"
            "write_quorum = 2\n"
            "read_quorum = 2\n"
            "chunk_size = 64KiB\n"
            "node b [::1]:7102\n"
            "node a host-a:7101\n"
            "node c 10.0.0.3:7103\n"
            "previous a b c\n");
}

TEST(ClusterConfigTest, FormatParseRoundTrip) {
  const std::string inputs[] = {
      kBase,
      "epoch = 18446744073709551615\nreplicas = 1\nwrite_quorum = 1\nread_quorum = 1\n"
      "chunk_size = 16MiB\nnode only [fe80::1]:9\n",
      "epoch=9\nreplicas=5\nwrite_quorum=4\nread_quorum=2\nchunk_size=128KiB\n"
      "node a a.example:1\nnode b b.example:2\nnode c c.example:3\nnode d d.example:4\n"
      "node e e.example:5\nnode f f.example:6\nprevious b c d e f\n",
  };
  for (const std::string& input : inputs) {
    Result<ClusterConfig> first = ClusterConfig::Parse(input, "in.conf");
    ASSERT_TRUE(first.ok()) << first.status().ToString();
    std::string formatted = first->Format();
    Result<ClusterConfig> second = ClusterConfig::Parse(formatted, "formatted.conf");
    ASSERT_TRUE(second.ok()) << second.status().ToString() << "\n" << formatted;
    ExpectSameConfig(*first, *second);
    EXPECT_EQ(second->Format(), formatted);
  }
}

// ---- Load ----

class TempFile {
 public:
  explicit TempFile(const std::string& contents) {
    char name[] = "/tmp/cluster_config_test_XXXXXX";
    int fd = mkstemp(name);
    EXPECT_GE(fd, 0);
    path_ = name;
    if (fd >= 0) {
      EXPECT_EQ(write(fd, contents.data(), contents.size()), static_cast<ssize_t>(contents.size()));
      close(fd);
    }
  }
  ~TempFile() { unlink(path_.c_str()); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

TEST(ClusterConfigTest, LoadReadsFile) {
  TempFile file(kBase);
  Result<ClusterConfig> config = ClusterConfig::Load(file.path());
  ASSERT_TRUE(config.ok()) << config.status().ToString();
  EXPECT_EQ(config->nodes.size(), 3u);
}

TEST(ClusterConfigTest, LoadNamesPathInParseErrors) {
  TempFile file("epoch = 1\nbogus = 2\n");
  Result<ClusterConfig> config = ClusterConfig::Load(file.path());
  ASSERT_FALSE(config.ok());
  EXPECT_EQ(config.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(config.status().message(), file.path() + ":2: unknown key 'bogus'");
}

TEST(ClusterConfigTest, LoadMissingFileIsIoError) {
  Result<ClusterConfig> config = ClusterConfig::Load("/nonexistent/dir/cluster.conf");
  ASSERT_FALSE(config.ok());
  EXPECT_EQ(config.status().code(), StatusCode::kIoError);
  EXPECT_EQ(config.status().message(), "/nonexistent/dir/cluster.conf: No such file or directory");
}

TEST(ClusterConfigTest, LoadDirectoryIsIoError) {
  Result<ClusterConfig> config = ClusterConfig::Load("/tmp");
  ASSERT_FALSE(config.ok());
  EXPECT_EQ(config.status().code(), StatusCode::kIoError);
  EXPECT_NE(config.status().message().find("/tmp: "), std::string::npos);
}

}  // namespace
}  // namespace quorumfs
