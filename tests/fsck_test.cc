// `quorumfs fsck` against real chunkservers (issue: admin CLI). Each test makes one kind of
// damage, then checks the cycle: fsck finds it (exit 4, naming the damage and the path),
// fsck --repair fixes it (exit 1), a second fsck is clean (exit 0), and every file still reads
// back byte for byte.
#include <gtest/gtest.h>
#include <kj/async.h>
#include <sys/stat.h>

#include <atomic>
#include <set>

#include "chunkserver/record_store.h"
#include "common/placement.h"
#include "common/record_key.h"
#include "tests/admin_test_util.h"
#include "tests/test_cluster.h"

namespace quorumfs {
namespace {

using testing::CliResult;
using testing::TestCluster;
using testing::TestClusterOptions;
using testing::TestFs;

constexpr size_t kMiB = 1024 * 1024;
using namespace std::chrono_literals;

int64_t WallNowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

class FsckTest : public ::testing::Test {
 protected:
  void StartCluster(TestClusterOptions o = {}, const char* tmpfs_size = nullptr) {
    if (tmpfs_size) o.start = false;
    cluster_ = std::make_unique<TestCluster>(o);
    if (tmpfs_size) {
      ASSERT_NO_FATAL_FAILURE(testing::StartOnTmpfs(*cluster_, tmpfs_size, &disks_));
    }
    client_ = std::make_unique<ClusterClient>(cluster_->config(), testing::ShortDeadlines());
    fs_ = std::make_unique<TestFs>(*client_);
    auto root = fs_->EnsureRoot();
    ASSERT_TRUE(root.ok()) << root.status().ToString();
  }

  // A client whose inodes pass their birth deadline, plus fsck's skew bound (1 s), within
  // 1.5 s: what it creates and leaves unnamed is adoptable soon.
  static ClusterClientOptions QuickBirthOptions() {
    ClusterClientOptions o = testing::ShortDeadlines();
    o.ns.birth_grace_ns = 300'000'000;
    o.ns.clock_skew_ns = 50'000'000;
    return o;
  }

  // A few directories and files of 0 bytes to several chunks.
  void WriteFiles(const std::string& prefix = "") {
    auto d = fs_->Create(prefix + "/d", FileType::kDirectory);
    ASSERT_TRUE(d.ok()) << d.status().ToString();
    auto e = fs_->Create(prefix + "/d/e", FileType::kDirectory);
    ASSERT_TRUE(e.ok()) << e.status().ToString();
    Write(prefix + "/empty", "");
    Write(prefix + "/d/small", "hello, quorumfs\n");
    Write(prefix + "/d/two", testing::RandomBytes(files_.size() + 1, kMiB + kMiB / 2));
    Write(prefix + "/d/e/big", testing::RandomBytes(files_.size() + 7, 2 * kMiB + 12345));
  }

  void Write(const std::string& path, const std::string& data) {
    auto in = fs_->WriteFile(path, data);
    ASSERT_TRUE(in.ok()) << path << ": " << in.status().ToString();
    files_[path] = data;
  }

  // Every file is found exactly once, at its path, with the bytes written.
  void ExpectFilesIntact(TestFs* fs = nullptr) {
    if (!fs) fs = fs_.get();
    auto all = fs->Walk();
    ASSERT_TRUE(all.ok()) << all.status().ToString();
    for (const auto& [path, data] : files_) {
      auto ino = fs->Resolve(path);
      ASSERT_TRUE(ino.ok()) << path << ": " << ino.status().ToString();
      EXPECT_EQ(all->count(*ino), 1u)
          << path << " (inode " << *ino << ") found " << all->count(*ino) << " times";
      auto bytes = fs->ReadFile(*ino);
      ASSERT_TRUE(bytes.ok()) << path << ": " << bytes.status().ToString();
      EXPECT_EQ(bytes->size(), data.size()) << path;
      EXPECT_TRUE(*bytes == data) << path << ": content differs";
    }
  }

  CliResult Fsck(std::vector<std::string> flags) {
    std::vector<std::string> args = {"fsck", "--cluster", cluster_->cluster_file(), "--timeout",
                                     "5"};
    args.insert(args.end(), flags.begin(), flags.end());
    CliResult r = testing::RunCli(args, cluster_->dir());
    std::string cmd;
    for (const auto& f : flags) cmd += " " + f;
    std::printf("---- fsck%s -> exit %d\n%s%s", cmd.c_str(), r.code, r.out.c_str(), r.err.c_str());
    return r;
  }

  // The check / repair / check cycle for damage that fsck reports as `kind` at `path`.
  void ExpectRepairCycle(const std::vector<std::string>& flags,
                         const std::vector<std::string>& must_name) {
    CliResult check = Fsck(flags);
    EXPECT_EQ(check.code, 4) << check.All();
    for (const auto& s : must_name) {
      EXPECT_NE(check.out.find(s), std::string::npos) << "fsck output does not name " << s;
    }
    // A check changes nothing: a second one finds the same damage.
    CliResult recheck = Fsck(flags);
    EXPECT_EQ(recheck.code, 4) << recheck.All();
    auto table = [](const std::string& out) {
      size_t from = out.find("\ncheck ");
      return from == std::string::npos ? out : out.substr(from, out.find("\nscanned") - from);
    };
    EXPECT_EQ(table(recheck.out), table(check.out));
    std::vector<std::string> repair_flags = flags;
    repair_flags.push_back("--repair");
    CliResult repair = Fsck(repair_flags);
    EXPECT_EQ(repair.code, 1) << repair.All();
    CliResult again = Fsck(flags);
    EXPECT_EQ(again.code, 0) << again.All();
    ExpectFilesIntact();
  }

  // Rewrites inode `ino`'s record with `f` applied, as damage a crash or a bug could leave.
  void EditInode(uint64_t ino, const std::function<void(Inode&)>& f) {
    auto r = client_->Change(InodeKey(ino), [&](const std::optional<std::string>& cur) {
      auto rec = MetaRecord::Decode(*cur);
      if (!rec.ok() || !rec->inode()) return Decision::Abort(Internal("not an inode"));
      f(*rec->inode());
      return Decision::Write(rec->Encode());
    });
    ASSERT_TRUE(r.ok()) << r.status().ToString();
  }

  // The chunk of slot `slot` of the file at `path`.
  ChunkId ChunkOf(const std::string& path, size_t slot) {
    auto ino = fs_->Resolve(path);
    if (!ino.ok()) {
      ADD_FAILURE() << path << ": " << ino.status().ToString();
      return ChunkId();
    }
    auto in = fs_->GetAttr(*ino);
    if (!in.ok() || slot >= in->slots.size()) {
      ADD_FAILURE() << path << ": no slot " << slot;
      return ChunkId();
    }
    return in->slots[slot].id;
  }

  // Every chunk every file references.
  std::set<ChunkId> AllChunks() {
    std::set<ChunkId> out;
    for (const auto& [path, data] : files_) {
      auto ino = fs_->Resolve(path);
      auto in = ino.ok() ? fs_->GetAttr(*ino) : Result<Inode>(ino.status());
      if (!in.ok()) {
        ADD_FAILURE() << path << ": " << in.status().ToString();
        continue;
      }
      for (const auto& s : in->slots) {
        if (!s.hole()) out.insert(s.id);
      }
    }
    return out;
  }

  // Indices of the nodes holding a copy of `id` on disk.
  std::set<int> Holders(const ChunkId& id) {
    std::set<int> out;
    for (int i = 0; i < cluster_->nodes(); ++i) {
      if (testing::FileExists(testing::ChunkPath(cluster_->data_dir(i), id))) out.insert(i);
    }
    return out;
  }

  // Indices of the home nodes of `id` under the cluster's current config.
  std::set<int> Homes(const ChunkId& id) {
    std::set<int> out;
    auto groups = ReplicaGroupsFor(*cluster_->config(), id.view());
    for (const auto& n : groups.front().members) {
      for (int i = 0; i < cluster_->nodes(); ++i) {
        if (cluster_->node_id(i) == n) out.insert(i);
      }
    }
    return out;
  }

  // The nodes (indices) holding a value of each record, listed through client_.
  std::map<std::string, std::set<int>> RecordHolders() {
    std::map<std::string, std::set<int>> out;
    for (int i = 0; i < cluster_->nodes(); ++i) {
      if (!cluster_->Running(i)) continue;
      std::string after;
      for (;;) {
        auto page = client_->RunSync<Result<ScanPage>>(
            [&]() { return client_->rpc().ScanRecords(cluster_->node_id(i), "", after, 4096); });
        if (!page.ok()) {
          ADD_FAILURE() << cluster_->node_id(i) << ": " << page.status().ToString();
          break;
        }
        for (const auto& r : page->records) {
          after = r.key;
          if (r.value) out[r.key].insert(i);
        }
        if (!page->more) break;
      }
    }
    return out;
  }

  // Indices of the nodes of every replica set of record `key` under the current config.
  std::set<int> RecordHomes(const std::string& key) {
    std::set<int> out;
    for (const auto& n :
         ReplicaUnion(ReplicaGroupsFor(*cluster_->config(), RecordPlacementKey(key)))) {
      for (int i = 0; i < cluster_->nodes(); ++i) {
        if (cluster_->node_id(i) == n) out.insert(i);
      }
    }
    return out;
  }

  // Keys with a copy on a node outside their replica sets.
  std::set<std::string> KeysAwayFromHome() {
    std::set<std::string> out;
    for (const auto& [key, holders] : RecordHolders()) {
      std::set<int> homes = RecordHomes(key);
      for (int h : holders) {
        if (!homes.count(h)) out.insert(key);
      }
    }
    return out;
  }

