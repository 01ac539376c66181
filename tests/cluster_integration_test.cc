// Integration tests with real chunkserver processes on loopback (issue: cluster core).
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <thread>

#include "common/cluster_client.h"
#include "common/placement.h"
#include "common/record.h"
#include "common/record_key.h"
#include "common/rpc_record_lister.h"
#include "tests/test_cluster.h"

namespace quorumfs {
namespace {

using testing::Frozen;
using testing::TestCluster;
using testing::TestClusterOptions;

ClusterClientOptions ShortDeadlines() {
  ClusterClientOptions o;
  o.rpc.call_timeout = 1 * kj::SECONDS;
  o.rpc.connect_timeout = 500 * kj::MILLISECONDS;
  o.rpc.reconnect_max = 200 * kj::MILLISECONDS;
  o.proposer.round_timeout = 1 * kj::SECONDS;
  o.proposer.op_timeout = 3 * kj::SECONDS;
  return o;
}

std::string RandomBytes(std::mt19937_64& rng, size_t n) {
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(rng());
  return s;
}

Decision SetTo(std::string v) { return Decision::Write(std::move(v)); }

TEST(ClusterIntegration, ChunksAndRecordsSurviveNodeFailures) {
  TestCluster cluster;
  ClusterClient client(cluster.config(), ShortDeadlines());
  std::mt19937_64 rng(42);
  std::vector<std::pair<ChunkId, std::string>> stored;
  auto put_batch = [&](int count) {
    for (int i = 0; i < count; ++i) {
      std::string data = RandomBytes(rng, 1 + rng() % (256 * 1024));
      auto id = client.PutChunk(data);
      ASSERT_TRUE(id.ok()) << id.status().ToString();
      EXPECT_EQ(*id, ChunkId::Of(data));
      stored.emplace_back(*id, std::move(data));
    }
  };
  auto get_all = [&]() {
    for (const auto& [id, data] : stored) {
      auto got = client.GetChunk(id);
      ASSERT_TRUE(got.ok()) << got.status().ToString();
      ASSERT_EQ(*got, data);
    }
  };
  put_batch(100);
  get_all();
  for (int i = 0; i < 20; ++i) {
    auto r = client.Change(InodeKey(100 + i), [i](const std::optional<std::string>&) {
      return SetTo("v" + std::to_string(i));
    });
    ASSERT_TRUE(r.ok()) << r.status().ToString();
  }

  // A batched read (one message per node) returns what single reads return, in order, with a
  // never-written key and an invalid key answered on their own.
  std::vector<std::string> keys;
  for (int i = 19; i >= 0; --i) keys.push_back(InodeKey(100 + i));
  keys.push_back(InodeKey(99));
  keys.push_back("Q/not-a-key");
  auto check_batch = [&]() {
    auto many = client.ReadMany(keys);
    ASSERT_EQ(many.size(), keys.size());
    for (int i = 0; i < 20; ++i) {
      ASSERT_TRUE(many[i].ok()) << many[i].status().ToString();
      EXPECT_EQ(many[i]->payload, "v" + std::to_string(19 - i));
    }
    ASSERT_TRUE(many[20].ok());
    EXPECT_FALSE(many[20]->payload.has_value());
    EXPECT_FALSE(many[21].ok());
  };
  check_batch();

  // One node down: everything still works.
  cluster.Kill(0);
  check_batch();
  put_batch(100);
  get_all();
  for (int i = 0; i < 20; ++i) {
    auto r = client.Read(InodeKey(100 + i));
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(r->payload, "v" + std::to_string(i));
    auto w = client.Change(InodeKey(100 + i), [i](const std::optional<std::string>&) {
      return SetTo("w" + std::to_string(i));
    });
    ASSERT_TRUE(w.ok()) << w.status().ToString();
  }

  // Two nodes down: chunks with a live replica are still readable (N=3 of 3 nodes: every
  // chunk has one on the survivor); record changes fail within the deadline. A change of a
  // key this client never wrote starts with a prepare, which fails: NoQuorum, nothing written.
  cluster.Kill(1);
  get_all();
  auto start = std::chrono::steady_clock::now();
  auto fail = client.Change(InodeKey(200),
                            [](const std::optional<std::string>&) { return SetTo("never"); });
  auto elapsed = std::chrono::steady_clock::now() - start;
  ASSERT_FALSE(fail.ok());
  EXPECT_EQ(fail.status().code(), StatusCode::kNoQuorum) << fail.status().ToString();
  EXPECT_LT(elapsed, std::chrono::seconds(4));
  // A key this client changed last is changed in one round (its accept doubles as the prepare;
  // see common/proposer.h): the survivor may accept it, so the outcome is unknown, and once
  // the others are back the record holds either value, the same for every reader.
  auto maybe = client.Change(InodeKey(100),
                             [](const std::optional<std::string>&) { return SetTo("maybe"); });
  ASSERT_FALSE(maybe.ok());
  EXPECT_TRUE(maybe.status().code() == StatusCode::kNoQuorum ||
              maybe.status().code() == StatusCode::kUnknownOutcome)
      << maybe.status().ToString();
  auto read_fail = client.Read(InodeKey(100));
  EXPECT_FALSE(read_fail.ok());
  auto put_fail = client.PutChunk(RandomBytes(rng, 1000));
  EXPECT_FALSE(put_fail.ok());
  EXPECT_EQ(put_fail.status().code(), StatusCode::kNoQuorum) << put_fail.status().ToString();

  // Both back: state intact, and the failed change did not happen. The client tries a node
  // that failed again only once its reconnect backoff (at most reconnect_max, 200 ms here)
  // has passed; until then calls to it fail at once, and with two such nodes a record read
  // has no quorum (seen once under load, when get_all() ran faster than the backoff).
  cluster.Start(0);
  cluster.Start(1);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  get_all();
  for (int i = 0; i < 20; ++i) {
    auto r = client.Read(InodeKey(100 + i));
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    if (i == 0 && maybe.status().code() == StatusCode::kUnknownOutcome) {
      EXPECT_TRUE(r->payload == "w0" || r->payload == "maybe") << *r->payload;
      ClusterClient other(cluster.config(), ShortDeadlines());
      auto again = other.Read(InodeKey(100));
      ASSERT_TRUE(again.ok()) << again.status().ToString();
      EXPECT_EQ(again->payload, r->payload);
      continue;
    }
    EXPECT_EQ(r->payload, "w" + std::to_string(i));
  }
  auto never = client.Read(InodeKey(200));
  ASSERT_TRUE(never.ok()) << never.status().ToString();
  EXPECT_FALSE(never->payload.has_value());
}

TEST(ClusterIntegration, EightThreadsRacingCasLoseNoUpdate) {
  TestCluster cluster;
  const int kThreads = 8;
  const int kTarget = 1000;
  const std::string key = InodeKey(7);
  std::vector<std::unique_ptr<ClusterClient>> clients;
  for (int t = 0; t < kThreads; ++t) {
    clients.push_back(std::make_unique<ClusterClient>(cluster.config(), ShortDeadlines()));
  }
  std::mutex mu;
  std::map<int, std::vector<int>> winners;  // round (new value) -> threads that won it
  std::atomic<int> unknown{0};
  std::atomic<bool> done{false};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t]() {
      ClusterClient& c = *clients[t];
      while (!done) {
        auto cur = c.Read(key);
        if (!cur.ok()) continue;
        int v = cur->payload ? std::stoi(*cur->payload) : 0;
        if (v >= kTarget) break;
        auto r = c.Change(key, [v](const std::optional<std::string>& now) {
          int n = now ? std::stoi(*now) : 0;
          if (n != v) return Decision::Abort(Status(StatusCode::kConflict, "lost the round"));
          return Decision::Write(std::to_string(v + 1));
        });
        if (r.ok()) {
          std::lock_guard<std::mutex> lock(mu);
          winners[v + 1].push_back(t);
        } else if (r.status().code() == StatusCode::kUnknownOutcome) {
          ++unknown;
        } else {
          EXPECT_EQ(r.status().code(), StatusCode::kConflict) << r.status().ToString();
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  auto final_value = clients[0]->Read(key);
  ASSERT_TRUE(final_value.ok());
  EXPECT_EQ(*final_value->payload, std::to_string(kTarget));
  int rounds_without_winner = 0;
  for (int round = 1; round <= kTarget; ++round) {
    auto it = winners.find(round);
    if (it == winners.end()) {
      ++rounds_without_winner;
      continue;
    }
    EXPECT_EQ(it->second.size(), 1u) << "round " << round << " had several winners";
  }
  // A round can lack a known winner only if some change reported an unknown outcome.
  EXPECT_LE(rounds_without_winner, unknown.load());
  std::printf("CAS race: %d rounds, %d unknown outcomes\n", kTarget, unknown.load());
}

TEST(ClusterIntegration, InodeNumbersAreUniqueAcrossClients) {
  TestCluster cluster;
  const int kClients = 4;
  std::vector<std::unique_ptr<ClusterClient>> clients;
  for (int t = 0; t < kClients; ++t) {
    clients.push_back(std::make_unique<ClusterClient>(cluster.config(), ShortDeadlines()));
  }
  std::mutex mu;
  std::set<uint64_t> seen;
  std::vector<std::thread> threads;
  for (int t = 0; t < kClients; ++t) {
    threads.emplace_back([&, t]() {
      for (int i = 0; i < 2500; ++i) {
        auto ino = clients[t]->AllocateInode();
        ASSERT_TRUE(ino.ok()) << ino.status().ToString();
        EXPECT_GE(*ino, uint64_t{1} << kInoBlockBits);  // block 0 is reserved
        std::lock_guard<std::mutex> lock(mu);
        EXPECT_TRUE(seen.insert(*ino).second) << "inode " << *ino << " handed out twice";
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(seen.size(), 10000u);
}

// A batched read whose values do not fit in one message (40 records of 900 KiB against the
// 17 MiB message limit): each server answers a prefix and the client asks for the rest.
TEST(ClusterIntegration, BatchedReadLargerThanOneMessage) {
  TestCluster cluster;
  // Nothing fails here, so no short deadlines: a 17 MiB reply can take most of a second on a
  // loaded 2-core machine, and a batch that timed out would be read key by key (the counter
  // checked below), which is not what this test is about.
  ClusterClientOptions options = ShortDeadlines();
  options.rpc.call_timeout = 10 * kj::SECONDS;
  options.proposer.round_timeout = 10 * kj::SECONDS;
  options.proposer.op_timeout = 30 * kj::SECONDS;
  ClusterClient client(cluster.config(), options);
  std::vector<std::string> keys;
  for (int i = 0; i < 40; ++i) {
    std::string value(900 * 1024, static_cast<char>('a' + i % 26));
    keys.push_back(InodeKey(5000 + i));
    auto r = client.Change(keys.back(),
                           [value](const std::optional<std::string>&) { return SetTo(value); });
    ASSERT_TRUE(r.ok()) << r.status().ToString();
  }
  auto many = client.ReadMany(keys);
  ASSERT_EQ(many.size(), keys.size());
  for (int i = 0; i < 40; ++i) {
    ASSERT_TRUE(many[i].ok()) << i << ": " << many[i].status().ToString();
    ASSERT_TRUE(many[i]->payload.has_value());
    EXPECT_EQ(many[i]->payload->size(), 900u * 1024);
    EXPECT_EQ((*many[i]->payload)[0], static_cast<char>('a' + i % 26));
  }
  // All of them decided by the batch, none by a read of its own after a failed batch.
  EXPECT_EQ(client.proposer().counters().batch_fallbacks, 0u);
}

TEST(ClusterIntegration, CreateFreshOnceThenFullProtocol) {
  TestCluster cluster;
  ClusterClient a(cluster.config(), ShortDeadlines());
  ClusterClient b(cluster.config(), ShortDeadlines());
  auto ino = a.AllocateInode();
  ASSERT_TRUE(ino.ok());
  auto created = a.CreateFresh(InodeKey(*ino), "born");
  ASSERT_TRUE(created.ok()) << created.status().ToString();
  EXPECT_EQ(created->version, 1u);
  auto read = b.Read(InodeKey(*ino));
  ASSERT_TRUE(read.ok());
  EXPECT_EQ(read->payload, "born");
  auto again = b.CreateFresh(InodeKey(*ino), "twin");
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.status().code(), StatusCode::kAlreadyExists);
  auto changed = b.Change(InodeKey(*ino), [](const std::optional<std::string>& cur) {
    return Decision::Write(*cur + "+1");
  });
  ASSERT_TRUE(changed.ok());
  EXPECT_EQ(changed->payload, "born+1");
  EXPECT_EQ(changed->version, 2u);
}

// A name removed and created again: every replica holds its tombstone, so a round-0 write is
// refused everywhere. The client that wrote the tombstone holds its acceptors' promise and
// creates the name in one round; a client whose read just found the tombstone goes straight to
// the full protocol; only a client that knows nothing of the key tries round 0 first.
// An entry-like key: created (refused if present) and removed (written empty).
Result<RecordValue> CreateEntry(ClusterClient& c, const std::string& key) {
  auto entry = [](const std::optional<std::string>& cur) {
    if (cur && !cur->empty()) return Decision::Abort(Status(StatusCode::kAlreadyExists, "exists"));
    return Decision::Write("entry");
  };
  return c.RunSync<Result<RecordValue>>(
      [&]() { return c.proposer().CreateShared(key, "entry", entry); });
}
Result<RecordValue> RemoveEntry(ClusterClient& c, const std::string& key) {
  return c.Change(key, [](const std::optional<std::string>&) { return Decision::Write(""); });
}

// A client holds the promise of its last write of a name (it removed it), then another client
// creates and removes the name more times than a record remembers change ids. A one-round
// create from that old promise is refused, and the full protocol could then not tell whether
// it had been chosen: the create answered UnknownOutcome (EIO through a mount; sqlite3's
// journal on two mounts hit it). A read that sees the other client's writes now drops the old
// promise, so the create takes the full protocol and succeeds.
TEST(ClusterIntegration, AReadDropsAPromiseOthersHaveWrittenPast) {
  TestCluster cluster;
  ClusterClient a(cluster.config(), ShortDeadlines());
  ClusterClient b(cluster.config(), ShortDeadlines());
  const std::string key = DirEntryKey(1, "busy");
  ASSERT_TRUE(CreateEntry(a, key).ok());
  ASSERT_TRUE(RemoveEntry(a, key).ok());  // a holds the promise of this write
  for (size_t i = 0; i < RecordEnvelope::kRecentChanges; ++i) {
    ASSERT_TRUE(CreateEntry(b, key).ok()) << i;
    ASSERT_TRUE(RemoveEntry(b, key).ok()) << i;
  }
  // What a mount does before a create: it looks the name up.
  auto seen = a.Read(key);
  ASSERT_TRUE(seen.ok()) << seen.status().ToString();
  auto r = CreateEntry(a, key);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->payload, "entry");
  EXPECT_EQ(r->version, 2 + 2 * RecordEnvelope::kRecentChanges + 1);
}

TEST(ClusterIntegration, NameCreatedAgainSkipsTheRefusedRoundZero) {
  TestCluster cluster;
  ClusterClient a(cluster.config(), ShortDeadlines());
  ClusterClient b(cluster.config(), ShortDeadlines());
  auto counters = [](ClusterClient& c) {
    return c.RunSync<Proposer::Counters>([&]() { return c.proposer().counters(); });
  };
  const std::string key = DirEntryKey(1, "again");
  ASSERT_TRUE(CreateEntry(a, key).ok());
  ASSERT_TRUE(RemoveEntry(a, key).ok());

  // The client that removed it.
  auto before = counters(a);
  auto r = CreateEntry(a, key);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->payload, "entry");
  EXPECT_EQ(r->version, 3u);
  auto after = counters(a);
  EXPECT_EQ(after.first_writes_failed, before.first_writes_failed);
  EXPECT_EQ(after.one_round, before.one_round + 1);

  // Another client, after reading the tombstone.
  ASSERT_TRUE(RemoveEntry(a, key).ok());
  ASSERT_TRUE(b.Read(key).ok());
  before = counters(b);
  r = CreateEntry(b, key);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->version, 5u);
  EXPECT_EQ(counters(b).first_writes_failed, before.first_writes_failed);

  // A client that never saw the key tries round 0, is refused, and still creates it.
  ClusterClient c(cluster.config(), ShortDeadlines());
  ASSERT_TRUE(RemoveEntry(a, key).ok());
  before = counters(c);
  r = CreateEntry(c, key);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->version, 7u);
  EXPECT_EQ(counters(c).first_writes_failed, before.first_writes_failed + 1);
  // And an existing name is still refused, by the one-round path too.
  r = CreateEntry(c, key);
  EXPECT_EQ(r.status().code(), StatusCode::kAlreadyExists);
}

// A directory entry written in round 0 counts as chosen only with every replica's answer, so a
// read of one used to wait the whole round timeout for a frozen replica before taking the full
// protocol; the fsx run under failures saw renames and unlinks of ~3 s (two such reads, 1.5 s
// each) with one server frozen. A read that has R answers now waits for the rest only
// `fast_round_timeout` (100 ms).
TEST(ClusterIntegration, AReadOfARoundZeroEntryDoesNotWaitARoundForAFrozenReplica) {
  TestCluster cluster;
  ClusterClientOptions o = ShortDeadlines();
  o.rpc.call_timeout = 4 * kj::SECONDS;
  o.proposer.round_timeout = 3 * kj::SECONDS;
  o.proposer.op_timeout = 8 * kj::SECONDS;
  ClusterClient a(cluster.config(), o);
  // Two names, one per kind of read: the first read's full protocol rewrites its key.
  const std::string key = DirEntryKey(1, "frozen-reader");
  const std::string key2 = DirEntryKey(1, "frozen-batch-reader");
  for (const auto& k : {key, key2}) {
    auto created = CreateEntry(a, k);  // round 0, on every replica
    ASSERT_TRUE(created.ok()) << created.status().ToString();
    ASSERT_EQ(created->version, 1u);
  }
  const pid_t pid = cluster.pid(2);
  ASSERT_GT(pid, 0);
  ClusterClient b(cluster.config(), o);
  ASSERT_TRUE(b.Stats(cluster.node_id(2)).ok());  // connected before it froze
  Frozen frozen(pid);
  ASSERT_TRUE(frozen.ok());
  auto seconds_since = [](std::chrono::steady_clock::time_point t) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
  };
  auto start = std::chrono::steady_clock::now();
  auto read = b.Read(key);
  const double took = seconds_since(start);
  ASSERT_TRUE(read.ok()) << read.status().ToString();
  EXPECT_EQ(read->payload, "entry");
  EXPECT_LT(took, 1.0) << "the read waited for the frozen replica";
  // The batched read (a listing's entries) likewise.
  start = std::chrono::steady_clock::now();
  auto many = b.ReadMany({key2, DirEntryKey(1, "never-written")});
  const double took_many = seconds_since(start);
  ASSERT_EQ(many.size(), 2u);
  ASSERT_TRUE(many[0].ok()) << many[0].status().ToString();
  EXPECT_EQ(many[0]->payload, "entry");
  EXPECT_LT(took_many, 1.0) << "the batched read waited for the frozen replica";
  std::fprintf(stderr, "round-0 entry with a replica frozen: read %.2f s, batched read %.2f s\n",
               took, took_many);
}

TEST(ClusterIntegration, StartupRefusals) {
  TestCluster cluster;
  // Unknown id.
  auto [code1, err1] = cluster.RunOnce(
      {"--id", "zz", "--data", cluster.dir() + "/zz", "--cluster", cluster.cluster_file()});
  EXPECT_NE(code1, 0);
  EXPECT_NE(err1.find("node id 'zz' is not in"), std::string::npos) << err1;
  // Data dir held by the running node a.
  auto [code2, err2] = cluster.RunOnce({"--id", "a", "--data", cluster.data_dir(0), "--listen",
                                        "127.0.0.1:" + std::to_string(testing::PickFreePort()),
                                        "--cluster", cluster.cluster_file()});
  EXPECT_NE(code2, 0);
  EXPECT_NE(err2.find("is in use by another process"), std::string::npos) << err2;
  // Listen address taken (node a's port, fresh data dir).
  auto [code3, err3] = cluster.RunOnce(
      {"--id", "a", "--data", cluster.dir() + "/other", "--cluster", cluster.cluster_file()});
  EXPECT_NE(code3, 0);
  EXPECT_NE(err3.find("cannot listen on"), std::string::npos) << err3;
  // Malformed cluster file.
  std::string bad = cluster.dir() + "/bad.conf";
  FILE* f = std::fopen(bad.c_str(), "w");
  std::fputs("epoch = 1\nreplicas = 3\nwrite_quorum = 1\nread_quorum = 1\n", f);
  std::fclose(f);
  auto [code4, err4] =
      cluster.RunOnce({"--id", "a", "--data", cluster.dir() + "/x", "--cluster", bad});
  EXPECT_NE(code4, 0);
  EXPECT_NE(err4.find("bad.conf"), std::string::npos) << err4;
  for (const auto& e : {err1, err2, err3, err4}) {
    EXPECT_EQ(std::count(e.begin(), e.end(), '\n'), 1) << "not one line: " << e;
  }
}

// A node started on a disk with less free space than its --reserve says that it will refuse new
// chunks; one started on a disk with no space left at all (LevelDB's recovery has to write)
// exits with a one-line reason. The second part uses a small tmpfs in a private mount
// namespace (needs root, which CI has).
TEST(ClusterIntegration, StartupOnAFullDisk) {
  ASSERT_EQ(::geteuid(), 0u) << "this test mounts a tmpfs and needs root";
  TestCluster cluster;
  // A reserve larger than any disk; node a's port is taken, so the run ends after the warning.
  auto [code1, err1] = cluster.RunOnce({"--id", "a", "--data", cluster.dir() + "/w", "--cluster",
                                        cluster.cluster_file(), "--reserve", "1000TiB"});
  EXPECT_NE(code1, 0);
  EXPECT_NE(err1.find("less than --reserve"), std::string::npos) << err1;
  EXPECT_NE(err1.find("cannot listen on"), std::string::npos) << err1;

  std::string disk = cluster.dir() + "/disk";
  ASSERT_EQ(::mkdir(disk.c_str(), 0755), 0);
  ASSERT_EQ(testing::MountTmpfs(disk, "2m"), "");
  struct Unmount {
    std::string dir;
    ~Unmount() { ::umount2(dir.c_str(), MNT_DETACH); }
  } unmount{disk};
  std::string data = disk + "/a";
  // A first start lays out the data dir and its metadata store (and ends on the taken port).
  auto [code2, err2] = cluster.RunOnce(
      {"--id", "a", "--data", data, "--cluster", cluster.cluster_file(), "--reserve", "0"});
  EXPECT_NE(err2.find("cannot listen on"), std::string::npos) << err2;
  ASSERT_NO_FATAL_FAILURE(testing::FillWithBallast(disk + "/ballast"));
  auto [code3, err3] = cluster.RunOnce({"--id", "a", "--data", data, "--listen",
                                        "127.0.0.1:" + std::to_string(testing::PickFreePort()),
                                        "--cluster", cluster.cluster_file(), "--reserve", "0"});
  EXPECT_GT(code3, 0) << err3;
  EXPECT_NE(err3.find("No space left on device"), std::string::npos) << err3;
  EXPECT_EQ(std::count(err3.begin(), err3.end(), '\n'), 1) << "not one line: " << err3;
  // With space back it starts (and ends on the taken port again).
  ASSERT_EQ(::unlink((disk + "/ballast").c_str()), 0);
  auto [code4, err4] = cluster.RunOnce(
      {"--id", "a", "--data", data, "--cluster", cluster.cluster_file(), "--reserve", "0"});
  EXPECT_NE(err4.find("cannot listen on"), std::string::npos) << err4;
}

TEST(ClusterIntegration, SigtermIsCleanAndIncarnationPersists) {
  TestCluster cluster;
  std::string inc_before;
  {
    ClusterClient client(cluster.config(), ShortDeadlines());
    auto r = client.Change(
        InodeKey(5), [](const std::optional<std::string>&) { return Decision::Write("kept"); });
    ASSERT_TRUE(r.ok());
    auto stats = client.Stats("a");
    ASSERT_TRUE(stats.ok()) << stats.status().ToString();
    inc_before = stats->incarnation;
    EXPECT_EQ(inc_before.size(), 32u);
    EXPECT_EQ(stats->node_id, "a");
    EXPECT_EQ(stats->epoch, 1u);
    EXPECT_GT(stats->capacity, 0u);
    EXPECT_TRUE(stats->voting);
  }
  for (int i = 0; i < 3; ++i) EXPECT_EQ(cluster.Terminate(i), 0) << cluster.Log(i);
  for (int i = 0; i < 3; ++i) cluster.Start(i);
  ClusterClient client(cluster.config(), ShortDeadlines());
  auto stats = client.Stats("a");
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->incarnation, inc_before);
  auto r = client.Read(InodeKey(5));
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->payload, "kept");
}

// A connection the server closes while no call is on it (a restart, a SIGTERM) is let go when
// its watch fires, and the node is reached again afterwards. The watch used to run the
// disconnect from its own callback, which destroyed it while it fired: kj threw from the
// destructor, the disconnect stopped halfway and the closed connection stayed held.
TEST(ClusterIntegration, AConnectionClosedWhileIdleIsLetGo) {
  TestCluster cluster;
  ClusterClient client(cluster.config(), ShortDeadlines());
  auto open = [&] {
    return client.RunSync<size_t>(
        [&] { return kj::Promise<size_t>(client.rpc().OpenConnections()); });
  };
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(client.Stats(cluster.node_id(i)).ok());
  EXPECT_EQ(open(), 3u);
  EXPECT_EQ(cluster.Terminate(0), 0) << cluster.Log(0);
  for (int i = 0; i < 100 && open() != 2; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(open(), 2u) << "the closed connection is still held";
  cluster.Start(0);
  auto stats = client.Stats(cluster.node_id(0));
  for (int i = 0; i < 50 && !stats.ok(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    stats = client.Stats(cluster.node_id(0));
  }
  ASSERT_TRUE(stats.ok()) << stats.status().ToString();
  EXPECT_EQ(open(), 3u);
}

// While node d is being removed (`leaving`), it never stands in for a home replica of a chunk:
// a hinted copy there would leave with it. With b and c down, a chunk homed on a, b, c in both
// memberships has one home up: its put fails instead of counting d's copy as the second.
TEST(ClusterIntegration, ALeavingNodeNeverStandsInForAHomeReplica) {
  TestClusterOptions o;
  o.nodes = 4;
  TestCluster cluster(o);
  std::string text = "epoch = 2\nreplicas = 3\nwrite_quorum = 2\nread_quorum = 2\n";
  for (int i = 0; i < 3; ++i) text += cluster.NodeLine(i) + "\n";
  text += "leaving" + cluster.NodeLine(3).substr(4) + "\nprevious a b c d\n";
  cluster.Reconfigure(text);
  ASSERT_TRUE(cluster.config()->InTransition());
  cluster.Kill(1);
  cluster.Kill(2);
  std::string data;
  std::mt19937_64 rng(7);
  while (true) {
    data = RandomBytes(rng, 4096);
    auto groups = ReplicaGroupsFor(*cluster.config(), ChunkId::Of(data).view());
    ASSERT_EQ(groups.size(), 2u);
    const auto& old_set = groups[1].members;
    if (std::find(old_set.begin(), old_set.end(), "d") == old_set.end()) break;
  }
  ClusterClient client(cluster.config(), ShortDeadlines());
  auto put = client.PutChunk(data);
  ASSERT_FALSE(put.ok()) << "acknowledged with a copy on the leaving node";
  EXPECT_EQ(put.status().code(), StatusCode::kNoQuorum) << put.status().ToString();
}

// A record value no acceptor takes (over 1 MiB) is refused by the proposer at once, as too
// large, for every kind of write; before, it was sent, refused by every replica, and resent
// until the operation's deadline, which then reported an unknown outcome.
TEST(ClusterIntegration, ARecordValueOverTheLimitIsRefusedAtOnce) {
  TestCluster cluster;
  ClusterClient client(cluster.config(), ShortDeadlines());
  const std::string big(kMaxRecordValue + 1, 'v');
  auto start = std::chrono::steady_clock::now();
  auto changed = client.Change(
      InodeKey(77), [&](const std::optional<std::string>&) { return Decision::Write(big); });
  EXPECT_EQ(changed.status().code(), StatusCode::kTooLarge) << changed.status().ToString();
  auto fresh = client.CreateFresh(InodeKey(78), big);
  EXPECT_EQ(fresh.status().code(), StatusCode::kTooLarge) << fresh.status().ToString();
  // After a write of its own, a change's next write is one round: refused the same way.
  ASSERT_TRUE(
      client
          .Change(InodeKey(79),
                  [](const std::optional<std::string>&) { return Decision::Write("small"); })
          .ok());
  auto grown = client.Change(
      InodeKey(79), [&](const std::optional<std::string>&) { return Decision::Write(big); });
  EXPECT_EQ(grown.status().code(), StatusCode::kTooLarge) << grown.status().ToString();
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), 1.0);
  auto kept = client.Read(InodeKey(79));
  ASSERT_TRUE(kept.ok()) << kept.status().ToString();
  EXPECT_EQ(kept->payload, "small");
}