  // Runs `fsck flags` again and again for 5 s (6 runs and 100 steps at least) while a thread of its
  // own client calls `step(fs, i)` for i = 0, 1, ...; expects every step to succeed and every check
  // to find nothing (exit 0, no ERROR line).
  void ExpectCleanChecksWhile(const std::function<Status(TestFs&, int)>& step,
                              const std::vector<std::string>& flags) {
    std::atomic<bool> stop{false};
    std::atomic<int> ops{0};
    std::atomic<bool> worker_done{false};  // it stops at its first failure
    Status failed;
    std::thread worker([&]() {
      ClusterClient c(cluster_->config(), testing::ShortDeadlines());
      TestFs fs(c);
      for (int i = 0; !stop && failed.ok(); ++i, ++ops) failed = step(fs, i);
      worker_done = true;
    });
    std::vector<CliResult> checks;
    auto until = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (checks.size() < 6 || std::chrono::steady_clock::now() < until ||
           (ops < 100 && !worker_done && std::chrono::steady_clock::now() < until + 55s)) {
      checks.push_back(Fsck(flags));
    }
    stop = true;
    worker.join();
    EXPECT_GT(ops.load(), 100);
    EXPECT_TRUE(failed.ok()) << failed.ToString();
    for (const auto& c : checks) {
      EXPECT_EQ(c.code, 0) << c.All();
      EXPECT_EQ(c.out.find("ERROR"), std::string::npos) << c.out;
    }
  }

  // Installs a joint membership (`text` plus `previous`), rebalances it while a client of it
  // reads every file, and installs the next file fsck wrote; client_ and fs_ then use it.
  void ChangeMembership(const std::string& text) {
    client_.reset();
    fs_.reset();
    ::unlink((cluster_->cluster_file() + ".next").c_str());  // the last change's
    cluster_->Reconfigure(text);
    ASSERT_TRUE(cluster_->config()->InTransition());
    {
      ClusterClient joint(cluster_->config(), testing::ShortDeadlines());
      TestFs joint_fs(joint);
      std::string next_path = RebalanceWhileReading(joint_fs);
      ASSERT_FALSE(next_path.empty());
      cluster_->Reconfigure(testing::ReadWholeFile(next_path));
      ASSERT_FALSE(cluster_->config()->InTransition());
    }
    client_ = std::make_unique<ClusterClient>(cluster_->config(), testing::ShortDeadlines());
    fs_ = std::make_unique<TestFs>(*client_);
  }

  // Runs `fsck --rebalance` while a thread reads every file through `fs` (a client of the
  // joint configuration) and checks each read; returns the next cluster file fsck wrote.
  std::string RebalanceWhileReading(TestFs& fs) {
    std::map<std::string, uint64_t> inos;
    for (const auto& [path, data] : files_) {
      auto ino = fs.Resolve(path);
      if (!ino.ok()) {
        ADD_FAILURE() << path << ": " << ino.status().ToString();
        return "";
      }
      inos[path] = *ino;
    }
    std::atomic<bool> done{false};
    std::atomic<int> reads{0}, failures{0};
    std::string first_failure;
    std::thread reader([&]() {
      while (!done) {
        for (const auto& [path, ino] : inos) {
          auto bytes = fs.ReadFile(ino);
          if (!bytes.ok() || *bytes != files_[path]) {
            if (failures++ == 0) {
              first_failure =
                  path + ": " + (bytes.ok() ? "wrong bytes" : bytes.status().ToString());
            }
          }
          ++reads;
        }
      }
    });
    CliResult r = Fsck({"--rebalance"});
    done = true;
    reader.join();
    EXPECT_TRUE(r.code == 0 || r.code == 1) << r.All();
    EXPECT_GT(reads.load(), 0);
    EXPECT_EQ(failures.load(), 0) << first_failure;
    std::string next_path = cluster_->cluster_file() + ".next";
    EXPECT_TRUE(testing::FileExists(next_path)) << r.out;
    return testing::FileExists(next_path) ? next_path : "";
  }