// A promise at the top of the counter range, which only a broken or hostile client makes,
// freezes its key (nothing in range beats it), but must not freeze the client that meets it:
// that client's changes of other keys go on.
TEST(ClusterIntegration, APromiseAtTheCounterLimitFreezesOnlyItsKey) {
  TestCluster cluster;
  ClusterClient client(cluster.config(), ShortDeadlines());
  const std::string frozen = InodeKey(91), other = InodeKey(92);
  Ballot rogue{Ballot::kMaxCounter - 1, 12345};
  for (int i = 0; i < 3; ++i) {
    auto p = client.RunSync<Result<PrepareReply>>(
        [&] { return client.rpc().Prepare(cluster.node_id(i), frozen, rogue); });
    ASSERT_TRUE(p.ok()) << p.status().ToString();
    EXPECT_TRUE(p->promised);
  }
  auto stuck =
      client.Change(frozen, [](const std::optional<std::string>&) { return Decision::Write("x"); });
  EXPECT_FALSE(stuck.ok());
  auto fine =
      client.Change(other, [](const std::optional<std::string>&) { return Decision::Write("y"); });
  ASSERT_TRUE(fine.ok()) << fine.status().ToString();
  // A second write of the other key by a fresh client takes the full protocol too.
  ClusterClient fresh(cluster.config(), ShortDeadlines());
  auto again =
      fresh.Change(other, [](const std::optional<std::string>&) { return Decision::Write("z"); });
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  auto third =
      client.Change(other, [](const std::optional<std::string>&) { return Decision::Write("w"); });
  EXPECT_TRUE(third.ok()) << third.status().ToString();
}

// Two ids whose addresses reach one server (here b is written as localhost and a's port) must
// not count that server twice: a connection is used only once the server's stats name the node
// it was meant for. With c down, a put must fail, not be acknowledged with a's one copy twice.
TEST(ClusterIntegration, TwoIdsThatReachOneServerDoNotCountTwice) {
  TestCluster cluster;
  std::string text = "epoch = 1\nreplicas = 3\nwrite_quorum = 2\nread_quorum = 2\n";
  text += "node a 127.0.0.1:" + std::to_string(cluster.port(0)) + "\n";
  text += "node b localhost:" + std::to_string(cluster.port(0)) + "\n";
  text += "node c 127.0.0.1:" + std::to_string(cluster.port(2)) + "\n";
  auto parsed = ClusterConfig::Parse(text, "aliased");
  ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
  auto config = std::make_shared<const ClusterConfig>(std::move(parsed).value());
  cluster.Kill(2);
  ClusterClient client(config, ShortDeadlines());
  auto stats = client.Stats("b");
  ASSERT_FALSE(stats.ok()) << "b's address answered as b";
  EXPECT_NE(stats.status().message().find("is node 'a'"), std::string::npos)
      << stats.status().ToString();
  auto put = client.PutChunk(std::string(4096, 'q'));
  ASSERT_FALSE(put.ok()) << "acknowledged with one server's copy counted twice";
  EXPECT_EQ(put.status().code(), StatusCode::kNoQuorum) << put.status().ToString();
}