  testing::TmpfsDisks disks_;  // StartCluster(o, size): unmounted after the cluster stops
  std::unique_ptr<TestCluster> cluster_;
  std::unique_ptr<ClusterClient> client_;
  std::unique_ptr<TestFs> fs_;
  std::map<std::string, std::string> files_;  // path -> content
};

TEST_F(FsckTest, HealthyClusterIsClean) {
  StartCluster();
  WriteFiles();
  CliResult r = Fsck({});
  EXPECT_EQ(r.code, 0) << r.All();
  EXPECT_NE(r.out.find("exit 0: clean"), std::string::npos);
  CliResult deep = Fsck({"--deep", "--json"});
  EXPECT_EQ(deep.code, 0) << deep.All();
  EXPECT_NE(deep.out.find("\"exit_code\":0"), std::string::npos) << deep.out;
  EXPECT_NE(deep.out.find("\"files\":4"), std::string::npos) << deep.out;
  EXPECT_NE(deep.out.find("\"issues\":[]"), std::string::npos) << deep.out;
  // A subtree only.
  CliResult sub = Fsck({"--path", "/d/e"});
  EXPECT_EQ(sub.code, 0) << sub.All();
  // A subtree that is a file, or not there: an operational error that says so (a file was
  // reported as an unreadable directory, exit 4, "run with --repair").
  CliResult file = Fsck({"--path", "/d/small"});
  EXPECT_EQ(file.code, 8) << file.All();
  EXPECT_NE(file.out.find("small is not a directory"), std::string::npos) << file.out;
  CliResult missing = Fsck({"--path", "/d/nope"});
  EXPECT_EQ(missing.code, 8) << missing.All();
  // No membership change under way: nothing to rebalance, no next cluster file.
  CliResult rebalance = Fsck({"--rebalance"});
  EXPECT_EQ(rebalance.code, 0) << rebalance.All();
  EXPECT_FALSE(testing::FileExists(cluster_->cluster_file() + ".next"));
  // A cluster file at another epoch than the nodes': operational error naming both.
  std::string other = cluster_->dir() + "/epoch2.conf";
  std::string text = testing::ReadWholeFile(cluster_->cluster_file());
  ASSERT_EQ(text.rfind("epoch = 1\n", 0), 0u) << text;
  std::ofstream(other) << "epoch = 2\n" << text.substr(10);
  CliResult epoch = testing::RunCli({"fsck", "--cluster", other}, cluster_->dir());
  EXPECT_EQ(epoch.code, 8) << epoch.All();
  EXPECT_NE(epoch.out.find("is at epoch 1, the cluster file says 2"), std::string::npos)
      << epoch.out;
  // A cluster file that cannot be read is an operational error.
  CliResult bad =
      testing::RunCli({"fsck", "--cluster", cluster_->dir() + "/nope.conf"}, cluster_->dir());
  EXPECT_EQ(bad.code, 8) << bad.All();
  EXPECT_NE(bad.err.find("nope.conf"), std::string::npos) << bad.err;
}

TEST_F(FsckTest, DeletedReplicaIsReReplicated) {
  StartCluster();
  WriteFiles();
  ChunkId id = ChunkOf("/d/e/big", 1);
  std::string victim = testing::ChunkPath(cluster_->data_dir(1), id);
  ASSERT_TRUE(testing::FileExists(victim));
  ASSERT_EQ(::unlink(victim.c_str()), 0);
  ExpectRepairCycle({}, {"chunk_under_replicated", id.ToHex(), "/d/e/big", "missing on b"});
  EXPECT_TRUE(testing::FileExists(victim));
  EXPECT_EQ(testing::ReadWholeFile(victim).size(), 1 * kMiB);
}

TEST_F(FsckTest, FlippedByteIsFoundByDeepAndReplaced) {
  StartCluster();
  WriteFiles();
  ChunkId id = ChunkOf("/d/two", 0);
  std::string victim = testing::ChunkPath(cluster_->data_dir(2), id);
  ASSERT_TRUE(testing::FileExists(victim));
  {
    std::fstream f(victim, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(4242);
    char c = 0;
    f.read(&c, 1);
    c = static_cast<char>(c ^ 0x20);
    f.seekp(4242);
    f.write(&c, 1);
  }
  ASSERT_NE(ChunkId::Of(testing::ReadWholeFile(victim)), id);
  // Without --deep replicas are not read: the flip goes unseen.
  CliResult shallow = Fsck({});
  EXPECT_EQ(shallow.code, 0) << shallow.All();
  EXPECT_EQ(shallow.out.find("chunk_corrupt"), std::string::npos);
  ExpectRepairCycle({"--deep"}, {"chunk_corrupt", id.ToHex(), "/d/two", "on c"});
  EXPECT_EQ(ChunkId::Of(testing::ReadWholeFile(victim)), id);
}

TEST_F(FsckTest, SloppyChunksAreMovedHome) {
  TestClusterOptions o;
  o.nodes = 4;
  StartCluster(o);
  WriteFiles("");
  // Node b is down while more files are written: chunks homed on b go to the next node in
  // rendezvous order, with a hint.
  cluster_->Kill(1);
  Write("/late1", testing::RandomBytes(101, 3 * kMiB + 5));
  Write("/late2", testing::RandomBytes(102, 2 * kMiB));
  std::vector<ChunkId> sloppy;
  for (const auto& path : {"/late1", "/late2"}) {
    for (size_t s = 0; s * kMiB < files_[path].size(); ++s) {
      ChunkId id = ChunkOf(path, s);
      if (Homes(id).count(1)) {
        sloppy.push_back(id);
        EXPECT_EQ(Holders(id).count(1), 0u);
        EXPECT_EQ(Holders(id).size(), 3u) << id.ToHex();
      }
    }
  }
  ASSERT_FALSE(sloppy.empty()) << "no chunk of the late files is homed on b";
  // While b is still down, a repair must keep the away copies: they stand in for b's.
  CliResult while_down = Fsck({"--repair"});
  EXPECT_EQ(while_down.code, 4) << while_down.All();
  EXPECT_NE(while_down.out.find("node_down"), std::string::npos);
  EXPECT_NE(while_down.out.find("start the nodes that are down"), std::string::npos);
  for (const auto& id : sloppy) EXPECT_EQ(Holders(id).size(), 3u) << id.ToHex();
  cluster_->Start(1);
  ExpectRepairCycle({}, {"chunk_under_replicated", "chunk_away_from_home", sloppy[0].ToHex(),
                         "missing on b", "/late"});
  for (const auto& id : AllChunks()) EXPECT_EQ(Holders(id), Homes(id)) << id.ToHex();
}

TEST_F(FsckTest, StaleRecordReplicaIsRewritten) {
  StartCluster();
  WriteFiles();
  cluster_->Kill(2);
  Write("/d/late", "written while c was down");
  ASSERT_TRUE(fs_->Create("/newdir", FileType::kDirectory).ok());
  ASSERT_TRUE(fs_->Rename("/d/small", "/newdir/small").ok());
  files_["/newdir/small"] = files_["/d/small"];
  files_.erase("/d/small");
  cluster_->Start(2);
  ExpectRepairCycle(
      {}, {"record_replicas_disagree", "lagging or divergent on c", "/d/late", "/newdir"});
}

// A create whose record writes reached some replicas and not others (their metadata disks
// full) leaves replicas that disagree, one of them holding a promise above anything the others
// saw. A repair brings every replica to one value: its identity write must get past that
// promise too (seen in CI, in the full-disk test, as record_replicas_disagree left after
// --repair).
TEST_F(FsckTest, RecordsLeftByWritesOnFullDisksAreSettled) {
  ASSERT_EQ(::geteuid(), 0u) << "this test mounts tmpfs file systems and needs root";
  StartCluster({}, "16m");
  ASSERT_TRUE(fs_->Create("/d", FileType::kDirectory).ok());
  // Nothing left on a's and b's disks: their metadata writes fail, c's succeed.
  for (int i : {0, 1}) {
    ASSERT_NO_FATAL_FAILURE(testing::FillWithBallast(cluster_->data_dir(i) + "/ballast"));
  }
  int failed = 0;
  for (int i = 0; i < 20 && failed == 0; ++i) {
    failed += !fs_->Create("/d/lost" + std::to_string(i)).ok();
  }
  ASSERT_GT(failed, 0) << "creates succeeded on full disks";
  for (int i : {0, 1}) ASSERT_EQ(::unlink((cluster_->data_dir(i) + "/ballast").c_str()), 0);
  // The servers reopen their metadata stores by themselves once a write failed there: creates
  // work again soon.
  bool created = false;
  for (int i = 0; i < 50 && !created; ++i) {
    created = fs_->Create("/d/again" + std::to_string(i)).ok();
    if (!created) std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  ASSERT_TRUE(created);
  std::this_thread::sleep_for(std::chrono::milliseconds(1000));
  CliResult check = Fsck({"--recount-quiet", "1"});
  EXPECT_EQ(check.code, 4) << check.All();
  EXPECT_NE(check.out.find("record_replicas_disagree"), std::string::npos) << check.All();
  CliResult repair = Fsck({"--repair", "--recount-quiet", "1"});
  EXPECT_EQ(repair.code, 1) << repair.All();
  CliResult again = Fsck({});
  EXPECT_EQ(again.code, 0) << again.All();
}

// A cluster no mount has used yet (no root inode: the first mount makes it) is clean, not an
// unreadable root; it used to exit 4 with unreadable_directory, which --repair could not fix.
TEST_F(FsckTest, AClusterNoMountHasUsedIsClean) {
  cluster_ = std::make_unique<TestCluster>();
  // A read of the root (as a mount's first lookup) leaves at most a promise, no value.
  {
    ClusterClient reader(cluster_->config(), testing::ShortDeadlines());
    auto root = reader.Change(InodeKey(kRootIno),
                              [](const std::optional<std::string>&) { return Decision::Keep(); });
    ASSERT_TRUE(root.ok()) << root.status().ToString();
  }
  CliResult check = Fsck({});
  EXPECT_EQ(check.code, 0) << check.All();
  EXPECT_NE(check.out.find("no file system yet"), std::string::npos) << check.All();
  CliResult gc = Fsck({"--gc", "--grace", "0", "--no-writers"});
  EXPECT_EQ(gc.code, 0) << gc.All();
  // Chunks with no metadata at all are a lost metadata store, not garbage: --gc refuses.
  {
    ClusterClient writer(cluster_->config(), testing::ShortDeadlines());
    auto put = writer.PutChunk(std::string(5000, 'c'));
    ASSERT_TRUE(put.ok()) << put.status().ToString();
    CliResult refused = Fsck({"--gc", "--grace", "0", "--no-writers"});
    EXPECT_EQ(refused.code, 8) << refused.All();
    EXPECT_EQ(Holders(*put).size(), 3u);
  }
  // Once a mount made the root, fsck walks it as usual.
  client_ = std::make_unique<ClusterClient>(cluster_->config(), testing::ShortDeadlines());
  fs_ = std::make_unique<TestFs>(*client_);
  ASSERT_TRUE(fs_->EnsureRoot().ok());
  CliResult after = Fsck({});
  EXPECT_EQ(after.code, 0) << after.All();
  EXPECT_EQ(after.out.find("no file system yet"), std::string::npos) << after.All();
}

// A row whose key is no record key (a damaged store, or a broken server) is reported, and no
// later check takes it apart as a well-formed key: fsck used to die on "I" (out_of_range).
TEST_F(FsckTest, AMalformedRecordKeyIsReportedNotFatal) {
  StartCluster();
  WriteFiles();
  ASSERT_EQ(cluster_->Terminate(0), 0);
  {
    kj::EventLoop loop;
    kj::WaitScope ws(loop);
    auto store = RecordStore::Open(cluster_->data_dir(0) + "/meta");
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    AcceptorState st;
    st.promised = st.accepted = Ballot{1, 7};
    st.value = std::string("x");
    AcceptorWrite w;
    w.rows.emplace_back("I", st);
    w.rows.emplace_back("I/x", st);
    Status committed = (*store)->Commit(std::move(w)).wait(ws);
    ASSERT_TRUE(committed.ok()) << committed.ToString();
  }
  cluster_->Start(0);
  CliResult check = Fsck({});
  EXPECT_EQ(check.code, 4) << check.All();
  EXPECT_NE(check.out.find("malformed_record_key"), std::string::npos) << check.All();
  // Such a row's value may name chunks nobody else does: --gc refuses (and does not crash).
  CliResult gc = Fsck({"--gc", "--grace", "0", "--no-writers"});
  EXPECT_EQ(gc.code, 8) << gc.All();
  ExpectFilesIntact();
}

TEST_F(FsckTest, OrphanInodeIsAdoptedOnlyAfterItsBirthDeadline) {
  StartCluster();
  WriteFiles();
  ClusterClientOptions o = testing::ShortDeadlines();
  o.ns.test_crash_create_after_inode = true;
  o.ns.birth_grace_ns = 3'000'000'000;
  o.ns.clock_skew_ns = 100'000'000;
  ClusterClient crasher(cluster_->config(), o);
  TestFs crash_fs(crasher);
  int64_t created = WallNowNs();
  auto r = crash_fs.Create("/d/orphan");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable) << r.status().ToString();
  auto rd = crash_fs.Create("/d/e/orphandir", FileType::kDirectory);
  ASSERT_FALSE(rd.ok());
  // Inside its birth deadline a client may still be creating it: fsck leaves it alone, even
  // with --repair.
  CliResult early = Fsck({});
  CliResult early_repair = Fsck({"--repair"});
  // fsck's skew bound is its default, 1 s.
  int64_t adoptable_at = created + 3'000'000'000 + 1'000'000'000;
  ASSERT_LT(WallNowNs(), adoptable_at) << "too slow to test the birth deadline";
  EXPECT_EQ(early.code, 0) << early.All();
  EXPECT_EQ(early.out.find("orphan_inode"), std::string::npos);
  EXPECT_EQ(early_repair.code, 0) << early_repair.All();
  EXPECT_FALSE(fs_->Resolve("/lost+found").ok());
  while (WallNowNs() < adoptable_at + 300'000'000) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  // A file goes to /lost+found; a directory (empty: nothing could be created in it) is dropped.
  ExpectRepairCycle({}, {"orphan_inode", "/d/orphan", "/d/e/orphandir"});
  auto lf = fs_->Resolve("/lost+found");
  ASSERT_TRUE(lf.ok()) << lf.status().ToString();
  auto all = fs_->Walk();
  ASSERT_TRUE(all.ok());
  int adopted = 0;
  for (const auto& [ino, path] : *all) adopted += path.rfind("/lost+found/#", 0) == 0;
  EXPECT_EQ(adopted, 1);
  EXPECT_FALSE(fs_->Resolve("/d/orphan").ok());
}

// An unlink that stopped after its tombstone (the client died, or the inode's replica set had
// no quorum) leaves the inode live with one link and no entry naming it. fsck finishes that
// unlink: the file must not come back in /lost+found, also when its name was used again.
TEST_F(FsckTest, AnUnlinkThatStoppedAfterItsTombstoneIsFinishedNotAdopted) {
  StartCluster();
  WriteFiles();
  ClusterClientOptions o = QuickBirthOptions();
  ClusterClient young(cluster_->config(), o);
  TestFs young_fs(young);
  for (const char* path : {"/d/gone", "/d/reused"}) {
    auto w = young_fs.WriteFile(path, "deleted secret");
    ASSERT_TRUE(w.ok()) << w.status().ToString();
  }
  // Past the files' birth deadlines plus fsck's skew bound (1 s): adoptable if unnamed.
  std::this_thread::sleep_for(std::chrono::milliseconds(1600));
  o.ns.test_crash_unlink_after_tombstone = true;
  ClusterClient crasher(cluster_->config(), o);
  TestFs crash_fs(crasher);
  auto gone = fs_->Resolve("/d/gone");
  auto reused = fs_->Resolve("/d/reused");
  ASSERT_TRUE(gone.ok() && reused.ok());
  for (const char* path : {"/d/gone", "/d/reused"}) {
    Status s = crash_fs.Unlink(path);
    EXPECT_EQ(s.code(), StatusCode::kUnavailable) << s.ToString();
    EXPECT_FALSE(fs_->Resolve(path).ok()) << path << " is still named";
  }
  Write("/d/reused", "a new file under the old name");
  // A GC before the repair keeps the tombstone the inode's back-pointer names: the repair must
  // still see that the name was removed.
  CliResult gc = Fsck({"--gc", "--grace", "0", "--no-writers", "--recount-quiet", "1"});
  EXPECT_LE(gc.code, 4) << gc.All();
  ExpectRepairCycle({"--recount-quiet", "1"}, {"orphan_inode"});
  EXPECT_FALSE(fs_->Resolve("/lost+found").ok()) << "an unlinked file was adopted";
  for (uint64_t ino : {*gone, *reused}) {
    auto in = client_->RunSync<Result<Inode>>([&] { return client_->ns().GetAttr(ino); });
    ASSERT_TRUE(in.ok()) << in.status().ToString();
    EXPECT_EQ(in->state, InodeState::kDying) << "inode " << ino;
    EXPECT_EQ(in->nlink, 0u) << "inode " << ino;
  }
}

// An inode record fsck cannot decode (damaged, or written by a newer version) may name chunks
// that nothing else does: fsck reports it, and --gc refuses to run rather than take them.
TEST_F(FsckTest, GcRefusesWhileAnInodeRecordCannotBeDecoded) {
  StartCluster();
  WriteFiles();
  auto ino = fs_->Resolve("/d/two");
  ASSERT_TRUE(ino.ok());
  std::vector<ChunkId> ids = {ChunkOf("/d/two", 0), ChunkOf("/d/two", 1)};
  auto r = client_->Change(InodeKey(*ino), [&](const std::optional<std::string>& cur) {
    if (!cur) return Decision::Abort(Internal("no record"));
    std::string bytes = *cur;
    bytes[0] = 100;  // a record format this fsck does not know
    return Decision::Write(bytes);
  });
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  CliResult gc = Fsck({"--gc", "--grace", "0", "--no-writers"});
  EXPECT_EQ(gc.code, 8) << gc.All();
  EXPECT_NE(gc.out.find("record_undecodable"), std::string::npos) << gc.All();
  for (const auto& id : ids) EXPECT_EQ(Holders(id).size(), 3u) << id.ToHex();
}

// A directory whose own entry was lost, but which still holds files, is adopted into
// /lost+found with everything under it; it used to be marked dying, and the tree under it was
// lost for good (its files named by entries in a dead directory, never adopted).
TEST_F(FsckTest, AnOrphanedDirectoryThatHoldsFilesIsAdoptedWithThem) {
  StartCluster();
  WriteFiles();
  ClusterClientOptions o = QuickBirthOptions();
  ClusterClient young(cluster_->config(), o);
  TestFs young_fs(young);
  ASSERT_TRUE(young_fs.Create("/d/sub", FileType::kDirectory).ok());
  ASSERT_TRUE(young_fs.Create("/d/empty_sub", FileType::kDirectory).ok());
  const std::string data = testing::RandomBytes(77, kMiB + 3);
  ASSERT_TRUE(young_fs.WriteFile("/d/sub/f", data).ok());
  auto d = fs_->Resolve("/d");
  auto sub = fs_->Resolve("/d/sub");
  auto empty_sub = fs_->Resolve("/d/empty_sub");
  ASSERT_TRUE(d.ok() && sub.ok() && empty_sub.ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(1600));  // past birth + fsck's skew
  // Damage: both directories' entries are lost.
  for (const char* name : {"sub", "empty_sub"}) {
    auto r = client_->Change(DirEntryKey(*d, name), [](const std::optional<std::string>&) {
      return Decision::Write(MetaRecord{}.Encode());
    });
    ASSERT_TRUE(r.ok()) << r.status().ToString();
  }
  ExpectRepairCycle({"--recount-quiet", "1"}, {"orphan_inode"});
  auto f = fs_->Resolve("/lost+found/#" + std::to_string(*sub) + "/f");
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  auto got = fs_->ReadFile(*f);
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_TRUE(*got == data);
  auto lf = fs_->Resolve("/lost+found");
  ASSERT_TRUE(lf.ok());
  auto lf_attr = fs_->GetAttr(*lf);
  ASSERT_TRUE(lf_attr.ok());
  EXPECT_EQ(lf_attr->nlink, 3u);  // 2 + the adopted directory
  EXPECT_FALSE(fs_->Resolve("/lost+found/#" + std::to_string(*empty_sub)).ok());
  auto gone = fs_->GetAttr(*empty_sub);
  ASSERT_TRUE(gone.ok()) << gone.status().ToString();
  EXPECT_EQ(gone->state, InodeState::kDying);
}

TEST_F(FsckTest, InterruptedRenamesAreResolved) {
  StartCluster();
  WriteFiles();
  // Crashed with intents attached, X pending: rolled back once past its deadline.
  {
    ClusterClientOptions o = testing::ShortDeadlines();
    o.ns.test_crash_txn_after_intents = true;
    o.ns.txn_timeout_ns = 1'000'000'000;
    ClusterClient crasher(cluster_->config(), o);
    TestFs crash_fs(crasher);
    Status s = crash_fs.Rename("/d/small", "/d/e/moved");
    ASSERT_FALSE(s.ok());
    EXPECT_EQ(s.code(), StatusCode::kUnavailable) << s.ToString();
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  ExpectRepairCycle({"--recount-quiet", "1"}, {"transaction_expired", "/d/small", "/d/e/moved"});
  EXPECT_FALSE(fs_->Resolve("/d/e/moved").ok());

  // Crashed after the commit point: the rename stands once its intents are resolved.
  {
    ClusterClientOptions o = testing::ShortDeadlines();
    o.ns.test_crash_txn_after_commit = true;
    ClusterClient crasher(cluster_->config(), o);
    TestFs crash_fs(crasher);
    Status s = crash_fs.Rename("/d/two", "/two-moved");
    ASSERT_FALSE(s.ok());
    EXPECT_EQ(s.code(), StatusCode::kUnavailable) << s.ToString();
  }
  files_["/two-moved"] = files_["/d/two"];
  files_.erase("/d/two");
  ExpectRepairCycle({"--recount-quiet", "1"}, {"transaction_unresolved", "/d/two", "/two-moved"});
  EXPECT_FALSE(fs_->Resolve("/d/two").ok());

  // Both transaction records (and any other decided one) are removed by --gc after the grace
  // period; the namespace stays clean and usable.
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));
  CliResult gc = Fsck({"--gc", "--grace", "1", "--no-writers", "--json"});
  EXPECT_EQ(gc.code, 0) << gc.All();
  EXPECT_EQ(gc.out.find("\"gc_records_deleted\":0"), std::string::npos) << gc.out;
  CliResult after_gc = Fsck({});
  EXPECT_EQ(after_gc.code, 0) << after_gc.All();
  ASSERT_TRUE(fs_->Rename("/two-moved", "/d/two").ok());
  files_["/d/two"] = files_["/two-moved"];
  files_.erase("/two-moved");
  ExpectFilesIntact();
  CliResult last = Fsck({});
  EXPECT_EQ(last.code, 0) << last.All();
}

// A move between directories whose client died after its commit leaves rename marks on both
// directories (README, "Renames keep the directories out of their transactions"). Here the
// transaction's intents are then resolved by a move back, so only the marks remain: the
// source's count is one high until they are settled. fsck reports them, --gc keeps the
// transaction record while a mark names it (settling reads its fate), and --repair settles
// them.
TEST_F(FsckTest, UnsettledRenameMarksAreReportedAndKeepTheirTransaction) {
  StartCluster();
  WriteFiles();
  {
    ClusterClientOptions o = testing::ShortDeadlines();
    o.ns.test_crash_txn_after_commit = true;
    ClusterClient crasher(cluster_->config(), o);
    TestFs crash_fs(crasher);
    Status s = crash_fs.Rename("/d/small", "/small-moved");
    EXPECT_EQ(s.code(), StatusCode::kUnavailable) << s.ToString();
  }
  ASSERT_TRUE(fs_->Rename("/small-moved", "/d/small").ok());
  auto d = fs_->Resolve("/d");
  ASSERT_TRUE(d.ok());
  auto marked = fs_->GetAttr(*d);
  ASSERT_TRUE(marked.ok());
  ASSERT_EQ(marked->rename_marks.size(), 1u);
  EXPECT_EQ(marked->entry_count, 4u) << "3 entries; the crashed move's -1 not yet made";

  std::this_thread::sleep_for(std::chrono::milliseconds(1100));
  CliResult gc = Fsck({"--gc", "--grace", "1", "--no-writers", "--recount-quiet", "1"});
  EXPECT_EQ(gc.code, 4) << gc.All();
  // Repair settles the marks, which needs the transaction's record: --gc kept it.
  ExpectRepairCycle({"--recount-quiet", "1"},
                    {"/d", "rename(s) not yet settled", "rename marks not settled"});
  auto settled = fs_->GetAttr(*d);
  ASSERT_TRUE(settled.ok());
  EXPECT_TRUE(settled->rename_marks.empty());
  EXPECT_EQ(settled->entry_count, 3u);
  CliResult gc2 = Fsck({"--gc", "--grace", "1", "--no-writers", "--json"});
  EXPECT_EQ(gc2.code, 0) << gc2.All();
  EXPECT_EQ(gc2.out.find("\"gc_records_deleted\":0"), std::string::npos) << gc2.out;
  ExpectFilesIntact();
}

// An entry that names a file without a back-pointer in it (damage: the file's nlink and
// back-pointers say one name, two entries name it) is a link an unlink of the other name would
// not count: a check reports it. Its re-read of the names (a link or move during the walk)
// counted only those with a back-pointer, which FixInode sees, and called it clean.
TEST_F(FsckTest, ANameWithoutABackPointerIsStillReported) {
  StartCluster();
  WriteFiles();
  auto d = fs_->Resolve("/d");
  auto small = fs_->Resolve("/d/small");
  ASSERT_TRUE(d.ok() && small.ok());
  MetaRecord extra;
  extra.body = DirEntry{*small, FileType::kRegular};
  auto r = client_->Change(DirEntryKey(*d, "extra"), [&](const std::optional<std::string>&) {
    return Decision::Write(extra.Encode());
  });
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  CliResult check = Fsck({"--recount-quiet", "1"});
  EXPECT_EQ(check.code, 4) << check.All();
  EXPECT_NE(check.out.find("file has 2 names; nlink says 1"), std::string::npos) << check.out;
}

TEST_F(FsckTest, WrongLinkCountsAreRecounted) {
  StartCluster();
  WriteFiles();
  auto d = fs_->Resolve("/d");
  auto big = fs_->Resolve("/d/e/big");
  ASSERT_TRUE(d.ok() && big.ok());
  EditInode(*d, [](Inode& in) {
    in.entry_count += 5;
    in.nlink += 3;
  });
  EditInode(*big, [](Inode& in) { in.nlink = 3; });
  // /d changed moments ago (WriteFiles): a create or unlink in it may be between its two
  // rounds, so --repair waits until it has been quiet for --recount-quiet (default 62 s) and
  // says so, then recounts it (README, "fsck recounts only a quiet directory").
  auto start = std::chrono::steady_clock::now();
  ExpectRepairCycle({"--recount-quiet", "2"},
                    {"wrong_link_count", "/d: directory has", "/d/e/big", "nlink says 3"});
  EXPECT_GE(std::chrono::steady_clock::now() - start, std::chrono::seconds(2));
  auto din = fs_->GetAttr(*d);
  ASSERT_TRUE(din.ok());
  EXPECT_EQ(din->entry_count, 3u);  // small, two, e
  EXPECT_EQ(din->nlink, 3u);        // 2 + e
  auto bin = fs_->GetAttr(*big);
  ASSERT_TRUE(bin.ok());
  EXPECT_EQ(bin->nlink, 1u);
}

// An entry whose inode died (a crash between an unlink's rounds can leave this, as can a lost
// inode record): --repair removes the entry and, once the directory has been quiet for
// --recount-quiet, lowers its count, so rmdir works again.
TEST_F(FsckTest, DanglingEntryIsRemovedAndItsDirectoryRecounted) {
  StartCluster();
  WriteFiles();
  auto d = fs_->Resolve("/d");
  auto small = fs_->Resolve("/d/small");
  ASSERT_TRUE(d.ok() && small.ok());
  EditInode(*small, [](Inode& in) {
    in.state = InodeState::kDying;
    in.nlink = 0;
  });
  files_.erase("/d/small");
  ExpectRepairCycle({"--recount-quiet", "1"}, {"dangling_entry", "/d/small"});
  EXPECT_FALSE(fs_->Resolve("/d/small").ok());
  auto din = fs_->GetAttr(*d);
  ASSERT_TRUE(din.ok());
  EXPECT_EQ(din->entry_count, 2u);  // two, e
}

TEST_F(FsckTest, GcDeletesOnlyOldUnreferencedChunks) {
  StartCluster();
  WriteFiles();
  auto old_id = client_->PutChunk("unreferenced and old");
  ASSERT_TRUE(old_id.ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  auto fresh_id = client_->PutChunk("unreferenced but fresh");
  ASSERT_TRUE(fresh_id.ok());
  std::set<ChunkId> referenced = AllChunks();
  size_t old_copies = Holders(*old_id).size();
  ASSERT_GT(old_copies, 0u);
  // A grace shorter than mounts refresh their chunks for needs --no-writers.
  CliResult refused = Fsck({"--gc", "--grace", "1"});
  EXPECT_EQ(refused.code, 8) << refused.All();
  EXPECT_NE(refused.out.find("pass --no-writers if no mount is writing"), std::string::npos)
      << refused.out;
  EXPECT_EQ(Holders(*old_id).size(), old_copies);
  CliResult r = Fsck({"--gc", "--grace", "1", "--no-writers"});
  EXPECT_EQ(r.code, 0) << r.All();
  EXPECT_NE(r.out.find("gc deleted " + std::to_string(old_copies) + " chunks"), std::string::npos)
      << r.out;
  EXPECT_TRUE(Holders(*old_id).empty());
  EXPECT_FALSE(Holders(*fresh_id).empty());
  for (const auto& id : referenced) EXPECT_EQ(Holders(id).size(), 3u) << id.ToHex();
  ExpectFilesIntact();

  // A delete that fails (here: an old "chunk" on b that is a directory, so unlink(2) fails with
  // EISDIR) ends the run with exit 8 naming it; the rest is still collected. Before, failures
  // were ignored and the run exited 0.
  ChunkId stuck = ChunkId::Of(std::string("not deletable"));
  std::string hex = stuck.ToHex();
  std::string prefix =
      cluster_->data_dir(1) + "/chunks/" + hex.substr(0, 2) + "/" + hex.substr(2, 2);
  ASSERT_EQ(std::system(("mkdir -p '" + prefix + "/" + hex + "' && touch -d '2 days ago' '" +
                         prefix + "/" + hex + "'")
                            .c_str()),
            0);
  CliResult failed = Fsck({"--gc", "--grace", "60", "--no-writers"});
  EXPECT_EQ(failed.code, 8) << failed.All();
  EXPECT_NE(failed.out.find("deleting chunk " + hex + " on b"), std::string::npos) << failed.out;
  EXPECT_NE(failed.out.find("1 deletes failed"), std::string::npos) << failed.out;
  ASSERT_EQ(std::system(("rmdir '" + prefix + "/" + hex + "'").c_str()), 0);
  for (const auto& id : referenced) EXPECT_EQ(Holders(id).size(), 3u) << id.ToHex();

  // GC runs only when every node answers.
  cluster_->Kill(0);
  CliResult down = Fsck({"--gc", "--grace", "0", "--no-writers"});
  EXPECT_EQ(down.code, 8) << down.All();
  EXPECT_NE(down.out.find("every node"), std::string::npos) << down.out;
  EXPECT_FALSE(Holders(*fresh_id).empty());
}

// Unlinking leaves a tombstone entry and a dying inode; past the grace period --gc removes
// both (on every replica) and the chunks only the dead inode referenced. A younger unlink keeps
// its records and chunks, and the name can be created again afterwards.
TEST_F(FsckTest, GcRemovesOldTombstonesDeadInodesAndTheirChunks) {
  StartCluster();
  WriteFiles();
  std::string gone_data = testing::RandomBytes(77, kMiB + 99);
  auto gone = fs_->WriteFile("/d/gone", gone_data);
  ASSERT_TRUE(gone.ok()) << gone.status().ToString();
  auto d = fs_->Resolve("/d");
  ASSERT_TRUE(d.ok());
  std::vector<ChunkId> gone_chunks;
  for (const auto& s : gone->slots) gone_chunks.push_back(s.id);
  ASSERT_EQ(gone_chunks.size(), 2u);
  ASSERT_TRUE(fs_->Unlink("/d/gone").ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  // Unlinked just now: too young for a grace of 1 s.
  std::string young_data = testing::RandomBytes(78, 1000);
  auto young = fs_->WriteFile("/d/young", young_data);
  ASSERT_TRUE(young.ok());
  ASSERT_TRUE(fs_->Unlink("/d/young").ok());

  auto row_count = [&](const std::string& key) {
    int n = 0;
    for (int i = 0; i < cluster_->nodes(); ++i) {
      auto r = client_->RunSync<Result<ReadAcceptedReply>>(
          [&] { return client_->rpc().ReadAccepted(cluster_->node_id(i), key); });
      EXPECT_TRUE(r.ok()) << r.status().ToString();
      n += r.ok() && r->value.has_value();
    }
    return n;
  };
  const std::string gone_entry = DirEntryKey(*d, "gone"), gone_inode = InodeKey(gone->ino);
  EXPECT_EQ(row_count(gone_entry), 3);
  EXPECT_EQ(row_count(gone_inode), 3);

  CliResult check = Fsck({});  // tombstones and dead inodes are no damage
  EXPECT_EQ(check.code, 0) << check.All();
  CliResult r = Fsck({"--gc", "--grace", "1", "--no-writers"});
  EXPECT_EQ(r.code, 0) << r.All();
  EXPECT_NE(r.out.find("(1 tombstones, 1 dead inodes)"), std::string::npos) << r.out;
  EXPECT_EQ(row_count(gone_entry), 0);
  EXPECT_EQ(row_count(gone_inode), 0);
  for (const auto& id : gone_chunks) EXPECT_TRUE(Holders(id).empty()) << id.ToHex();
  EXPECT_EQ(row_count(DirEntryKey(*d, "young")), 3);
  EXPECT_EQ(row_count(InodeKey(young->ino)), 3);
  EXPECT_FALSE(Holders(young->slots.at(0).id).empty());
  for (const auto& id : AllChunks()) EXPECT_EQ(Holders(id).size(), 3u) << id.ToHex();
  ExpectFilesIntact();

  // The removed name is created again (its key's ballot floor was raised by the delete).
  Write("/d/gone", "born again\n");
  ExpectFilesIntact();
  CliResult again = Fsck({});
  EXPECT_EQ(again.code, 0) << again.All();
}

// File locks (F/ records, README "File locks") are no damage to fsck. --gc deletes a lock
// table whose locks all lapsed before the grace period (a mount that died holding them), and
// keeps one a live mount holds; the file can be locked again after the delete.
TEST_F(FsckTest, GcRemovesLockTablesWhoseLocksAllLapsed) {
  StartCluster();
  WriteFiles();
  auto lapsed_file = fs_->Resolve("/d/small");
  auto held_file = fs_->Resolve("/d/two");
  ASSERT_TRUE(lapsed_file.ok() && held_file.ok());
  // A client whose locks last 2 s (it never renews them), and one whose last 60 s.
  ClusterClientOptions short_lease = testing::ShortDeadlines();
  short_lease.ns.lock_lease_ns = 2'000'000'000;
  ClusterClient gone(cluster_->config(), short_lease);
  auto lock = [](ClusterClient& c, uint64_t ino, uint64_t holder) {
    LockRequest r;
    r.holder = holder;
    r.owner = 1;
    r.type = LockType::kWrite;
    return c.RunSync<Result<bool>>([&] { return c.ns().SetLock(ino, r); });
  };
  ASSERT_TRUE(lock(gone, *lapsed_file, 11).ok());
  ClusterClientOptions long_lease = testing::ShortDeadlines();
  long_lease.ns.lock_lease_ns = 60'000'000'000;
  ClusterClient live(cluster_->config(), long_lease);
  ASSERT_TRUE(lock(live, *held_file, 12).ok());
  // The other holder is refused while the lock counts.
  auto refused = lock(live, *lapsed_file, 12);
  EXPECT_EQ(refused.status().code(), StatusCode::kWouldBlock) << refused.status().ToString();

  auto rows = [&](const std::string& key) {
    int n = 0;
    for (int i = 0; i < cluster_->nodes(); ++i) {
      auto r = client_->RunSync<Result<ReadAcceptedReply>>(
          [&] { return client_->rpc().ReadAccepted(cluster_->node_id(i), key); });
      n += r.ok() && r->value.has_value();
    }
    return n;
  };
  EXPECT_EQ(rows(FileLocksKey(*lapsed_file)), 3);
  EXPECT_EQ(rows(FileLocksKey(*held_file)), 3);
  CliResult check = Fsck({});
  EXPECT_EQ(check.code, 0) << check.All();
  // Lapsed: 2 s lease + 1 s skew bound; then the 1 s grace.
  std::this_thread::sleep_for(std::chrono::milliseconds(4300));
  CliResult gc = Fsck({"--gc", "--grace", "1", "--no-writers", "--json"});
  EXPECT_EQ(gc.code, 0) << gc.All();
  EXPECT_NE(gc.out.find("\"gc_lock_tables_deleted\":1"), std::string::npos) << gc.out;
  EXPECT_EQ(rows(FileLocksKey(*lapsed_file)), 0);
  EXPECT_EQ(rows(FileLocksKey(*held_file)), 3);
  // Locked again after the delete (the key's floor rose), and still exclusive.
  auto again = lock(live, *lapsed_file, 12);
  EXPECT_TRUE(again.ok()) << again.status().ToString();
  auto blocked = lock(gone, *lapsed_file, 11);
  EXPECT_EQ(blocked.status().code(), StatusCode::kWouldBlock) << blocked.status().ToString();
  CliResult last = Fsck({});
  EXPECT_EQ(last.code, 0) << last.All();
  ExpectFilesIntact();
}

// A large file's layout pages are chunks its inode names. fsck reads every page and counts the
// page and each chunk it names as referenced, so --gc keeps them. Once no replica holds a
// page, fsck reports it lost, and --gc refuses to run, because the chunks it named are unknown.
TEST_F(FsckTest, LayoutPagesAndTheChunksTheyNameAreReferenced) {
  StartCluster();
  WriteFiles();
  auto f = fs_->Create("/paged");
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  auto data = client_->PutChunk(testing::RandomBytes(5, 1000));
  ASSERT_TRUE(data.ok());
  std::vector<Slot> slots(3);
  slots[2] = Slot{*data, 1000};
  auto page = client_->PutChunk(EncodeLayoutPage(f->ino, 4, f->chunk_size, slots));
  ASSERT_TRUE(page.ok());
  LayoutUpdate u;
  u.pages = {{4, ChunkId(), 0, *page, 1000}};
  u.written_end = (4 * kSlotsPerPage + 2) * f->chunk_size + 1000;
  auto conflict = std::make_shared<LayoutConflict>();
  auto published = client_->RunSync<Result<Inode>>(
      [&] { return client_->ns().PublishLayout(f->ino, u, conflict); });
  ASSERT_TRUE(published.ok()) << published.status().ToString();
  auto old_id = client_->PutChunk("unreferenced and old");
  ASSERT_TRUE(old_id.ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));

  CliResult r = Fsck({"--gc", "--grace", "1", "--no-writers"});
  EXPECT_EQ(r.code, 0) << r.All();
  EXPECT_TRUE(Holders(*old_id).empty());
  EXPECT_EQ(Holders(*page).size(), 3u);
  EXPECT_EQ(Holders(*data).size(), 3u);
  ExpectFilesIntact();

  for (int i = 0; i < cluster_->nodes(); ++i) {
    ASSERT_EQ(::unlink(testing::ChunkPath(cluster_->data_dir(i), *page).c_str()), 0);
  }
  auto old2 = client_->PutChunk("unreferenced, old, kept while a page is lost");
  ASSERT_TRUE(old2.ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  CliResult lost = Fsck({"--gc", "--grace", "1", "--no-writers"});
  EXPECT_EQ(lost.code, 8) << lost.All();
  EXPECT_NE(lost.out.find("chunk_lost"), std::string::npos) << lost.out;
  EXPECT_NE(lost.out.find("/paged"), std::string::npos) << lost.out;
  EXPECT_NE(lost.out.find("layout page read, and some could not be"), std::string::npos)
      << lost.out;
  EXPECT_EQ(Holders(*data).size(), 3u);
  EXPECT_FALSE(Holders(*old2).empty());
}

TEST_F(FsckTest, RebalanceMovesDataToANewNodeWhileReadsContinue) {
  StartCluster();
  WriteFiles();
  for (int i = 0; i < 4; ++i) {
    Write("/more" + std::to_string(i), testing::RandomBytes(200 + i, kMiB / 2 + i));
  }
  client_.reset();
  fs_.reset();
  // Add node d: epoch raised on every node, the old list kept as `previous`.
  int d = cluster_->AddNode();
  std::string text = "epoch = 2\nreplicas = 3\nwrite_quorum = 2\nread_quorum = 2\n";
  for (int i = 0; i <= d; ++i) text += cluster_->NodeLine(i) + "\n";
  text += "previous a b c\n";
  cluster_->Reconfigure(text);
  ASSERT_TRUE(cluster_->config()->InTransition());

  ClusterClient joint(cluster_->config(), testing::ShortDeadlines());
  TestFs joint_fs(joint);
  ExpectFilesIntact(&joint_fs);
  // Without --rebalance, fsck reports what is still to move and changes nothing.
  CliResult pending = Fsck({});
  EXPECT_EQ(pending.code, 4) << pending.All();
  EXPECT_NE(pending.out.find("record_rebalance"), std::string::npos);
  EXPECT_NE(pending.out.find("missing on d"), std::string::npos);
  EXPECT_FALSE(testing::FileExists(cluster_->cluster_file() + ".next"));
  std::string next_path = RebalanceWhileReading(joint_fs);
  ASSERT_FALSE(next_path.empty());
  auto next = ClusterConfig::Load(next_path);
  ASSERT_TRUE(next.ok()) << next.status().ToString();
  EXPECT_EQ(next->epoch, 3u);
  EXPECT_FALSE(next->InTransition());
  EXPECT_EQ(next->nodes.size(), 4u);

  // Install the next epoch everywhere: every file reads back and fsck is clean; every chunk
  // sits on exactly its home nodes.
  cluster_->Reconfigure(testing::ReadWholeFile(next_path));
  client_ = std::make_unique<ClusterClient>(cluster_->config(), testing::ShortDeadlines());
  fs_ = std::make_unique<TestFs>(*client_);
  ExpectFilesIntact();
  // The keys that moved to d keep a copy on the node they left: reported, then dropped.
  CliResult left = Fsck({});
  EXPECT_EQ(left.code, 4) << left.All();
  EXPECT_NE(left.out.find("record_away_from_home"), std::string::npos) << left.out;
  CliResult dropped = Fsck({"--repair"});
  EXPECT_EQ(dropped.code, 1) << dropped.All();
  CliResult after = Fsck({});
  EXPECT_EQ(after.code, 0) << after.All();
  int on_d = 0;
  for (const auto& id : AllChunks()) {
    EXPECT_EQ(Holders(id), Homes(id)) << id.ToHex();
    on_d += Holders(id).count(d);
  }
  EXPECT_GT(on_d, 0);
  auto stats = client_->Stats("d");
  ASSERT_TRUE(stats.ok());
  EXPECT_GT(stats->record_count, 0u);
}

// Removing node d from a, b, c, d: the joint file lists the staying nodes, keeps d reachable
// as `leaving`, and names the old membership in `previous`. The rebalance copies every key to
// its new replica set (reads keep working throughout), removes d's chunks, and writes the final
// file without d; once d is stopped, everything still reads back and fsck is clean.
TEST_F(FsckTest, RebalanceAfterRemovingANodeWhileReadsContinue) {
  TestClusterOptions o;
  o.nodes = 4;
  StartCluster(o);
  WriteFiles();
  for (int i = 0; i < 4; ++i) {
    Write("/more" + std::to_string(i), testing::RandomBytes(300 + i, kMiB / 2 + i));
  }
  std::set<ChunkId> on_d_before;
  for (const auto& id : AllChunks()) {
    if (Holders(id).count(3)) on_d_before.insert(id);
  }
  ASSERT_FALSE(on_d_before.empty());
  client_.reset();
  fs_.reset();
  std::string text = "epoch = 2\nreplicas = 3\nwrite_quorum = 2\nread_quorum = 2\n";
  for (int i = 0; i < 3; ++i) text += cluster_->NodeLine(i) + "\n";
  std::string d_line = cluster_->NodeLine(3);
  text += "leaving" + d_line.substr(4) + "\n";
  text += "previous a b c d\n";
  cluster_->Reconfigure(text);
  ASSERT_TRUE(cluster_->config()->InTransition());
  ASSERT_TRUE(cluster_->Running(3));

  // `status` shows d as leaving, outside every replica set.
  CliResult status =
      testing::RunCli({"status", "--cluster", cluster_->cluster_file()}, cluster_->dir());
  EXPECT_EQ(status.code, 0) << status.All();
  EXPECT_NE(status.out.find("leaving"), std::string::npos) << status.out;
  // With a and d down, the new membership (a, b, c) keeps its quorums, but the old one's set
  // {a, b, d} has only b: every quorum is joint during the change, so the keys placed there
  // cannot be changed. Before, status looked at the new membership alone: DEGRADED, exit 0.
  cluster_->Kill(0);
  cluster_->Kill(3);
  CliResult joint_down = testing::RunCli(
      {"status", "--cluster", cluster_->cluster_file(), "--timeout", "1"}, cluster_->dir());
  EXPECT_EQ(joint_down.code, 2) << joint_down.All();
  EXPECT_NE(joint_down.out.find("(previous membership)"), std::string::npos) << joint_down.out;
  ASSERT_NO_FATAL_FAILURE(cluster_->Start(0));
  ASSERT_NO_FATAL_FAILURE(cluster_->Start(3));

  ClusterClient joint(cluster_->config(), testing::ShortDeadlines());
  TestFs joint_fs(joint);
  ExpectFilesIntact(&joint_fs);
  CliResult pending = Fsck({});
  EXPECT_EQ(pending.code, 4) << pending.All();
  // d cannot list its chunks: the rebalance must not finish (no next file), since the chunks
  // it could not see may live only on d. Before, it moved nothing, wrote the next file and
  // said "rebalance done" beside the operational error.
  std::string chunks = cluster_->data_dir(3) + "/chunks", aside = chunks + "-aside";
  ASSERT_EQ(::rename(chunks.c_str(), aside.c_str()), 0);
  CliResult blind = Fsck({"--rebalance"});
  ASSERT_EQ(::rename(aside.c_str(), chunks.c_str()), 0);
  EXPECT_EQ(blind.code, 8) << blind.All();
  EXPECT_NE(blind.out.find("listing chunks on d"), std::string::npos) << blind.out;
  EXPECT_EQ(blind.out.find("rebalance done"), std::string::npos) << blind.out;
  EXPECT_FALSE(testing::FileExists(cluster_->cluster_file() + ".next"));
  std::string next_path = RebalanceWhileReading(joint_fs);
  ASSERT_FALSE(next_path.empty());
  auto next = ClusterConfig::Load(next_path);
  ASSERT_TRUE(next.ok()) << next.status().ToString();
  EXPECT_EQ(next->epoch, 3u);
  EXPECT_FALSE(next->InTransition());
  EXPECT_TRUE(next->leaving.empty());
  EXPECT_EQ(next->nodes.size(), 3u);
  EXPECT_EQ(next->FindNode("d"), nullptr);
  for (const auto& id : on_d_before) EXPECT_EQ(Holders(id).count(3), 0u) << id.ToHex();

  // Install the final file: d is not started again. With a, b, c only, every chunk is on all
  // three, every file reads back, and fsck is clean.
  cluster_->Reconfigure(testing::ReadWholeFile(next_path));
  EXPECT_FALSE(cluster_->Running(3));
  client_ = std::make_unique<ClusterClient>(cluster_->config(), testing::ShortDeadlines());
  fs_ = std::make_unique<TestFs>(*client_);
  ExpectFilesIntact();
  CliResult after = Fsck({});
  EXPECT_EQ(after.code, 0) << after.All();
  for (const auto& id : AllChunks()) EXPECT_EQ(Holders(id), (std::set<int>{0, 1, 2})) << id.ToHex();
}

// A check while a mount creates and removes files: the walk reads a directory's listing and its
// record at different moments, and an entry before its inode, so a create or unlink in flight
// showed as a wrong count or a dangling entry (exit 4 on a healthy cluster). Now a directory
// whose counts disagree is counted again under the recount's rules, reading only (after the
// quiet period if it changed lately; one that never stops changing is a note, not an error),
// and a dangling entry is read again before it is reported.
TEST_F(FsckTest, ACheckWhileMountsWorkReportsNothing) {
  StartCluster();
  WriteFiles();
  for (int d = 0; d < 4; ++d) {
    auto r = fs_->Create("/busy" + std::to_string(d), FileType::kDirectory);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
  }
  ExpectCleanChecksWhile(
      [](TestFs& fs, int i) {
        Status s =
            fs.WriteFile("/busy" + std::to_string(i % 4) + "/f" + std::to_string(i), "x").status();
        if (s.ok() && i >= 8) {
          s = fs.Unlink("/busy" + std::to_string((i - 8) % 4) + "/f" + std::to_string(i - 8));
        }
        return s;
      },
      {"--recount-quiet", "1"});
  // Quiet again: nothing to note, and the cluster is clean.
  CliResult after = Fsck({});
  EXPECT_EQ(after.code, 0) << after.All();
  EXPECT_EQ(after.out.find("NOTE"), std::string::npos) << after.out;
}

// A check while a mount renames files: the scan read a transaction's record and its
// participants at different moments, so a rename caught between its commit and the resolution
// of its intents was reported as `transaction_unresolved`. Now a stuck transaction is read
// again through a quorum (three looks) before it is reported.
TEST_F(FsckTest, ACheckWhileMountsRenameReportsNothing) {
  StartCluster();
  WriteFiles();
  std::vector<std::pair<int, std::string>> at;  // each file's directory and name
  for (int d = 0; d < 2; ++d) {
    auto r = fs_->Create("/busy" + std::to_string(d), FileType::kDirectory);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
  }
  for (int f = 0; f < 4; ++f) {
    at.emplace_back(f % 2, "a" + std::to_string(f));
    auto w = fs_->WriteFile("/busy" + std::to_string(f % 2) + "/" + at.back().second, "x");
    ASSERT_TRUE(w.ok()) << w.status().ToString();
  }
  auto rename = [&at](TestFs& fs, int i) {
    auto& [dir, name] = at[i % 4];
    int to = i % 8 < 4 ? 1 - dir : dir;  // across the two directories, then within one
    std::string next = "n" + std::to_string(i);
    Status s = fs.Rename("/busy" + std::to_string(dir) + "/" + name,
                         "/busy" + std::to_string(to) + "/" + next);
    if (s.ok()) {
      dir = to;
      name = next;
    }
    return s;
  };
  // The walk over /d only, which the renames do not touch: quick checks, many transactions.
  ExpectCleanChecksWhile(rename, {"--path", "/d"});
  // The whole tree: a file moved across the walk was seen twice (`wrong_link_count`, "file has
  // 2 names") or not at all (`orphan_inode`). Its names are now counted again as FixInode
  // counts them, and an inode the walk missed is an orphan only if no entry under a walked
  // directory names it now.
  ExpectCleanChecksWhile(rename, {"--recount-quiet", "1"});
}

// A check while a mount moves directories between two others: one moved from a directory the
// walk had listed into one it had not yet was reached twice and reported as
// `directory_cycle`; one moved the other way was not reached at all (`orphan_inode`, with the
// files in it). A directory reached again is a cycle only if the entry the walk first found it
// by still names it.
TEST_F(FsckTest, ACheckWhileMountsMoveDirectoriesReportsNothing) {
  StartCluster();
  WriteFiles();
  std::vector<std::pair<int, std::string>> at;  // each moving directory's parent and name
  for (int d = 0; d < 2; ++d) {
    auto r = fs_->Create("/busy" + std::to_string(d), FileType::kDirectory);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
  }
  {
    // Past their birth deadlines within 1.5 s: a check may call them orphans.
    ClusterClient quick(cluster_->config(), QuickBirthOptions());
    TestFs quick_fs(quick);
    for (int m = 0; m < 4; ++m) {
      at.emplace_back(m % 2, "m" + std::to_string(m));
      std::string path = "/busy" + std::to_string(m % 2) + "/" + at.back().second;
      auto r = quick_fs.Create(path, FileType::kDirectory);
      ASSERT_TRUE(r.ok()) << r.status().ToString();
      auto w = quick_fs.WriteFile(path + "/f", "x");
      ASSERT_TRUE(w.ok()) << w.status().ToString();
    }
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  ExpectCleanChecksWhile(
      [&at](TestFs& fs, int i) {
        auto& [dir, name] = at[i % 4];
        std::string next = "m" + std::to_string(i);
        Status s = fs.Rename("/busy" + std::to_string(dir) + "/" + name,
                             "/busy" + std::to_string(1 - dir) + "/" + next);
        if (s.ok()) {
          dir = 1 - dir;
          name = next;
        }
        return s;
      },
      {"--recount-quiet", "1"});
}

// A rebalance writes every key to its old and new replica sets; the nodes of the old set only
// keep their copies. Once the next epoch is installed, fsck reports them, --repair drops them,
// and --gc removes them along with the keys it collects. Before, they stayed for good: pinning
// the chunks they named, and bringing back a file deleted and collected between two changes
// when the second one made such a node a replica of its name again.
TEST_F(FsckTest, CopiesLeftOutsideTheirReplicaSetsAreDroppedAndNeverComeBack) {
  StartCluster();
  WriteFiles();
  // Names in many directories, so that some land on replica sets the new node joins.
  std::map<std::string, std::string> victims;  // path -> entry key
  for (int i = 0; i < 12; ++i) {
    std::string dir = "/v" + std::to_string(i);
    auto dino = fs_->Create(dir, FileType::kDirectory);
    ASSERT_TRUE(dino.ok()) << dino.status().ToString();
    auto in = fs_->WriteFile(dir + "/gone", testing::RandomBytes(900 + i, 1000 + i));
    ASSERT_TRUE(in.ok()) << in.status().ToString();
    victims[dir + "/gone"] = DirEntryKey(dino->ino, "gone");
  }
  const std::string head = "replicas = 3\nwrite_quorum = 2\nread_quorum = 2\n";
  int d = cluster_->AddNode();
  std::string add = "epoch = 2\n" + head;
  for (int i = 0; i <= d; ++i) add += cluster_->NodeLine(i) + "\n";
  ASSERT_NO_FATAL_FAILURE(ChangeMembership(add + "previous a b c\n"));
  ExpectFilesIntact();
  std::set<std::string> away = KeysAwayFromHome();
  ASSERT_FALSE(away.empty());
  int victims_away = 0;
  for (const auto& [path, key] : victims) victims_away += away.count(key);
  ASSERT_GT(victims_away, 0) << "no victim's name moved: the test shows nothing";

  // A check names them and changes nothing.
  CliResult left = Fsck({});
  EXPECT_EQ(left.code, 4) << left.All();
  EXPECT_NE(left.out.find("record_away_from_home"), std::string::npos) << left.out;
  EXPECT_EQ(KeysAwayFromHome(), away);

  // One away copy made newer than its replicas' (as a change installed without its rebalance
  // would leave it): no --repair or --gc may drop it; only --drop-stale-copies does.
  std::string newer;
  for (const auto& key : away) {
    bool victim = false;
    for (const auto& [path, k] : victims) victim |= k == key;
    if (!victim && key[0] == 'D') newer = key;
  }
  ASSERT_FALSE(newer.empty());
  int newer_on = -1;
  std::set<int> homes = RecordHomes(newer);
  for (int h : RecordHolders()[newer]) {
    if (!homes.count(h)) newer_on = h;
  }
  ASSERT_GE(newer_on, 0);
  {
    std::string node = cluster_->node_id(newer_on);
    auto cur = client_->RunSync<Result<ReadAcceptedReply>>(
        [&]() { return client_->rpc().ReadAccepted(node, newer); });
    ASSERT_TRUE(cur.ok() && cur->value) << cur.status().ToString();
    Ballot b{cur->accepted_ballot.counter + 1000, cur->accepted_ballot.proposer};
    auto acc = client_->RunSync<Result<AcceptReply>>(
        [&]() { return client_->rpc().Accept(node, newer, b, *cur->value); });
    ASSERT_TRUE(acc.ok() && acc->accepted) << acc.status().ToString();
  }

  // Delete the victims and collect them: every copy of their names goes, away ones included.
  for (const auto& [path, key] : victims) {
    Status s = fs_->Unlink(path);
    ASSERT_TRUE(s.ok()) << path << ": " << s.ToString();
  }
  CliResult gc = Fsck({"--gc", "--grace", "0", "--no-writers"});
  EXPECT_NE(gc.code, 8) << gc.All();
  auto held = RecordHolders();
  for (const auto& [path, key] : victims) {
    EXPECT_EQ(held.count(key), 0u) << path << " is still held on " << held[key].size() << " nodes";
  }

  // --repair drops the rest but the newer copy; --drop-stale-copies drops that one too. Then
  // every copy sits on its replica sets and the check is clean.
  CliResult repair = Fsck({"--repair"});
  EXPECT_EQ(repair.code, 4) << repair.All();
  EXPECT_NE(repair.out.find("1 kept: no replica holds the key as new"), std::string::npos)
      << repair.out;
  EXPECT_EQ(KeysAwayFromHome(), std::set<std::string>{newer});
  CliResult drop = Fsck({"--repair", "--drop-stale-copies"});
  EXPECT_EQ(drop.code, 1) << drop.All();
  EXPECT_TRUE(KeysAwayFromHome().empty());
  CliResult clean = Fsck({});
  EXPECT_EQ(clean.code, 0) << clean.All();

  // Remove d again: every key goes back to a, b and c. No victim comes back.
  std::string remove = "epoch = 4\n" + head;
  for (int i = 0; i < d; ++i) remove += cluster_->NodeLine(i) + "\n";
  remove += "leaving" + cluster_->NodeLine(d).substr(4) + "\nprevious a b c d\n";
  ASSERT_NO_FATAL_FAILURE(ChangeMembership(remove));
  for (const auto& [path, key] : victims) {
    auto ino = fs_->Resolve(path);
    EXPECT_FALSE(ino.ok()) << path << " came back as inode " << *ino;
  }
  ExpectFilesIntact();
  CliResult after = Fsck({});
  EXPECT_EQ(after.code, 0) << after.All();
}

// The grammar of a removal: a leaving node must belong to `previous`, and a `previous` id needs
// an address (as a node or as leaving).
TEST(FsckRebalance, RemovalGrammarIsChecked) {
  const std::string head =
      "epoch = 2\nreplicas = 3\nwrite_quorum = 2\nread_quorum = 2\n"
      "node a 127.0.0.1:7101\nnode b 127.0.0.1:7102\nnode c 127.0.0.1:7103\n";
  auto ok = ClusterConfig::Parse(head + "leaving d 127.0.0.1:7104\nprevious a b c d\n", "ok");
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();
  EXPECT_EQ(ok->NodeIds(), (std::vector<std::string>{"a", "b", "c"}));
  ASSERT_NE(ok->FindNode("d"), nullptr);
  EXPECT_EQ(ok->FindNode("d")->port, 7104);
  auto again = ClusterConfig::Parse(ok->Format(), "again");
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(again->leaving.size(), 1u);

  auto no_address = ClusterConfig::Parse(head + "previous a b c d\n", "no_address");
  ASSERT_FALSE(no_address.ok());
  EXPECT_NE(no_address.status().message().find("previous id 'd' has no address"), std::string::npos)
      << no_address.status().ToString();
  auto not_previous = ClusterConfig::Parse(head + "leaving d 127.0.0.1:7104\n", "not_previous");
  ASSERT_FALSE(not_previous.ok());
  EXPECT_NE(not_previous.status().message().find("not_previous:8: leaving node 'd' is not in"),
            std::string::npos)
      << not_previous.status().ToString();
  auto both = ClusterConfig::Parse(head + "leaving c 127.0.0.1:7105\nprevious a b c\n", "both");
  ASSERT_FALSE(both.ok());
  EXPECT_NE(both.status().message().find("duplicate node id 'c'"), std::string::npos)
      << both.status().ToString();
  auto same_addr =
      ClusterConfig::Parse(head + "leaving d 127.0.0.1:7103\nprevious a b c d\n", "same_addr");
  ASSERT_FALSE(same_addr.ok());
  EXPECT_NE(same_addr.status().message().find("duplicate address"), std::string::npos)
      << same_addr.status().ToString();
}

}  // namespace
}  // namespace quorumfs