TEST(ClusterIntegration, RejoiningNodeDoesNotVoteUntilRefilled) {
  TestCluster cluster;
  ClusterClient client(cluster.config(), ShortDeadlines());
  auto r = client.Change(InodeKey(9),
                         [](const std::optional<std::string>&) { return Decision::Write("x"); });
  ASSERT_TRUE(r.ok());
  std::string old_inc = client.Stats("b")->incarnation;
  // b loses its disk and comes back with --rejoin; c is down.
  cluster.Kill(1);
  ASSERT_EQ(std::system(("rm -rf '" + cluster.data_dir(1) + "'").c_str()), 0);
  cluster.Kill(2);
  cluster.Start(1, /*rejoin=*/true);
  // The client may still be backing off from the connection the kill broke: ask until b's new
  // process answers (seen once in CI, 2026-12-07: the first call failed at once).
  auto stats = client.Stats("b");
  for (int i = 0; i < 50 && !stats.ok(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    stats = client.Stats("b");
  }
  ASSERT_TRUE(stats.ok()) << stats.status().ToString();
  EXPECT_FALSE(stats->voting);
  EXPECT_NE(stats->incarnation, old_inc);
  // Only a votes: no quorum, although two nodes answer. (Another client: this one would try
  // its one-round change of key 9 first, which b's non-voting accept cannot complete.)
  ClusterClient other(cluster.config(), ShortDeadlines());
  auto w = other.Change(InodeKey(9),
                        [](const std::optional<std::string>&) { return Decision::Write("y"); });
  ASSERT_FALSE(w.ok());
  EXPECT_EQ(w.status().code(), StatusCode::kNoQuorum) << w.status().ToString();
  EXPECT_NE(w.status().message().find("rejoining"), std::string::npos) << w.status().ToString();
  // A listing (readdir, rmdir's emptiness scan) must not count b either: its empty scan would
  // make a key chosen on a and c look absent.
  RpcRecordLister lister(client.rpc());
  lister.SetConfig(cluster.config());
  auto list = [&]() {
    return client.RunSync<Result<std::vector<std::string>>>(
        [&]() { return lister.ListKeys(RecordPlacementKey(InodeKey(9)), "I/", "", 100); });
  };
  auto listed = list();
  ASSERT_FALSE(listed.ok());
  EXPECT_EQ(listed.status().code(), StatusCode::kNoQuorum) << listed.status().ToString();
  EXPECT_NE(listed.status().message().find("b: rejoining"), std::string::npos)
      << listed.status().ToString();
  // Once refilled (fsck's job), b votes again.
  Status s = client.RunSync<Status>([&]() { return client.rpc().FinishRejoin("b"); });
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_TRUE(client.Stats("b")->voting);
  listed = list();
  ASSERT_TRUE(listed.ok()) << listed.status().ToString();
  EXPECT_EQ(*listed, std::vector<std::string>{InodeKey(9)});
  auto read = client.Read(InodeKey(9));
  ASSERT_TRUE(read.ok()) << read.status().ToString();
  EXPECT_EQ(read->payload, "x");
}

// An operation waits for a quorum until its timeout, not just for one round: with two of three
// servers down, a record change, a chunk put and a listing started then succeed once one server
// is back a second later. Before, a prepare round that reached one replica failed the change at
// once, and a put whose replicas did not answer failed at once (found by fuse_fsx_test's
// FsxUnderFailuresTest, chaos seed 11: a restarted server still marked down in the mount while
// another was cut off). With the quorum gone for good, the change fails with NoQuorum (EIO at
// the mount), naming the replicas, after op_timeout.
TEST(ClusterIntegration, AnOperationWaitsForAQuorumUntilItsTimeout) {
  TestCluster cluster;
  ClusterClient client(cluster.config(), ShortDeadlines());  // op_timeout 3 s
  ASSERT_TRUE(
      client.Change(InodeKey(5), [](const std::optional<std::string>&) { return SetTo("before"); })
          .ok());
  cluster.Kill(1);
  cluster.Kill(2);
  auto start = std::chrono::steady_clock::now();
  auto seconds = [&] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  };
  Result<ChunkId> put = Status(StatusCode::kInternal, "not run");
  Result<RecordValue> changed = Status(StatusCode::kInternal, "not run");
  double put_took = 0, change_took = 0;
  std::thread putter([&] {
    put = client.PutChunk("written while two of three servers were down");
    put_took = seconds();
  });
  std::thread changer([&] {
    changed = client.Change(InodeKey(5),
                            [](const std::optional<std::string>&) { return SetTo("after"); });
    change_took = seconds();
  });
  // A listing (readdir, rmdir's emptiness scan) waits the same way.
  RpcRecordLister lister(client.rpc(), &client.timer(), 3 * kj::SECONDS);
  lister.SetConfig(cluster.config());
  Result<std::vector<std::string>> listed = Status(StatusCode::kInternal, "not run");
  double list_took = 0;
  std::thread listing([&] {
    listed = client.RunSync<Result<std::vector<std::string>>>(
        [&]() { return lister.ListKeys(RecordPlacementKey(InodeKey(5)), "I/", "", 100); });
    list_took = seconds();
  });
  // From this thread: a server is started with PR_SET_PDEATHSIG, which fires when the thread
  // that forked it ends.
  std::this_thread::sleep_for(std::chrono::seconds(1));
  cluster.Start(1);
  putter.join();
  changer.join();
  listing.join();
  ASSERT_TRUE(listed.ok()) << listed.status().ToString();
  EXPECT_EQ(*listed, std::vector<std::string>{InodeKey(5)});
  EXPECT_GT(list_took, 0.9);
  EXPECT_TRUE(changed.ok()) << changed.status().ToString();
  EXPECT_GT(change_took, 0.9);
  EXPECT_TRUE(put.ok()) << put.status().ToString();
  EXPECT_GT(put_took, 0.9);
  std::fprintf(stderr, "change %.2f s, put %.2f s, listing %.2f s\n", change_took, put_took,
               list_took);

  cluster.Kill(1);  // and now for good
  start = std::chrono::steady_clock::now();
  auto failed =
      client.Change(InodeKey(5), [](const std::optional<std::string>&) { return SetTo("never"); });
  double failed_after = seconds();
  ASSERT_FALSE(failed.ok());
  EXPECT_EQ(failed.status().code(), StatusCode::kNoQuorum) << failed.status().ToString();
  EXPECT_NE(failed.status().message().find("prepare reached fewer than 2 replicas"),
            std::string::npos)
      << failed.status().ToString();
  EXPECT_GT(failed_after, 2.5);
  EXPECT_LT(failed_after, 6);
}

// A call whose connection breaks after it was sent is sent once more on a new connection, in
// the time it has left. Here the break is the client's own doing: server b is frozen, a first
// call to it goes unanswered for a whole call timeout and the client drops the connection; a
// second call, sent on that connection a second later, used to fail with it at once
// (Unavailable: "RpcSystem was destroyed") although b answered moments later. The fsx run under
// failures (fuse_fsx_test, FsxUnderFailuresTest, chaos seed 3) met this as EIO for a write: one
// server killed, another just back from a network cut whose last call was still timing out.
TEST(ClusterIntegration, ACallOnAConnectionDroppedUnderItIsSentAgain) {
  TestCluster cluster;
  ClusterClientOptions o = ShortDeadlines();
  o.rpc.call_timeout = 2 * kj::SECONDS;
  ClusterClient client(cluster.config(), o);
  const std::string b = cluster.node_id(1);
  ASSERT_TRUE(client.Stats(b).ok());  // connected
  const pid_t pid = cluster.pid(1);
  ASSERT_GT(pid, 0);
  ASSERT_EQ(::kill(pid, SIGSTOP), 0);
  std::thread thaw([pid] {
    std::this_thread::sleep_for(std::chrono::milliseconds(2600));
    ::kill(pid, SIGCONT);
  });
  using Both = std::pair<Result<NodeStatsInfo>, Result<NodeStatsInfo>>;
  auto start = std::chrono::steady_clock::now();
  double second_done = 0;
  Both both = client.RunSync<Both>([&]() -> kj::Promise<Both> {
    // Unanswered: times out at 2 s, and the client drops the connection.
    auto first = client.rpc().Stats(b);
    // Sent at 1 s on the same connection; b is thawed at 2.6 s, before its deadline (3 s).
    auto second =
        client.timer()
            .afterDelay(1 * kj::SECONDS)
            .then([&] { return client.rpc().Stats(b); })
            .then([&](Result<NodeStatsInfo>&& r) {
              second_done =
                  std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
              return kj::mv(r);
            })
            .eagerlyEvaluate(nullptr);
    return first.then([second = kj::mv(second)](Result<NodeStatsInfo>&& f) mutable {
      return second.then([f = kj::mv(f)](Result<NodeStatsInfo>&& s) mutable {
        return Both(kj::mv(f), kj::mv(s));
      });
    });
  });
  thaw.join();
  EXPECT_EQ(both.first.status().code(), StatusCode::kTimedOut) << both.first.status().ToString();
  ASSERT_TRUE(both.second.ok()) << "the second call, " << second_done
                                << " s in: " << both.second.status().ToString();
  EXPECT_EQ(both.second->node_id, b);
  EXPECT_GT(second_done, 2.4) << "answered before b was thawed?";
}

// df (statfs) adds up every node's space. A frozen node must not hold it for a call timeout,
// and a node that does not answer counts with what it last reported instead of vanishing from
// the total.
TEST(ClusterIntegration, SpaceDoesNotWaitForAFrozenNode) {
  TestCluster cluster;
  ClusterClientOptions o = ShortDeadlines();
  o.rpc.call_timeout = 4 * kj::SECONDS;
  ClusterClient client(cluster.config(), o);
  ClusterClient fresh(cluster.config(), o);  // asks nothing until a node is frozen
  auto space = [](ClusterClient& c, double* took, kj::Duration hurry = 100 * kj::MILLISECONDS,
                  kj::Duration remember_for = 5 * kj::MINUTES) {
    auto start = std::chrono::steady_clock::now();
    auto r = c.RunSync<Result<ClusterSpace>>([&]() { return c.Space(hurry, remember_for); });
    *took = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    return r;
  };
  double took = 0;
  // Waits for every node (the hurry is longer than the call timeout): a node that is merely
  // slow on a loaded machine is not left out of the baseline.
  auto all = space(client, &took, 10 * kj::SECONDS);
  ASSERT_TRUE(all.ok()) << all.status().ToString();
  EXPECT_EQ(all->answered, 3);
  EXPECT_EQ(all->remembered, 0);
  EXPECT_EQ(all->unknown, 0);
  EXPECT_GT(all->capacity, 0u);
  EXPECT_LE(all->free, all->capacity);
  EXPECT_LE(all->available, all->free);
  {
    // remember_for counts from the first Space() a node missed, not from its last answer: a
    // df every few minutes must not drop a node that froze just before it. (Here the last
    // answer is older than remember_for when the node freezes.)
    const kj::Duration remember_for = 300 * kj::MILLISECONDS;
    std::this_thread::sleep_for(std::chrono::milliseconds(400));
    Frozen frozen(cluster.pid(1));
    ASSERT_TRUE(frozen.ok());
    // (A live node slower than the hurry is remembered too, so only the sums are exact.)
    auto r = space(client, &took, 100 * kj::MILLISECONDS, remember_for);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_LT(took, 2.0) << "waited on the frozen node";
    EXPECT_GE(r->remembered, 1);
    EXPECT_EQ(r->answered + r->remembered, 3);
    EXPECT_EQ(r->unknown, 0);
    // Every node's data dir is on the same file system here: its size does not change.
    EXPECT_EQ(r->capacity, all->capacity) << "the frozen node's last answer is not counted";
    // A node that has missed every Space() for longer than remember_for (here since the call
    // above) is not counted: a node gone that long is gone.
    std::this_thread::sleep_for(std::chrono::milliseconds(400));
    auto stale = space(client, &took, 100 * kj::MILLISECONDS, remember_for);
    ASSERT_TRUE(stale.ok()) << stale.status().ToString();
    EXPECT_EQ(stale->remembered, 0);
    EXPECT_GE(stale->unknown, 1);
    EXPECT_LT(stale->capacity, all->capacity) << "counted a node silent for longer than allowed";
    auto f = space(fresh, &took);
    ASSERT_TRUE(f.ok()) << f.status().ToString();
    EXPECT_LT(took, 2.0) << "waited on the frozen node";
    EXPECT_EQ(f->remembered, 0);
    EXPECT_GE(f->unknown, 1);
    EXPECT_EQ(f->answered + f->unknown, 3);
    EXPECT_LT(f->capacity, all->capacity) << "counted a node that never answered";
  }
  // With every node gone: an error (not a hang, not a zero-sized file system).
  for (int i = 0; i < 3; ++i) cluster.Kill(i);
  auto none = space(client, &took);
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.status().code(), StatusCode::kUnavailable) << none.status().ToString();
  EXPECT_LT(took, 6.0);
}

// A chunk read does not wait alone on a replica that answers nothing: after `hedge_after` it
// asks the next replica as well and takes the first verified copy. A listing (readdir, rmdir's
// scan) that has R voting answers waits for the rest only briefly. Before, a read whose first
// replica was frozen (or cut off by a silent network), and every listing, waited out the whole
// call timeout; the fsx run under failures saw operations of 3-8 s with one server away.
TEST(ClusterIntegration, AReadOrListingDoesNotWaitForAFrozenReplica) {
  TestCluster cluster;
  ClusterClientOptions o = ShortDeadlines();
  o.rpc.call_timeout = 4 * kj::SECONDS;
  o.proposer.op_timeout = 8 * kj::SECONDS;
  o.chunks.hedge_after = 200 * kj::MILLISECONDS;
  ClusterClient client(cluster.config(), o);
  ASSERT_TRUE(
      client.Change(InodeKey(9), [](const std::optional<std::string>&) { return SetTo("x"); })
          .ok());
  std::mt19937_64 rng(7);
  const std::string data = RandomBytes(rng, 300000);
  auto id = client.PutChunk(data);
  ASSERT_TRUE(id.ok()) << id.status().ToString();
  // Every replica holds it (the put returned after W of N).
  const std::string hex = id->ToHex();
  auto all_stored = [&]() {
    for (int node = 0; node < 3; ++node) {
      std::string path = cluster.data_dir(node) + "/chunks/" + hex.substr(0, 2) + "/" +
                         hex.substr(2, 2) + "/" + hex;
      if (::access(path.c_str(), F_OK) != 0) return false;
    }
    return true;
  };
  for (int t = 0; t < 500 && !all_stored(); ++t) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_TRUE(all_stored()) << "the third replica never arrived";
  auto hedged = [](ClusterClient& c) {
    return c.RunSync<uint64_t>([&]() { return kj::Promise<uint64_t>(c.chunks().hedged_gets()); });
  };
  auto got = client.GetChunk(*id);
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(hedged(client), 0u) << "a replica that answers at once is not hedged";

  // Freeze the replica a read asks first (its kernel still accepts and acknowledges).
  auto order = FullRanking(*cluster.config(), id->view());
  const int first = order[0][0] - 'a';
  const pid_t pid = cluster.pid(first);
  ASSERT_GT(pid, 0);
  Frozen frozen(pid);
  ASSERT_TRUE(frozen.ok());
  auto timed_get = [&](ClusterClient& c, double* took) {
    auto start = std::chrono::steady_clock::now();
    auto r = c.GetChunk(*id);
    *took = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    return r;
  };
  double took = 0;
  got = timed_get(client, &took);
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(*got, data);
  EXPECT_GE(took, 0.15) << "asked the second replica before the first was late?";
  EXPECT_LT(took, 1.5) << "waited on the frozen replica " << order[0];
  EXPECT_EQ(hedged(client), 1u);

  // A listing of the frozen server's replica set (every set holds it: N = 3).
  auto timed_list = [&](RpcRecordLister& lister, double* took) {
    lister.SetConfig(cluster.config());
    auto start = std::chrono::steady_clock::now();
    auto r = client.RunSync<Result<std::vector<std::string>>>(
        [&]() { return lister.ListKeys(RecordPlacementKey(InodeKey(9)), "I/", "", 100); });
    *took = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    return r;
  };
  RpcRecordLister lister(client.rpc(), &client.timer(), 8 * kj::SECONDS);
  double list_took = 0;
  auto listed = timed_list(lister, &list_took);
  ASSERT_TRUE(listed.ok()) << listed.status().ToString();
  EXPECT_EQ(*listed, std::vector<std::string>{InodeKey(9)});
  EXPECT_LT(list_took, 1.5) << "the listing waited on the frozen replica " << order[0];
  // The control: a lister without a timer waits for every replica's answer or timeout.
  RpcRecordLister waits_for_all(client.rpc());
  double list_took_all = 0;
  listed = timed_list(waits_for_all, &list_took_all);
  ASSERT_TRUE(listed.ok()) << listed.status().ToString();
  EXPECT_EQ(*listed, std::vector<std::string>{InodeKey(9)});
  EXPECT_GT(list_took_all, 3.5);

  // The control: without the hedge, the same read waits for the frozen replica's call timeout.
  ClusterClientOptions sequential = o;
  sequential.chunks.hedge_after = 0 * kj::SECONDS;
  ClusterClient one_by_one(cluster.config(), sequential);
  double took_sequential = 0;
  got = timed_get(one_by_one, &took_sequential);
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(*got, data);
  EXPECT_GT(took_sequential, 3.5);
  EXPECT_EQ(hedged(one_by_one), 0u);
  std::fprintf(stderr,
               "with %s frozen: read %.2f s hedged, %.2f s one replica at a time; listing "
               "%.2f s, %.2f s waiting for all\n",
               order[0].c_str(), took, took_sequential, list_took, list_took_all);
}

TEST(ClusterIntegration, WrongEpochIsRefusedNamingBoth) {
  TestCluster cluster;
  ClusterClient client(cluster.ConfigWithEpoch(2), ShortDeadlines());
  auto r = client.Change(InodeKey(3),
                         [](const std::optional<std::string>&) { return Decision::Write("x"); });
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kEpochMismatch) << r.status().ToString();
  EXPECT_NE(r.status().message().find("request epoch 2"), std::string::npos);
  EXPECT_NE(r.status().message().find("at epoch 1"), std::string::npos);
  auto put = client.PutChunk("abc");
  ASSERT_FALSE(put.ok());
  EXPECT_EQ(put.status().code(), StatusCode::kEpochMismatch) << put.status().ToString();
}

TEST(ClusterIntegration, CorruptReplicaIsSkippedReportedAndQuarantined) {
  TestCluster cluster;
  ClusterClient client(cluster.config(), ShortDeadlines());
  std::string data(300000, 'q');
  for (size_t i = 0; i < data.size(); i += 7) data[i] = static_cast<char>(i);
  auto id = client.PutChunk(data);
  ASSERT_TRUE(id.ok()) << id.status().ToString();
  // Wait until every replica has it (the put returned after W of N).
  std::string hex = id->ToHex();
  auto path = [&](int node) {
    return cluster.data_dir(node) + "/chunks/" + hex.substr(0, 2) + "/" + hex.substr(2, 2) + "/" +
           hex;
  };
  auto all_stored = [&]() {
    for (int node = 0; node < 3; ++node) {
      if (::access(path(node).c_str(), F_OK) != 0) return false;
    }
    return true;
  };
  for (int t = 0; t < 500 && !all_stored(); ++t) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_TRUE(all_stored()) << "the third replica never arrived";
  // Flip a byte in the replica the client tries first.
  auto order = FullRanking(*cluster.config(), id->view());
  int first = order[0][0] - 'a';
  {
    FILE* f = std::fopen(path(first).c_str(), "r+b");
    ASSERT_NE(f, nullptr);
    std::fseek(f, 1000, SEEK_SET);
    std::fputc('Z', f);
    std::fclose(f);
  }
  auto got = client.GetChunk(*id);
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(*got, data);  // served by the next replica, verified
  // The report made the server re-verify and quarantine its bad copy.
  bool quarantined = false;
  for (int t = 0; t < 100 && !quarantined; ++t) {
    quarantined = ::access(path(first).c_str(), F_OK) != 0;
    if (!quarantined) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_TRUE(quarantined) << "corrupt replica still in place on " << order[0];
}

}  // namespace
}  // namespace quorumfs
