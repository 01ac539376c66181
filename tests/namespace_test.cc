// Namespace layer against a real 3-node cluster (DESIGN.md, "Metadata" and "Namespace
// operations"): every POSIX namespace operation with the errno ext4 would give, the repair
// core, and concurrent clients racing on one name and crossing renames.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "common/cluster_client.h"
#include "common/record_key.h"
#include "tests/test_cluster.h"

namespace quorumfs {

// Readable values in gtest failure messages.
void PrintTo(StatusCode code, std::ostream* os) { *os << StatusCodeName(code); }
void PrintTo(const BackPointer& bp, std::ostream* os) {
  *os << "(" << bp.parent << ", '" << bp.name << "')";
}
void PrintTo(const Slot& s, std::ostream* os) {
  *os << "{" << (s.hole() ? "hole" : s.id.ToHex().substr(0, 8)) << ", " << s.length << "}";
}

namespace {

using testing::TestCluster;

constexpr uint64_t kMiB = 1024 * 1024;

ClusterClientOptions Options() {
  ClusterClientOptions o;
  o.rpc.call_timeout = 1 * kj::SECONDS;
  o.rpc.connect_timeout = 500 * kj::MILLISECONDS;
  o.rpc.reconnect_max = 200 * kj::MILLISECONDS;
  o.proposer.round_timeout = 1 * kj::SECONDS;
  o.proposer.op_timeout = 5 * kj::SECONDS;
  o.ns.txn_timeout_ns = 2'000'000'000;
  o.ns.busy_timeout = 20 * kj::SECONDS;
  // The tests recount directories right after their own operations, with none in flight.
  o.ns.recount_quiet_ns = 150'000'000;
  return o;
}

int64_t WallNowNs() { return SystemWallClock().NowNs(); }

Status StatusOf(const Status& s) { return s; }
template <typename T>
Status StatusOf(const Result<T>& r) {
  return r.ok() ? Status::Ok() : r.status();
}

#define EXPECT_CODE(expr, code_name)                              \
  do {                                                            \
    Status _s = StatusOf(expr);                                   \
    EXPECT_EQ(_s.code(), StatusCode::code_name) << _s.ToString(); \
  } while (0)

#define ASSERT_OK(expr)                    \
  do {                                     \
    Status _s = StatusOf(expr);            \
    ASSERT_TRUE(_s.ok()) << _s.ToString(); \
  } while (0)

#define EXPECT_OK(expr)                    \
  do {                                     \
    Status _s = StatusOf(expr);            \
    EXPECT_TRUE(_s.ok()) << _s.ToString(); \
  } while (0)

#define ASSERT_OK_AND_ASSIGN(lhs, expr) \
  ASSERT_OK_AND_ASSIGN_IMPL(QFS_CONCAT(_result_, __LINE__), lhs, expr)
#define ASSERT_OK_AND_ASSIGN_IMPL(tmp, lhs, expr)   \
  auto tmp = (expr);                                \
  ASSERT_TRUE(tmp.ok()) << tmp.status().ToString(); \
  lhs = std::move(tmp).value()

// Blocking wrappers over one client's Namespace (each call runs on the client's loop thread).
class Fs {
 public:
  explicit Fs(ClusterClient& c) : c_(c) {}
  ClusterClient& client() { return c_; }

  Result<Inode> Root() {
    return c_.RunSync<Result<Inode>>([&] { return c_.ns().EnsureRoot(); });
  }
  Result<Inode> EnsureRoot(uint32_t mode, uint32_t uid, uint32_t gid) {
    return c_.RunSync<Result<Inode>>([&] { return c_.ns().EnsureRoot(mode, uid, gid); });
  }
  Result<Inode> Create(uint64_t parent, const std::string& name, const CreateRequest& req) {
    return c_.RunSync<Result<Inode>>([&] { return c_.ns().Create(parent, name, req); });
  }
  Result<Inode> File(uint64_t parent, const std::string& name, uint32_t mode = 0644) {
    CreateRequest req;
    req.type = FileType::kRegular;
    req.mode = mode;
    return Create(parent, name, req);
  }
  Result<Inode> Mkdir(uint64_t parent, const std::string& name, uint32_t mode = 0755) {
    CreateRequest req;
    req.type = FileType::kDirectory;
    req.mode = mode;
    return Create(parent, name, req);
  }
  Result<Inode> Lookup(uint64_t parent, const std::string& name, bool parent_is_dir = false) {
    return c_.RunSync<Result<Inode>>([&] { return c_.ns().Lookup(parent, name, parent_is_dir); });
  }
  std::vector<Result<Inode>> GetAttrMany(std::vector<uint64_t> inos) {
    return c_.RunSync<std::vector<Result<Inode>>>(
        [&] { return c_.ns().GetAttrMany(std::move(inos)); });
  }
  Result<Inode> GetAttr(uint64_t ino) {
    return c_.RunSync<Result<Inode>>([&] { return c_.ns().GetAttr(ino); });
  }
  Result<Inode> SetAttr(uint64_t ino, const SetAttrRequest& req) {
    return c_.RunSync<Result<Inode>>([&] { return c_.ns().SetAttr(ino, req); });
  }
  Result<std::string> ReadLink(uint64_t ino) {
    return c_.RunSync<Result<std::string>>([&] { return c_.ns().ReadLink(ino); });
  }
  Status Unlink(uint64_t parent, const std::string& name, bool held_open = false,
                uint64_t holder = 0) {
    return c_.RunSync<Status>([&] { return c_.ns().Unlink(parent, name, held_open, holder); });
  }
  Status Rmdir(uint64_t parent, const std::string& name) {
    return c_.RunSync<Status>([&] { return c_.ns().Rmdir(parent, name); });
  }
  Result<Inode> Link(uint64_t ino, uint64_t parent, const std::string& name) {
    return c_.RunSync<Result<Inode>>([&] { return c_.ns().Link(ino, parent, name); });
  }
  Status Rename(uint64_t p1, const std::string& n1, uint64_t p2, const std::string& n2,
                uint32_t flags = 0) {
    return c_.RunSync<Status>([&] { return c_.ns().Rename(p1, n1, p2, n2, flags); });
  }
  Result<DirListing> ReadDir(uint64_t dir, uint64_t offset, uint32_t limit) {
    return c_.RunSync<Result<DirListing>>([&] { return c_.ns().ReadDir(dir, offset, limit); });
  }
  Result<DirListing> ReadDirNames(uint64_t dir, uint64_t offset, uint32_t limit) {
    return c_.RunSync<Result<DirListing>>([&] { return c_.ns().ReadDirNames(dir, offset, limit); });
  }
  // Every entry, in pages of `page`.
  Result<std::vector<DirListing::Entry>> ReadAll(uint64_t dir, uint32_t page = 100) {
    std::vector<DirListing::Entry> all;
    uint64_t offset = 0;
    for (;;) {
      auto r = ReadDir(dir, offset, page);
      if (!r.ok()) return r.status();
      for (auto& e : r->entries) all.push_back(e);
      if (r->end || r->entries.empty()) return all;
      offset = r->entries.back().offset;
    }
  }
  Result<std::string> GetXattr(uint64_t ino, const std::string& name) {
    return c_.RunSync<Result<std::string>>([&] { return c_.ns().GetXattr(ino, name); });
  }
  Status SetXattr(uint64_t ino, const std::string& name, const std::string& value,
                  uint32_t flags = 0) {
    return c_.RunSync<Status>([&] { return c_.ns().SetXattr(ino, name, value, flags); });
  }
  Result<std::vector<std::string>> ListXattr(uint64_t ino) {
    return c_.RunSync<Result<std::vector<std::string>>>([&] { return c_.ns().ListXattr(ino); });
  }
  Status RemoveXattr(uint64_t ino, const std::string& name) {
    return c_.RunSync<Status>([&] { return c_.ns().RemoveXattr(ino, name); });
  }
  Result<Inode> Publish(uint64_t ino, const LayoutUpdate& u,
                        std::shared_ptr<LayoutConflict> conflict) {
    return c_.RunSync<Result<Inode>>([&] { return c_.ns().PublishLayout(ino, u, conflict); });
  }
  Status RenewLease(uint64_t ino, uint64_t holder) {
    return c_.RunSync<Status>([&] { return c_.ns().RenewLease(ino, holder); });
  }
  Status ReleaseLease(uint64_t ino, uint64_t holder) {
    return c_.RunSync<Status>([&] { return c_.ns().ReleaseLease(ino, holder); });
  }
  Result<int> ResolveTransactions() {
    return c_.RunSync<Result<int>>([&] { return c_.ns().ResolveTransactions(); });
  }
  // Waits out the recount's quiet period (Options: 150 ms) after the test's last change.
  Result<bool> FixDirectoryCounts(uint64_t dir) {
    for (int attempt = 0;; ++attempt) {
      auto r = c_.RunSync<Result<bool>>([&] { return c_.ns().FixDirectoryCounts(dir); });
      if (r.ok() || r.status().code() != StatusCode::kBusy || attempt >= 30) return r;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }
  Result<bool> FixInode(uint64_t ino) {
    return c_.RunSync<Result<bool>>([&] { return c_.ns().FixInode(ino); });
  }

  // The raw record under `key` (intent included), bypassing the namespace.
  Result<MetaRecord> Raw(const std::string& key) {
    auto r = c_.Read(key);
    if (!r.ok()) return r.status();
    return MetaRecord::DecodeOptional(r->payload);
  }
  // Edits the raw record under `key` with one CAS.
  Status EditRaw(const std::string& key, std::function<void(MetaRecord&)> edit) {
    auto r = c_.Change(key, [&edit](const std::optional<std::string>& cur) {
      auto rec = MetaRecord::DecodeOptional(cur);
      if (!rec.ok()) return Decision::Abort(rec.status());
      edit(*rec);
      return Decision::Write(rec->Encode());
    });
    return r.ok() ? Status::Ok() : r.status();
  }

 private:
  ClusterClient& c_;
};

Slot MakeSlot(const std::string& data, uint32_t length) { return Slot{ChunkId::Of(data), length}; }

// One cluster for the functional tests; each test works in a directory of its own.
class NamespaceTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { cluster_ = new TestCluster(); }
  static void TearDownTestSuite() {
    delete cluster_;
    cluster_ = nullptr;
  }

  void SetUp() override {
    client_ = std::make_unique<ClusterClient>(cluster_->config(), Options());
    fs_ = std::make_unique<Fs>(*client_);
    ASSERT_OK(fs_->Root());
    std::string name = ::testing::UnitTest::GetInstance()->current_test_info()->name();
    ASSERT_OK_AND_ASSIGN(Inode top, fs_->Mkdir(kRootIno, name));
    top_ = top.ino;
  }

  Inode Attr(uint64_t ino) {
    auto r = fs_->GetAttr(ino);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? *r : Inode{};
  }

  // Plants a transaction in `state` with `deadline` and its intent on `key` setting `value`, as
  // a client that stopped half way would leave them. Returns its id.
  uint64_t Plant(TxnState state, int64_t deadline, const std::string& key, RecordBody value) {
    uint64_t id = rng_() | 1;
    Txn t;
    t.id = id;
    t.state = state;
    t.created_ns = deadline - 2'000'000'000;
    t.deadline_ns = deadline;
    t.participants = {key};
    EXPECT_OK(fs_->EditRaw(TxnKey(id), [&t](MetaRecord& rec) { rec.body = t; }));
    EXPECT_OK(fs_->EditRaw(key, [&](MetaRecord& rec) { rec.intent = Intent{id, value}; }));
    return id;
  }

  static TestCluster* cluster_;
  std::mt19937_64 rng_{std::random_device{}()};
  std::unique_ptr<ClusterClient> client_;
  std::unique_ptr<Fs> fs_;
  uint64_t top_ = 0;  // this test's directory
};

TestCluster* NamespaceTest::cluster_ = nullptr;

TEST_F(NamespaceTest, EnsureRootIsIdempotent) {
  ASSERT_OK_AND_ASSIGN(Inode a, fs_->Root());
  ASSERT_OK_AND_ASSIGN(Inode b, fs_->EnsureRoot(0700, 5, 6));
  EXPECT_EQ(a.ino, kRootIno);
  EXPECT_EQ(b.ino, kRootIno);
  EXPECT_EQ(a.type, FileType::kDirectory);
  EXPECT_EQ(b.mode, 0755u);  // the second call changed nothing
  EXPECT_EQ(b.uid, 0u);
  EXPECT_EQ(b.btime_ns, a.btime_ns);
  EXPECT_EQ(b.state, InodeState::kLive);
  EXPECT_GE(b.nlink, 3u);  // this test's directory is a subdirectory
  ASSERT_OK_AND_ASSIGN(Inode dotdot, fs_->Lookup(kRootIno, ".."));
  EXPECT_EQ(dotdot.ino, kRootIno);
  // A second client sees the same root.
  ClusterClient other(cluster_->config(), Options());
  Fs fs2(other);
  ASSERT_OK_AND_ASSIGN(Inode c, fs2.Root());
  EXPECT_EQ(c.btime_ns, a.btime_ns);
}

TEST_F(NamespaceTest, CreateEveryTypeWithAttributes) {
  const int64_t before = WallNowNs();
  CreateRequest reg;
  reg.type = FileType::kRegular;
  reg.mode = S_IFREG | 04640;  // type bits are ignored
  reg.uid = 1000;
  reg.gid = 100;
  ASSERT_OK_AND_ASSIGN(Inode f, fs_->Create(top_, "file", reg));
  const int64_t after = WallNowNs();
  EXPECT_GE(f.ino, uint64_t{1} << kInoBlockBits);
  EXPECT_EQ(f.type, FileType::kRegular);
  EXPECT_EQ(f.mode, 04640u);
  EXPECT_EQ(f.uid, 1000u);
  EXPECT_EQ(f.gid, 100u);
  EXPECT_EQ(f.nlink, 1u);
  EXPECT_EQ(f.size, 0u);
  EXPECT_EQ(f.chunk_size, 1024u * 1024u);
  EXPECT_TRUE(f.slots.empty());
  EXPECT_EQ(f.state, InodeState::kLive);
  EXPECT_GE(f.ctime_ns, before);
  EXPECT_LE(f.ctime_ns, after);
  EXPECT_EQ(f.atime_ns, f.ctime_ns);
  EXPECT_EQ(f.mtime_ns, f.ctime_ns);
  EXPECT_EQ(f.btime_ns, f.ctime_ns);
  EXPECT_GT(f.birth_deadline_ns, after);
  ASSERT_EQ(f.parents.size(), 1u);
  EXPECT_EQ(f.parents[0], (BackPointer{top_, "file"}));
  // What a reader sees matches what the creator got.
  Inode f2 = Attr(f.ino);
  EXPECT_EQ(f2.mode, 04640u);
  EXPECT_EQ(f2.uid, 1000u);
  EXPECT_EQ(f2.ctime_ns, f.ctime_ns);

  CreateRequest dir;
  dir.type = FileType::kDirectory;
  dir.mode = 0750;
  dir.uid = 7;
  dir.gid = 8;
  ASSERT_OK_AND_ASSIGN(Inode d, fs_->Create(top_, "dir", dir));
  EXPECT_EQ(d.type, FileType::kDirectory);
  EXPECT_EQ(d.mode, 0750u);
  EXPECT_EQ(d.nlink, 2u);
  EXPECT_EQ(d.entry_count, 0u);
  EXPECT_EQ(d.uid, 7u);
  EXPECT_EQ(d.gid, 8u);

  CreateRequest sym;
  sym.type = FileType::kSymlink;
  sym.mode = 0600;
  sym.symlink_target = "../some/target";
  ASSERT_OK_AND_ASSIGN(Inode l, fs_->Create(top_, "link", sym));
  EXPECT_EQ(l.type, FileType::kSymlink);
  EXPECT_EQ(l.mode, 0777u);  // symlinks are always rwxrwxrwx
  EXPECT_EQ(l.size, sym.symlink_target.size());
  ASSERT_OK_AND_ASSIGN(std::string target, fs_->ReadLink(l.ino));
  EXPECT_EQ(target, "../some/target");

  CreateRequest fifo;
  fifo.type = FileType::kFifo;
  fifo.mode = 0620;
  ASSERT_OK_AND_ASSIGN(Inode p, fs_->Create(top_, "fifo", fifo));
  EXPECT_EQ(p.type, FileType::kFifo);
  EXPECT_EQ(p.mode, 0620u);
  EXPECT_EQ(p.chunk_size, 0u);

  CreateRequest chr;
  chr.type = FileType::kCharDevice;
  chr.mode = 0666;
  chr.rdev = makedev(1, 3);
  ASSERT_OK_AND_ASSIGN(Inode c, fs_->Create(top_, "null", chr));
  EXPECT_EQ(c.type, FileType::kCharDevice);
  EXPECT_EQ(c.rdev, makedev(1, 3));
  EXPECT_EQ(c.mode, 0666u);

  for (const auto& [name, ino, type] : std::vector<std::tuple<std::string, uint64_t, FileType>>{
           {"file", f.ino, FileType::kRegular},
           {"dir", d.ino, FileType::kDirectory},
           {"link", l.ino, FileType::kSymlink},
           {"fifo", p.ino, FileType::kFifo},
           {"null", c.ino, FileType::kCharDevice}}) {
    ASSERT_OK_AND_ASSIGN(Inode got, fs_->Lookup(top_, name));
    EXPECT_EQ(got.ino, ino) << name;
    EXPECT_EQ(got.type, type) << name;
  }
  Inode parent = Attr(top_);
  EXPECT_EQ(parent.entry_count, 5u);
  EXPECT_EQ(parent.nlink, 3u);

  // In a setgid directory new entries take its group, and new directories its setgid bit.
  CreateRequest sgid_dir = dir;
  sgid_dir.mode = 02775;
  sgid_dir.gid = 500;
  ASSERT_OK_AND_ASSIGN(Inode sg, fs_->Create(d.ino, "sgid", sgid_dir));
  EXPECT_EQ(sg.mode, 02775u);
  reg.gid = 100;
  ASSERT_OK_AND_ASSIGN(Inode sgf, fs_->Create(sg.ino, "f", reg));
  EXPECT_EQ(sgf.gid, 500u);
  dir.mode = 0755;
  ASSERT_OK_AND_ASSIGN(Inode sgd, fs_->Create(sg.ino, "d", dir));
  EXPECT_EQ(sgd.gid, 500u);
  EXPECT_EQ(sgd.mode, 02755u);
  ASSERT_OK_AND_ASSIGN(auto listing, fs_->ReadAll(top_));
  EXPECT_EQ(listing.size(), 5u);
}

TEST_F(NamespaceTest, CreateErrors) {
  ASSERT_OK_AND_ASSIGN(Inode f, fs_->File(top_, "f"));
  EXPECT_CODE(fs_->File(top_, "f"), kAlreadyExists);
  EXPECT_CODE(fs_->Mkdir(top_, "f"), kAlreadyExists);
  EXPECT_CODE(fs_->File(999'999'999, "x"), kNotFound);
  EXPECT_CODE(fs_->File(f.ino, "x"), kNotDirectory);
  EXPECT_CODE(fs_->Mkdir(f.ino, "x"), kNotDirectory);
  EXPECT_CODE(fs_->File(top_, std::string(256, 'n')), kNameTooLong);
  ASSERT_OK_AND_ASSIGN(Inode longest, fs_->File(top_, std::string(255, 'n')));
  ASSERT_OK_AND_ASSIGN(Inode found, fs_->Lookup(top_, std::string(255, 'n')));
  EXPECT_EQ(found.ino, longest.ino);
  EXPECT_CODE(fs_->Lookup(top_, std::string(256, 'n')), kNameTooLong);
  EXPECT_CODE(fs_->File(top_, "a/b"), kInvalidArgument);
  EXPECT_CODE(fs_->File(top_, "/"), kInvalidArgument);
  EXPECT_CODE(fs_->File(top_, std::string("a\0b", 3)), kInvalidArgument);
  EXPECT_CODE(fs_->File(top_, "."), kInvalidArgument);
  EXPECT_CODE(fs_->Mkdir(top_, ".."), kInvalidArgument);
  EXPECT_CODE(fs_->File(top_, ""), kNotFound);
  CreateRequest none;
  none.type = FileType::kNone;
  EXPECT_CODE(fs_->Create(top_, "none", none), kInvalidArgument);
  // Failed creates leave no trace in the parent.
  Inode parent = Attr(top_);
  EXPECT_EQ(parent.entry_count, 2u);
  EXPECT_EQ(parent.nlink, 2u);
  ASSERT_OK_AND_ASSIGN(auto listing, fs_->ReadAll(top_));
  EXPECT_EQ(listing.size(), 2u);
}

TEST_F(NamespaceTest, DirectoryLinkCountsEntryCountsAndTimes) {
  ASSERT_OK_AND_ASSIGN(Inode d, fs_->Mkdir(top_, "d"));
  ASSERT_OK_AND_ASSIGN(Inode e, fs_->Mkdir(top_, "e"));
  EXPECT_EQ(d.nlink, 2u);
  EXPECT_EQ(Attr(top_).nlink, 4u);
  EXPECT_EQ(Attr(top_).entry_count, 2u);

  Inode t0 = Attr(d.ino);
  ASSERT_OK(fs_->File(d.ino, "file"));
  Inode t1 = Attr(d.ino);
  EXPECT_EQ(t1.nlink, 2u);  // a file adds no link
  EXPECT_EQ(t1.entry_count, 1u);
  EXPECT_GT(t1.mtime_ns, t0.mtime_ns);
  EXPECT_GT(t1.ctime_ns, t0.ctime_ns);

  ASSERT_OK(fs_->Mkdir(d.ino, "s1"));
  ASSERT_OK(fs_->Mkdir(d.ino, "s2"));
  ASSERT_OK(fs_->Mkdir(d.ino, "s3"));
  Inode t2 = Attr(d.ino);
  EXPECT_EQ(t2.nlink, 5u);
  EXPECT_EQ(t2.entry_count, 4u);
  EXPECT_GT(t2.mtime_ns, t1.mtime_ns);

  ASSERT_OK(fs_->Rmdir(d.ino, "s1"));
  Inode t3 = Attr(d.ino);
  EXPECT_EQ(t3.nlink, 4u);
  EXPECT_EQ(t3.entry_count, 3u);
  EXPECT_GT(t3.mtime_ns, t2.mtime_ns);
  EXPECT_GT(t3.ctime_ns, t2.ctime_ns);

  // A directory moved to another parent moves its ".." link.
  Inode e0 = Attr(e.ino);
  ASSERT_OK(fs_->Rename(d.ino, "s2", e.ino, "s2"));
  Inode t4 = Attr(d.ino);
  Inode e1 = Attr(e.ino);
  EXPECT_EQ(t4.nlink, 3u);
  EXPECT_EQ(t4.entry_count, 2u);
  EXPECT_EQ(e1.nlink, 3u);
  EXPECT_EQ(e1.entry_count, 1u);
  EXPECT_GT(t4.mtime_ns, t3.mtime_ns);
  EXPECT_GT(e1.mtime_ns, e0.mtime_ns);
  EXPECT_GT(e1.ctime_ns, e0.ctime_ns);

  // Renaming a directory within its parent changes no link count, but the times.
  ASSERT_OK(fs_->Rename(d.ino, "s3", d.ino, "s3b"));
  Inode t5 = Attr(d.ino);
  EXPECT_EQ(t5.nlink, 3u);
  EXPECT_EQ(t5.entry_count, 2u);
  EXPECT_GT(t5.mtime_ns, t4.mtime_ns);

  ASSERT_OK(fs_->Unlink(d.ino, "file"));
  Inode t6 = Attr(d.ino);
  EXPECT_EQ(t6.nlink, 3u);
  EXPECT_EQ(t6.entry_count, 1u);
  EXPECT_GT(t6.mtime_ns, t5.mtime_ns);
  EXPECT_GT(t6.ctime_ns, t5.ctime_ns);
  EXPECT_EQ(Attr(top_).nlink, 4u);
}

TEST_F(NamespaceTest, LookupGetAttrReadLink) {
  ASSERT_OK_AND_ASSIGN(Inode d, fs_->Mkdir(top_, "d"));
  ASSERT_OK_AND_ASSIGN(Inode f, fs_->File(d.ino, "f"));
  ASSERT_OK_AND_ASSIGN(Inode dot, fs_->Lookup(d.ino, "."));
  EXPECT_EQ(dot.ino, d.ino);
  ASSERT_OK_AND_ASSIGN(Inode dotdot, fs_->Lookup(d.ino, ".."));
  EXPECT_EQ(dotdot.ino, top_);
  ASSERT_OK_AND_ASSIGN(Inode top_dotdot, fs_->Lookup(top_, ".."));
  EXPECT_EQ(top_dotdot.ino, kRootIno);
  ASSERT_OK_AND_ASSIGN(Inode got, fs_->Lookup(d.ino, "f"));
  EXPECT_EQ(got.ino, f.ino);
  EXPECT_CODE(fs_->Lookup(d.ino, "missing"), kNotFound);
  EXPECT_CODE(fs_->Lookup(f.ino, "x"), kNotDirectory);
  // A caller that knows the parent is a directory (the kernel) gets ENOENT without the read.
  EXPECT_CODE(fs_->Lookup(d.ino, "missing", /*parent_is_dir=*/true), kNotFound);
  ASSERT_OK_AND_ASSIGN(Inode again, fs_->Lookup(d.ino, "f", /*parent_is_dir=*/true));
  EXPECT_EQ(again.ino, f.ino);
  EXPECT_CODE(fs_->Lookup(d.ino, "a/b"), kInvalidArgument);
  // Batched getattr: each inode's own answer, in order, a missing one NotFound.
  auto many = fs_->GetAttrMany({f.ino, 987'654'321, d.ino, f.ino});
  ASSERT_EQ(many.size(), 4u);
  ASSERT_TRUE(many[0].ok() && many[2].ok() && many[3].ok());
  EXPECT_EQ(many[0]->ino, f.ino);
  EXPECT_EQ(many[1].status().code(), StatusCode::kNotFound);
  EXPECT_EQ(many[2]->ino, d.ino);
  EXPECT_TRUE(many[2]->is_dir());
  EXPECT_EQ(many[3]->ino, f.ino);
  EXPECT_CODE(fs_->GetAttr(987'654'321), kNotFound);
  ASSERT_OK_AND_ASSIGN(Inode attr, fs_->GetAttr(f.ino));
  EXPECT_EQ(attr.ino, f.ino);
  EXPECT_EQ(attr.mode, 0644u);
  EXPECT_CODE(fs_->ReadLink(f.ino), kInvalidArgument);
  EXPECT_CODE(fs_->ReadLink(d.ino), kInvalidArgument);
  EXPECT_CODE(fs_->ReadLink(987'654'321), kNotFound);
  CreateRequest sym;
  sym.type = FileType::kSymlink;
  sym.symlink_target = std::string(kMaxSymlinkSize, 't');
  ASSERT_OK_AND_ASSIGN(Inode l, fs_->Create(d.ino, "l", sym));
  ASSERT_OK_AND_ASSIGN(std::string target, fs_->ReadLink(l.ino));
  EXPECT_EQ(target, sym.symlink_target);
  sym.symlink_target += "t";
  EXPECT_CODE(fs_->Create(d.ino, "l2", sym), kNameTooLong);
  sym.symlink_target.clear();
  EXPECT_CODE(fs_->Create(d.ino, "l3", sym), kNotFound);  // symlink(2) with "" is ENOENT
  EXPECT_CODE(fs_->Lookup(d.ino, "l3"), kNotFound);
}

TEST_F(NamespaceTest, SetAttr) {
  ASSERT_OK_AND_ASSIGN(Inode f, fs_->File(top_, "f", 0644));
  // chmod
  SetAttrRequest chmod;
  chmod.mode = 0600;
  ASSERT_OK_AND_ASSIGN(Inode a, fs_->SetAttr(f.ino, chmod));
  EXPECT_EQ(a.mode, 0600u);
  EXPECT_GT(a.ctime_ns, f.ctime_ns);
  EXPECT_EQ(a.mtime_ns, f.mtime_ns);
  EXPECT_EQ(Attr(f.ino).mode, 0600u);

  // chown clears setuid, and setgid when group-execute is set, on files...
  chmod.mode = 06755;
  ASSERT_OK(fs_->SetAttr(f.ino, chmod));
  SetAttrRequest chown;
  chown.uid = 1000;
  chown.gid = 1000;
  ASSERT_OK_AND_ASSIGN(Inode b, fs_->SetAttr(f.ino, chown));
  EXPECT_EQ(b.mode, 0755u);
  EXPECT_EQ(b.uid, 1000u);
  EXPECT_EQ(b.gid, 1000u);
  EXPECT_GT(b.ctime_ns, a.ctime_ns);
  // ...keeps setgid without group-execute (mandatory-locking marker)...
  chmod.mode = 06745;
  ASSERT_OK(fs_->SetAttr(f.ino, chmod));
  chown.uid = 2000;
  chown.gid.reset();
  ASSERT_OK_AND_ASSIGN(Inode c, fs_->SetAttr(f.ino, chown));
  EXPECT_EQ(c.mode, 02745u);
  EXPECT_EQ(c.uid, 2000u);
  EXPECT_EQ(c.gid, 1000u);
  // ...and clears nothing on directories.
  ASSERT_OK_AND_ASSIGN(Inode d, fs_->Mkdir(top_, "d", 06755));
  chown.uid = 3000;
  ASSERT_OK_AND_ASSIGN(Inode dc, fs_->SetAttr(d.ino, chown));
  EXPECT_EQ(dc.mode, 06755u);
  EXPECT_EQ(dc.uid, 3000u);

  // truncate: down trims the layout, up only raises the size.
  auto conflict = std::make_shared<LayoutConflict>();
  LayoutUpdate u;
  for (uint64_t i = 0; i < 3; ++i) {
    u.slots.push_back({i, Slot{}, MakeSlot("chunk" + std::to_string(i), kMiB)});
  }
  u.written_end = 3 * kMiB;
  ASSERT_OK_AND_ASSIGN(Inode laid, fs_->Publish(f.ino, u, conflict));
  EXPECT_EQ(laid.size, 3 * kMiB);
  ASSERT_EQ(laid.slots.size(), 3u);
  SetAttrRequest trunc;
  trunc.size = kMiB + kMiB / 2;
  ASSERT_OK_AND_ASSIGN(Inode t1, fs_->SetAttr(f.ino, trunc));
  EXPECT_EQ(t1.size, kMiB + kMiB / 2);
  ASSERT_EQ(t1.slots.size(), 2u);
  EXPECT_EQ(t1.slots[0], MakeSlot("chunk0", kMiB));
  EXPECT_EQ(t1.slots[1], MakeSlot("chunk1", kMiB / 2));
  EXPECT_GT(t1.mtime_ns, laid.mtime_ns);
  EXPECT_GT(t1.ctime_ns, laid.ctime_ns);
  trunc.size = 10 * kMiB;
  ASSERT_OK_AND_ASSIGN(Inode t2, fs_->SetAttr(f.ino, trunc));
  EXPECT_EQ(t2.size, 10 * kMiB);
  ASSERT_EQ(t2.slots.size(), 2u);
  EXPECT_EQ(t2.slots[1].length, kMiB / 2);  // the cut-off bytes stay cut off
  // Grow-only (fallocate): a size below the file's leaves it and its layout as they are.
  SetAttrRequest grow;
  grow.size = kMiB;
  grow.size_grow_only = true;
  ASSERT_OK_AND_ASSIGN(Inode g1, fs_->SetAttr(f.ino, grow));
  EXPECT_EQ(g1.size, 10 * kMiB);
  ASSERT_EQ(g1.slots.size(), 2u);
  EXPECT_EQ(g1.slots[1].length, kMiB / 2);
  grow.size = 11 * kMiB;
  ASSERT_OK_AND_ASSIGN(Inode g2, fs_->SetAttr(f.ino, grow));
  EXPECT_EQ(g2.size, 11 * kMiB);
  trunc.size = kMiB;
  ASSERT_OK_AND_ASSIGN(Inode t3, fs_->SetAttr(f.ino, trunc));
  ASSERT_EQ(t3.slots.size(), 1u);
  EXPECT_EQ(t3.slots[0], MakeSlot("chunk0", kMiB));
  trunc.size = 0;
  ASSERT_OK_AND_ASSIGN(Inode t4, fs_->SetAttr(f.ino, trunc));
  EXPECT_EQ(t4.size, 0u);
  EXPECT_TRUE(t4.slots.empty());
  EXPECT_EQ(Attr(f.ino).size, 0u);
  EXPECT_CODE(fs_->SetAttr(d.ino, trunc), kIsDirectory);
  CreateRequest fifo;
  fifo.type = FileType::kFifo;
  ASSERT_OK_AND_ASSIGN(Inode p, fs_->Create(top_, "p", fifo));
  EXPECT_CODE(fs_->SetAttr(p.ino, trunc), kInvalidArgument);
  EXPECT_CODE(fs_->SetAttr(999'999'999, chmod), kNotFound);

  // utimes: explicit values and "now"; ctime always moves to now.
  SetAttrRequest times;
  times.atime_ns = 1'000'000'000'123;
  times.mtime_ns = 2'000'000'000'456;
  int64_t before = WallNowNs();
  ASSERT_OK_AND_ASSIGN(Inode u1, fs_->SetAttr(f.ino, times));
  EXPECT_EQ(u1.atime_ns, 1'000'000'000'123);
  EXPECT_EQ(u1.mtime_ns, 2'000'000'000'456);
  EXPECT_GE(u1.ctime_ns, before);
  Inode u1r = Attr(f.ino);
  EXPECT_EQ(u1r.atime_ns, 1'000'000'000'123);
  EXPECT_EQ(u1r.mtime_ns, 2'000'000'000'456);
  times.atime_ns = SetAttrRequest::kNow;
  times.mtime_ns = SetAttrRequest::kNow;
  before = WallNowNs();
  ASSERT_OK_AND_ASSIGN(Inode u2, fs_->SetAttr(f.ino, times));
  int64_t after = WallNowNs();
  EXPECT_GE(u2.atime_ns, before);
  EXPECT_LE(u2.atime_ns, after);
  EXPECT_GE(u2.mtime_ns, before);
  EXPECT_LE(u2.mtime_ns, after);
  EXPECT_GT(u2.ctime_ns, u1.ctime_ns);
  // Only the mtime: the atime stays.
  SetAttrRequest only_m;
  only_m.mtime_ns = 5;
  ASSERT_OK_AND_ASSIGN(Inode u3, fs_->SetAttr(f.ino, only_m));
  EXPECT_EQ(u3.mtime_ns, 5);
  EXPECT_EQ(u3.atime_ns, u2.atime_ns);
  EXPECT_EQ(u3.mode, 02745u);
  EXPECT_EQ(u3.uid, 2000u);
}

TEST_F(NamespaceTest, Unlink) {
  ASSERT_OK_AND_ASSIGN(Inode f, fs_->File(top_, "f"));
  ASSERT_OK_AND_ASSIGN(Inode d, fs_->Mkdir(top_, "d"));
  Inode p0 = Attr(top_);
  EXPECT_EQ(p0.entry_count, 2u);
  ASSERT_OK(fs_->Unlink(top_, "f"));
  EXPECT_CODE(fs_->Lookup(top_, "f"), kNotFound);
  Inode dead = Attr(f.ino);
  EXPECT_EQ(dead.nlink, 0u);
  EXPECT_EQ(dead.state, InodeState::kDying);
  EXPECT_TRUE(dead.parents.empty());
  Inode p1 = Attr(top_);
  EXPECT_EQ(p1.entry_count, 1u);
  EXPECT_GT(p1.mtime_ns, p0.mtime_ns);
  EXPECT_CODE(fs_->Unlink(top_, "f"), kNotFound);
  EXPECT_CODE(fs_->Unlink(top_, "missing"), kNotFound);
  EXPECT_CODE(fs_->Unlink(top_, "d"), kIsDirectory);
  EXPECT_CODE(fs_->Unlink(top_, "."), kInvalidArgument);
  EXPECT_CODE(fs_->Unlink(999'999'999, "x"), kNotFound);
  EXPECT_EQ(Attr(d.ino).state, InodeState::kLive);
  // The name can be used again at once.
  ASSERT_OK_AND_ASSIGN(Inode again, fs_->File(top_, "f"));
  EXPECT_NE(again.ino, f.ino);

  // Two links: the unlink is a transaction and leaves the other name.
  ASSERT_OK_AND_ASSIGN(Inode g, fs_->File(top_, "g"));
  ASSERT_OK(fs_->Link(g.ino, d.ino, "g2"));
  EXPECT_EQ(Attr(g.ino).nlink, 2u);
  ASSERT_OK(fs_->Unlink(top_, "g"));
  Inode g1 = Attr(g.ino);
  EXPECT_EQ(g1.nlink, 1u);
  EXPECT_EQ(g1.state, InodeState::kLive);
  ASSERT_EQ(g1.parents.size(), 1u);
  EXPECT_EQ(g1.parents[0], (BackPointer{d.ino, "g2"}));
  EXPECT_CODE(fs_->Lookup(top_, "g"), kNotFound);
  ASSERT_OK_AND_ASSIGN(Inode g2, fs_->Lookup(d.ino, "g2"));
  EXPECT_EQ(g2.ino, g.ino);
  EXPECT_EQ(Attr(top_).entry_count, 2u);  // f, d
  EXPECT_EQ(Attr(d.ino).entry_count, 1u);
  ASSERT_OK(fs_->Unlink(d.ino, "g2"));
  EXPECT_EQ(Attr(g.ino).state, InodeState::kDying);
  EXPECT_EQ(Attr(d.ino).entry_count, 0u);

  // Held open: unlinked-open under the holder's lease until it lets go.
  ASSERT_OK_AND_ASSIGN(Inode h, fs_->File(top_, "h"));
  int64_t before = WallNowNs();
  ASSERT_OK(fs_->Unlink(top_, "h", /*held_open=*/true, /*holder=*/77));
  EXPECT_CODE(fs_->Lookup(top_, "h"), kNotFound);
  Inode open = Attr(h.ino);
  EXPECT_EQ(open.nlink, 0u);
  EXPECT_EQ(open.state, InodeState::kUnlinkedOpen);
  EXPECT_EQ(open.lease_holder, 77u);
  EXPECT_GT(open.lease_until_ns, before);
  ASSERT_OK(fs_->RenewLease(h.ino, 77));
  EXPECT_GE(Attr(h.ino).lease_until_ns, open.lease_until_ns);
  ASSERT_OK(fs_->ReleaseLease(h.ino, 78));  // not the holder: nothing happens
  EXPECT_EQ(Attr(h.ino).state, InodeState::kUnlinkedOpen);
  ASSERT_OK(fs_->ReleaseLease(h.ino, 77));
  EXPECT_EQ(Attr(h.ino).state, InodeState::kDying);
}

// A name created and removed again and again (a lock file, an editor's swap file): its entry
// record's version passes the window of change ids the proposer keeps, and the one-round
// create, refused by every replica's tombstone, must still be told apart from a write that was
// chosen and pushed out of that window (it was not: the record was born of another change).
TEST_F(NamespaceTest, OneNameCreatedAndRemovedManyTimes) {
  for (int i = 0; i < 40; ++i) {
    SCOPED_TRACE(i);
    ASSERT_OK_AND_ASSIGN(Inode f, fs_->File(top_, "lock"));
    ASSERT_OK(fs_->Unlink(top_, "lock"));
    ASSERT_OK_AND_ASSIGN(Inode d, fs_->Mkdir(top_, "dir"));
    ASSERT_OK(fs_->Rmdir(top_, "dir"));
  }
  EXPECT_EQ(Attr(top_).entry_count, 0u);
}

// An unlink reads the inode its client last saw the name naming beside the entry. When another
// client has since replaced the file (a rename over it) or given it a second link, the unlink
// must act on what the entry names now, with the right link count.
TEST_F(NamespaceTest, UnlinkAfterAnotherClientReplacedTheName) {
  ClusterClient other_client(cluster_->config(), Options());
  Fs other(other_client);
  ASSERT_OK_AND_ASSIGN(Inode old_file, fs_->File(top_, "x"));
  ASSERT_OK_AND_ASSIGN(Inode seen, fs_->Lookup(top_, "x"));
  ASSERT_EQ(seen.ino, old_file.ino);
  ASSERT_OK_AND_ASSIGN(Inode new_file, other.File(top_, "y"));
  ASSERT_OK(other.Rename(top_, "y", top_, "x"));
  ASSERT_OK(fs_->Unlink(top_, "x"));  // removes new_file, which the hint does not name
  EXPECT_CODE(other.Lookup(top_, "x"), kNotFound);
  for (uint64_t ino : {new_file.ino, old_file.ino}) {  // both unlinked (dying or gone)
    auto in = other.GetAttr(ino);
    if (in.ok()) {
      EXPECT_EQ(in->nlink, 0u) << ino;
    }
  }
  EXPECT_EQ(Attr(top_).entry_count, 0u);

  // The hinted inode gained a link meanwhile: the transaction path, the other name intact.
  ASSERT_OK_AND_ASSIGN(Inode f, fs_->File(top_, "a"));
  ASSERT_OK(other.Link(f.ino, top_, "b").status());
  ASSERT_OK(fs_->Unlink(top_, "a"));
  ASSERT_OK_AND_ASSIGN(Inode via_b, other.Lookup(top_, "b"));
  EXPECT_EQ(via_b.ino, f.ino);
  EXPECT_EQ(via_b.nlink, 1u);
  EXPECT_EQ(Attr(top_).entry_count, 1u);
}

// A lookup of a name this client saw reads the inode it named beside the entry (one round trip).
// What another client did meanwhile still shows: the hinted read is a read of the inode as it is
// now, and a name that now names another inode, or none, is answered as it is now.
TEST_F(NamespaceTest, LookupReadsTheHintedInodeBesideTheEntry) {
  auto hinted = [this]() {
    return fs_->client().RunSync<uint64_t>([&] { return fs_->client().ns().lookups_with_hint(); });
  };
  ClusterClient other_client(cluster_->config(), Options());
  Fs other(other_client);
  ASSERT_OK_AND_ASSIGN(Inode f, fs_->File(top_, "f", 0644));
  uint64_t h0 = hinted();
  ASSERT_OK_AND_ASSIGN(Inode seen, fs_->Lookup(top_, "f"));
  EXPECT_EQ(seen.ino, f.ino);
  EXPECT_EQ(hinted(), h0 + 1);
  SetAttrRequest chmod;
  chmod.mode = 0600;
  ASSERT_OK(other.SetAttr(f.ino, chmod).status());
  ASSERT_OK_AND_ASSIGN(seen, fs_->Lookup(top_, "f"));
  EXPECT_EQ(seen.mode, 0600u) << "another client's chmod";
  EXPECT_EQ(hinted(), h0 + 2);
  ASSERT_OK_AND_ASSIGN(Inode g, other.File(top_, "g"));
  ASSERT_OK(other.Rename(top_, "g", top_, "f"));
  ASSERT_OK_AND_ASSIGN(seen, fs_->Lookup(top_, "f"));
  EXPECT_EQ(seen.ino, g.ino) << "the name now names another inode";
  EXPECT_EQ(hinted(), h0 + 2);
  ASSERT_OK_AND_ASSIGN(seen, fs_->Lookup(top_, "f"));  // the hint follows the name
  EXPECT_EQ(seen.ino, g.ino);
  EXPECT_EQ(hinted(), h0 + 3);
  ASSERT_OK(other.Unlink(top_, "f"));
  EXPECT_CODE(fs_->Lookup(top_, "f"), kNotFound);
}

// What this client's own last change left in a directory's inode (the mount answers the
// kernel's GETATTR of a parent after a create or unlink from it): current after each of its
// own changes, dropped once a newer version is read or a rename attaches an intent, and never
// older than max_age.
TEST_F(NamespaceTest, RecentOwnDirectoryFollowsThisClientsChanges) {
  auto own = [this](uint64_t ino, kj::Duration max_age = 60 * kj::SECONDS) {
    return fs_->client().RunSync<std::optional<Inode>>(
        [&] { return fs_->client().ns().RecentOwnDirectory(ino, max_age); });
  };
  ASSERT_OK_AND_ASSIGN(Inode d, fs_->Mkdir(top_, "d"));
  ASSERT_OK_AND_ASSIGN(Inode f, fs_->File(d.ino, "f"));
  auto after_create = own(d.ino);
  ASSERT_TRUE(after_create.has_value()) << "the create's change of the parent";
  EXPECT_EQ(after_create->entry_count, 1u);
  EXPECT_EQ(after_create->mtime_ns, Attr(d.ino).mtime_ns);
  EXPECT_FALSE(own(d.ino, 0 * kj::SECONDS).has_value()) << "older than max_age";
  EXPECT_FALSE(own(f.ino).has_value()) << "files are not kept";
  ASSERT_OK(fs_->Unlink(d.ino, "f"));
  auto after_unlink = own(d.ino);
  ASSERT_TRUE(after_unlink.has_value());
  EXPECT_EQ(after_unlink->entry_count, 0u);
  EXPECT_GE(after_unlink->mtime_ns, after_create->mtime_ns);

  // Another client's change is not seen here (as the kernel's attribute cache would not see
  // it) until this client reads the record: then the newer version wins for good.
  ClusterClient other_client(cluster_->config(), Options());
  Fs other(other_client);
  SetAttrRequest chmod;
  chmod.mode = 0700;
  ASSERT_OK(other.SetAttr(d.ino, chmod).status());
  ASSERT_TRUE(own(d.ino).has_value());
  ASSERT_OK_AND_ASSIGN(Inode read, fs_->GetAttr(d.ino));
  EXPECT_EQ(read.mode & 07777, 0700u);
  EXPECT_FALSE(own(d.ino).has_value()) << "a newer version was read";
  ASSERT_OK_AND_ASSIGN(Inode g, fs_->File(d.ino, "g"));
  ASSERT_TRUE(own(d.ino).has_value());
  EXPECT_EQ(own(d.ino)->mode & 07777, 0700u) << "built on the version read";

  // A file moved out of the directory: the directory keeps out of the rename's transaction,
  // and the settling of its rename mark after the commit is a plain change, whose value is
  // kept (README, "Renames keep the directories out of their transactions").
  ASSERT_OK(fs_->Rename(d.ino, "g", top_, "g"));
  auto after_move = own(d.ino);
  ASSERT_TRUE(after_move.has_value()) << "the settling of the rename's mark";
  EXPECT_EQ(after_move->entry_count, 0u);
  EXPECT_TRUE(after_move->rename_marks.empty());
  EXPECT_EQ(after_move->mtime_ns, Attr(d.ino).mtime_ns);
  // A directory moved out of it goes through intents on both directories: nothing is kept
  // until the next plain change.
  ASSERT_OK(fs_->Mkdir(d.ino, "sub"));
  ASSERT_TRUE(own(d.ino).has_value());
  ASSERT_OK(fs_->Rename(d.ino, "sub", top_, "sub"));
  EXPECT_FALSE(own(d.ino).has_value()) << "the directory move's intent on the parent";
  ASSERT_OK_AND_ASSIGN(Inode after, fs_->GetAttr(d.ino));
  EXPECT_EQ(after.entry_count, 0u);
  ASSERT_OK_AND_ASSIGN(Inode h, fs_->File(d.ino, "h"));
  ASSERT_TRUE(own(d.ino).has_value());
  EXPECT_EQ(own(d.ino)->entry_count, 1u);
  (void)g;
  (void)h;
}

// A renamer that dies after its commit leaves rename marks on the directories whose counts it
// changes (the source's count high, the target's owed one); one that dies before it leaves its
// transaction pending. Whoever meets the marks settles them by the transaction's fate: rmdir
// (so an emptied source directory is removable at once, not after fsck), the recount of
// fsck's repair, and the resolution of transactions.
TEST_F(NamespaceTest, CrashedRenamesLeaveMarksThatRmdirAndRepairSettle) {
  ASSERT_OK_AND_ASSIGN(Inode s, fs_->Mkdir(top_, "s"));
  ASSERT_OK_AND_ASSIGN(Inode t, fs_->Mkdir(top_, "t"));
  ASSERT_OK_AND_ASSIGN(Inode a, fs_->File(s.ino, "a"));
  {
    ClusterClientOptions o = Options();
    o.ns.test_crash_txn_after_commit = true;
    ClusterClient crasher(cluster_->config(), o);
    Fs crash_fs(crasher);
    EXPECT_CODE(crash_fs.Rename(s.ino, "a", t.ino, "a"), kUnavailable);
  }
  ASSERT_OK_AND_ASSIGN(Inode s1, fs_->GetAttr(s.ino));
  ASSERT_OK_AND_ASSIGN(Inode t1, fs_->GetAttr(t.ino));
  ASSERT_EQ(s1.rename_marks.size(), 1u);
  EXPECT_EQ(s1.rename_marks[0].delta, -1);
  EXPECT_EQ(s1.entry_count, 1u) << "high until the mark is settled";
  ASSERT_EQ(t1.rename_marks.size(), 1u);
  EXPECT_EQ(t1.rename_marks[0].delta, 1);
  EXPECT_EQ(t1.entry_count, 1u) << "raised with the mark, before the commit";
  ASSERT_OK_AND_ASSIGN(Inode moved, fs_->Lookup(t.ino, "a"));
  EXPECT_EQ(moved.ino, a.ino);
  EXPECT_CODE(fs_->Lookup(s.ino, "a"), kNotFound);
  // rmdir settles the source's mark (committed: the count comes down) and removes it.
  ASSERT_OK(fs_->Rmdir(top_, "s"));
  // rmdir of the target settles its mark too, and then finds it holds the file.
  EXPECT_CODE(fs_->Rmdir(top_, "t"), kNotEmpty);
  ASSERT_OK_AND_ASSIGN(Inode t2, fs_->GetAttr(t.ino));
  EXPECT_TRUE(t2.rename_marks.empty());
  EXPECT_EQ(t2.entry_count, 1u);
  EXPECT_GE(t2.mtime_ns, t1.mtime_ns);

  // Died before its commit: the transaction is aborted once past its deadline, and the marks
  // go with no count change. rmdir of the target waits for that rather than fail.
  ASSERT_OK_AND_ASSIGN(Inode u, fs_->Mkdir(top_, "u"));
  ASSERT_OK_AND_ASSIGN(Inode v, fs_->Mkdir(top_, "v"));
  ASSERT_OK(fs_->File(u.ino, "b"));
  {
    ClusterClientOptions o = Options();
    o.ns.test_crash_txn_after_intents = true;
    o.ns.txn_timeout_ns = 300'000'000;
    ClusterClient crasher(cluster_->config(), o);
    Fs crash_fs(crasher);
    EXPECT_CODE(crash_fs.Rename(u.ino, "b", v.ino, "b"), kUnavailable);
  }
  ASSERT_OK_AND_ASSIGN(Inode v1, fs_->GetAttr(v.ino));
  ASSERT_EQ(v1.rename_marks.size(), 1u);
  ASSERT_OK(fs_->Rmdir(top_, "v"));
  ASSERT_OK_AND_ASSIGN(bool fixed, fs_->FixDirectoryCounts(u.ino));
  EXPECT_TRUE(fixed) << "the aborted rename's mark settled";
  ASSERT_OK_AND_ASSIGN(Inode u1, fs_->GetAttr(u.ino));
  EXPECT_TRUE(u1.rename_marks.empty());
  EXPECT_EQ(u1.entry_count, 1u);
  ASSERT_OK(fs_->Lookup(u.ino, "b"));

  // Died after its commit again; the resolution of transactions (fsck --repair) settles both.
  ASSERT_OK_AND_ASSIGN(Inode w, fs_->Mkdir(top_, "w"));
  {
    ClusterClientOptions o = Options();
    o.ns.test_crash_txn_after_commit = true;
    ClusterClient crasher(cluster_->config(), o);
    Fs crash_fs(crasher);
    EXPECT_CODE(crash_fs.Rename(u.ino, "b", w.ino, "c"), kUnavailable);
  }
  ASSERT_OK(fs_->ResolveTransactions());
  ASSERT_OK_AND_ASSIGN(Inode u2, fs_->GetAttr(u.ino));
  ASSERT_OK_AND_ASSIGN(Inode w2, fs_->GetAttr(w.ino));
  EXPECT_TRUE(u2.rename_marks.empty());
  EXPECT_TRUE(w2.rename_marks.empty());
  EXPECT_EQ(u2.entry_count, 0u);
  EXPECT_EQ(w2.entry_count, 1u);
  ASSERT_OK_AND_ASSIGN(bool clean_u, fs_->FixDirectoryCounts(u.ino));
  ASSERT_OK_AND_ASSIGN(bool clean_w, fs_->FixDirectoryCounts(w.ino));
  EXPECT_FALSE(clean_u);
  EXPECT_FALSE(clean_w);
  ASSERT_OK(fs_->Rmdir(top_, "u"));
}

// An unlink of a file this client created (and nobody changed since) reads nothing: the entry
// and the inode are what its last writes made them, and the one-round cache holds both. When
// another client changed either in between, the unlink must still act on the current state.
TEST_F(NamespaceTest, UnlinkOfAFileThisClientWroteLastReadsNothing) {
  auto reads = [this]() {
    return fs_->client().RunSync<uint64_t>([&] {
      const auto& c = fs_->client().proposer().counters();
      return c.fast_reads + c.slow_reads;
    });
  };
  auto without_reads = [this]() {
    return fs_->client().RunSync<uint64_t>(
        [&] { return fs_->client().ns().unlinks_without_reads(); });
  };
  ASSERT_OK_AND_ASSIGN(Inode f, fs_->File(top_, "mine"));
  uint64_t r0 = reads(), n0 = without_reads();
  ASSERT_OK(fs_->Unlink(top_, "mine"));
  EXPECT_EQ(reads(), r0);
  EXPECT_EQ(without_reads(), n0 + 1);
  EXPECT_CODE(fs_->Lookup(top_, "mine"), kNotFound);
  auto gone = fs_->GetAttr(f.ino);
  if (gone.ok()) {
    EXPECT_EQ(gone->nlink, 0u);
  }
  EXPECT_EQ(Attr(top_).entry_count, 0u);

  ClusterClient other_client(cluster_->config(), Options());
  Fs other(other_client);
  // Another client renamed a file over the name: the cached entry is stale, the tombstone's
  // check fails, and the retry reads and removes what the name names now.
  ASSERT_OK_AND_ASSIGN(Inode mine, fs_->File(top_, "x"));
  ASSERT_OK_AND_ASSIGN(Inode theirs, other.File(top_, "y"));
  ASSERT_OK(other.Rename(top_, "y", top_, "x"));
  ASSERT_OK(fs_->Unlink(top_, "x"));
  EXPECT_CODE(other.Lookup(top_, "x"), kNotFound);
  for (uint64_t ino : {mine.ino, theirs.ino}) {
    auto in = other.GetAttr(ino);
    if (in.ok()) {
      EXPECT_EQ(in->nlink, 0u) << ino;
    }
  }
  EXPECT_EQ(Attr(top_).entry_count, 0u);

  // Another client gave the file a second name: the cached link count (1) is stale; the other
  // name and the file stay, with one link.
  ASSERT_OK_AND_ASSIGN(Inode g, fs_->File(top_, "a"));
  ASSERT_OK(other.Link(g.ino, top_, "b").status());
  ASSERT_OK(fs_->Unlink(top_, "a"));
  EXPECT_CODE(other.Lookup(top_, "a"), kNotFound);
  ASSERT_OK_AND_ASSIGN(Inode via_b, other.Lookup(top_, "b"));
  EXPECT_EQ(via_b.ino, g.ino);
  EXPECT_EQ(via_b.nlink, 1u);
  EXPECT_EQ(via_b.state, InodeState::kLive);
  EXPECT_EQ(Attr(top_).entry_count, 1u);
  ASSERT_OK(other.Unlink(top_, "b"));
  EXPECT_EQ(Attr(top_).entry_count, 0u);
}

// A client's second create in a directory skips the reads of the parent and the entry, using
// the setgid bit and group it saw before; another client's chmod/chgrp of the directory in
// between must still decide the new inode's group, and an existing name must still be EEXIST
// with nothing left behind.
TEST_F(NamespaceTest, CreateAfterTheParentsGroupChanged) {
  ClusterClient other_client(cluster_->config(), Options());
  Fs other(other_client);
  ASSERT_OK_AND_ASSIGN(Inode d, fs_->Mkdir(top_, "d", 0755));
  ASSERT_OK_AND_ASSIGN(Inode f1, fs_->File(d.ino, "f1"));
  EXPECT_EQ(f1.gid, 0u);

  SetAttrRequest setgid;
  setgid.mode = 02775;
  setgid.gid = 4242;
  ASSERT_OK(other.SetAttr(d.ino, setgid));
  ASSERT_OK_AND_ASSIGN(Inode f2, fs_->File(d.ino, "f2"));
  EXPECT_EQ(f2.gid, 4242u);
  ASSERT_OK_AND_ASSIGN(Inode sub, fs_->Mkdir(d.ino, "sub"));
  EXPECT_EQ(sub.gid, 4242u);
  EXPECT_TRUE(sub.mode & S_ISGID);

  SetAttrRequest chgrp;
  chgrp.gid = 777;
  ASSERT_OK(other.SetAttr(d.ino, chgrp));
  ASSERT_OK_AND_ASSIGN(Inode f3, fs_->File(d.ino, "f3"));
  EXPECT_EQ(f3.gid, 777u);

  SetAttrRequest plain;
  plain.mode = 0755;
  ASSERT_OK(other.SetAttr(d.ino, plain));
  ASSERT_OK_AND_ASSIGN(Inode f4, fs_->File(d.ino, "f4"));
  EXPECT_EQ(f4.gid, 0u);
  ASSERT_OK_AND_ASSIGN(Inode f4_seen, other.Lookup(d.ino, "f4"));
  EXPECT_EQ(f4_seen.gid, 0u);

  // An existing name: EEXIST, the count unchanged, the inode it wrote dying.
  EXPECT_CODE(fs_->File(d.ino, "f4"), kAlreadyExists);
  EXPECT_CODE(fs_->Mkdir(d.ino, "sub"), kAlreadyExists);
  Inode after = Attr(d.ino);
  EXPECT_EQ(after.entry_count, 5u);
  EXPECT_EQ(after.nlink, 3u);
  ASSERT_OK_AND_ASSIGN(Inode still, fs_->Lookup(d.ino, "f4"));
  EXPECT_EQ(still.ino, f4.ino);

  // The directory removed by the other client: ENOENT, nothing created.
  ASSERT_OK_AND_ASSIGN(Inode gone, fs_->Mkdir(top_, "gone"));
  ASSERT_OK(fs_->File(gone.ino, "x"));
  ASSERT_OK(other.Unlink(gone.ino, "x"));
  ASSERT_OK(other.Rmdir(top_, "gone"));
  EXPECT_CODE(fs_->File(gone.ino, "y"), kNotFound);
}

TEST_F(NamespaceTest, Rmdir) {
  ASSERT_OK_AND_ASSIGN(Inode d, fs_->Mkdir(top_, "d"));
  ASSERT_OK_AND_ASSIGN(Inode full, fs_->Mkdir(top_, "full"));
  ASSERT_OK(fs_->File(full.ino, "inside"));
  ASSERT_OK(fs_->File(top_, "file"));
  EXPECT_EQ(Attr(top_).nlink, 4u);

  EXPECT_CODE(fs_->Rmdir(top_, "full"), kNotEmpty);
  // A failed rmdir leaves no mark: the directory stays usable.
  Inode f1 = Attr(full.ino);
  EXPECT_EQ(f1.state, InodeState::kLive);
  EXPECT_EQ(f1.nlink, 2u);
  EXPECT_OK(fs_->File(full.ino, "more"));
  EXPECT_EQ(Attr(top_).nlink, 4u);
  EXPECT_EQ(Attr(top_).entry_count, 3u);

  EXPECT_CODE(fs_->Rmdir(top_, "file"), kNotDirectory);
  EXPECT_CODE(fs_->Rmdir(top_, "."), kInvalidArgument);
  EXPECT_CODE(fs_->Rmdir(top_, "missing"), kNotFound);

  ASSERT_OK(fs_->Rmdir(top_, "d"));
  EXPECT_CODE(fs_->Lookup(top_, "d"), kNotFound);
  Inode gone = Attr(d.ino);
  EXPECT_EQ(gone.state, InodeState::kDying);
  EXPECT_EQ(gone.nlink, 0u);
  Inode p = Attr(top_);
  EXPECT_EQ(p.nlink, 3u);
  EXPECT_EQ(p.entry_count, 2u);
  EXPECT_CODE(fs_->Rmdir(top_, "d"), kNotFound);
  // Nothing can be added to a removed directory held by inode number.
  EXPECT_CODE(fs_->File(d.ino, "late"), kNotFound);
  EXPECT_CODE(fs_->Mkdir(d.ino, "late"), kNotFound);
  ASSERT_OK_AND_ASSIGN(Inode other, fs_->File(top_, "other"));
  EXPECT_CODE(fs_->Link(other.ino, d.ino, "late"), kNotFound);
  EXPECT_CODE(fs_->Rename(top_, "other", d.ino, "late"), kNotFound);
  EXPECT_OK(fs_->Lookup(top_, "other"));

  // Emptied again, it can go.
  ASSERT_OK(fs_->Unlink(full.ino, "inside"));
  ASSERT_OK(fs_->Unlink(full.ino, "more"));
  ASSERT_OK(fs_->Rmdir(top_, "full"));
  EXPECT_EQ(Attr(top_).nlink, 2u);
}

TEST_F(NamespaceTest, Link) {
  ASSERT_OK_AND_ASSIGN(Inode a, fs_->Mkdir(top_, "a"));
  ASSERT_OK_AND_ASSIGN(Inode b, fs_->Mkdir(top_, "b"));
  ASSERT_OK_AND_ASSIGN(Inode f, fs_->File(a.ino, "f"));
  Inode b0 = Attr(b.ino);
  ASSERT_OK_AND_ASSIGN(Inode l1, fs_->Link(f.ino, b.ino, "f2"));
  EXPECT_EQ(l1.nlink, 2u);
  EXPECT_GT(l1.ctime_ns, f.ctime_ns);
  ASSERT_OK_AND_ASSIGN(Inode l2, fs_->Link(f.ino, a.ino, "f3"));
  EXPECT_EQ(l2.nlink, 3u);
  std::set<std::pair<uint64_t, std::string>> parents;
  for (const auto& bp : Attr(f.ino).parents) parents.insert({bp.parent, bp.name});
  EXPECT_EQ(parents, (std::set<std::pair<uint64_t, std::string>>{
                         {a.ino, "f"}, {b.ino, "f2"}, {a.ino, "f3"}}));
  ASSERT_OK_AND_ASSIGN(Inode via, fs_->Lookup(b.ino, "f2"));
  EXPECT_EQ(via.ino, f.ino);
  Inode b1 = Attr(b.ino);
  EXPECT_EQ(b1.entry_count, 1u);
  EXPECT_EQ(b1.nlink, 2u);
  EXPECT_GT(b1.mtime_ns, b0.mtime_ns);
  EXPECT_EQ(Attr(a.ino).entry_count, 2u);

  EXPECT_CODE(fs_->Link(a.ino, b.ino, "dirlink"), kNotPermitted);
  EXPECT_CODE(fs_->Link(f.ino, b.ino, "f2"), kAlreadyExists);
  EXPECT_CODE(fs_->Link(f.ino, b.ino, "bad/name"), kInvalidArgument);
  EXPECT_CODE(fs_->Link(f.ino, f.ino, "x"), kNotDirectory);
  EXPECT_CODE(fs_->Link(f.ino, 999'999'999, "x"), kNotFound);
  EXPECT_CODE(fs_->Link(999'999'999, b.ino, "x"), kNotFound);
  EXPECT_EQ(Attr(f.ino).nlink, 3u);  // failed links changed nothing
  EXPECT_EQ(Attr(b.ino).entry_count, 1u);

  // A file whose last name is gone cannot get a new one.
  ASSERT_OK_AND_ASSIGN(Inode g, fs_->File(a.ino, "g"));
  ASSERT_OK(fs_->Unlink(a.ino, "g"));
  EXPECT_CODE(fs_->Link(g.ino, b.ino, "g"), kNotFound);
}

// Each link adds a back-pointer to the file's inode record, and a link's transaction carries
// the record twice (its value and the intent). Past the size an acceptor takes, a link answers
// EMLINK at once, and the file's other names still work. (Before, every replica refused the
// oversized accept and the link retried it for minutes before EIO.) The limit is lowered here
// so that a few links reach it.
TEST_F(NamespaceTest, LinksStopWithEmlinkBeforeTheInodeRecordOutgrowsItsIntent) {
  ClusterClientOptions o = Options();
  o.ns.max_linked_inode_bytes = 4096;
  ClusterClient small(cluster_->config(), o);
  Fs fs(small);
  ASSERT_OK_AND_ASSIGN(Inode f, fs.File(top_, "f"));
  int links = 0;
  Status last;
  auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < 100; ++i) {
    std::string name = std::to_string(i) + std::string(200, 'n');
    auto r = fs.Link(f.ino, top_, name);
    if (!r.ok()) {
      last = r.status();
      break;
    }
    ++links;
  }
  EXPECT_EQ(last.code(), StatusCode::kTooManyLinks) << last.ToString();
  EXPECT_GT(links, 5);
  EXPECT_LT(links, 30);
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), 20);
  EXPECT_EQ(Attr(f.ino).nlink, static_cast<uint32_t>(links + 1));
  ASSERT_OK(fs.Unlink(top_, "f"));
  EXPECT_EQ(Attr(f.ino).nlink, static_cast<uint32_t>(links));
}

// An entry whose inode record is missing (damage fsck repairs) fails rmdir and rename with
// ENOENT at once; it used to count as a conflict and be retried until busy_timeout (EBUSY).
TEST_F(NamespaceTest, AnEntryWhoseInodeIsMissingFailsAtOnce) {
  ASSERT_OK_AND_ASSIGN(Inode d, fs_->Mkdir(top_, "d"));
  ASSERT_OK_AND_ASSIGN(Inode f, fs_->File(top_, "f"));
  ASSERT_OK_AND_ASSIGN(Inode g, fs_->File(top_, "g"));
  for (uint64_t ino : {d.ino, f.ino}) {
    ASSERT_OK(fs_->EditRaw(InodeKey(ino), [](MetaRecord& rec) { rec.body = std::monostate{}; }));
  }
  auto start = std::chrono::steady_clock::now();
  EXPECT_CODE(fs_->Rmdir(top_, "d"), kNotFound);
  EXPECT_CODE(fs_->Rename(top_, "f", top_, "f2"), kNotFound);
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), 5);
  // A rename over a healthy file changes nothing then.
  EXPECT_CODE(fs_->Rename(top_, "f", top_, "g"), kNotFound);
  ASSERT_OK_AND_ASSIGN(Inode still, fs_->Lookup(top_, "g"));
  EXPECT_EQ(still.ino, g.ino);
}

// rmdir's emptiness scan reads the listed keys in batches: a directory that held many files
// (their tombstones stay until fsck --gc) costs a few round trips, not one per name.
TEST_F(NamespaceTest, RmdirReadsItsTombstonesInBatches) {
  ASSERT_OK_AND_ASSIGN(Inode d, fs_->Mkdir(top_, "d"));
  for (int i = 0; i < 300; ++i) {
    ASSERT_OK(fs_->File(d.ino, "f" + std::to_string(i)).status());
    ASSERT_OK(fs_->Unlink(d.ino, "f" + std::to_string(i)));
  }
  auto reads = [&] {
    return client_->RunSync<uint64_t>(
        [&] { return kj::Promise<uint64_t>(client_->proposer().counters().reads); });
  };
  uint64_t before = reads();
  ASSERT_OK(fs_->Rmdir(top_, "d"));
  EXPECT_LT(reads() - before, 30u);
}

TEST_F(NamespaceTest, RenameFiles) {
  ASSERT_OK_AND_ASSIGN(Inode a, fs_->Mkdir(top_, "a"));
  ASSERT_OK_AND_ASSIGN(Inode b, fs_->Mkdir(top_, "b"));
  ASSERT_OK_AND_ASSIGN(Inode f, fs_->File(a.ino, "f"));

  // Within a directory.
  Inode a0 = Attr(a.ino);
  ASSERT_OK(fs_->Rename(a.ino, "f", a.ino, "g"));
  EXPECT_CODE(fs_->Lookup(a.ino, "f"), kNotFound);
  ASSERT_OK_AND_ASSIGN(Inode g, fs_->Lookup(a.ino, "g"));
  EXPECT_EQ(g.ino, f.ino);
  ASSERT_EQ(g.parents.size(), 1u);
  EXPECT_EQ(g.parents[0], (BackPointer{a.ino, "g"}));
  EXPECT_GT(g.ctime_ns, f.ctime_ns);
  Inode a1 = Attr(a.ino);
  EXPECT_EQ(a1.entry_count, 1u);
  EXPECT_GT(a1.mtime_ns, a0.mtime_ns);

  // Across directories.
  ASSERT_OK(fs_->Rename(a.ino, "g", b.ino, "h"));
  EXPECT_CODE(fs_->Lookup(a.ino, "g"), kNotFound);
  ASSERT_OK_AND_ASSIGN(Inode h, fs_->Lookup(b.ino, "h"));
  EXPECT_EQ(h.ino, f.ino);
  EXPECT_EQ(h.parents, (std::vector<BackPointer>{{b.ino, "h"}}));
  EXPECT_EQ(Attr(a.ino).entry_count, 0u);
  EXPECT_EQ(Attr(b.ino).entry_count, 1u);

  // Over an existing file: the replaced inode loses its link.
  ASSERT_OK_AND_ASSIGN(Inode victim, fs_->File(a.ino, "victim"));
  ASSERT_OK(fs_->Rename(b.ino, "h", a.ino, "victim"));
  ASSERT_OK_AND_ASSIGN(Inode now, fs_->Lookup(a.ino, "victim"));
  EXPECT_EQ(now.ino, f.ino);
  Inode v = Attr(victim.ino);
  EXPECT_EQ(v.nlink, 0u);
  EXPECT_EQ(v.state, InodeState::kDying);
  EXPECT_TRUE(v.parents.empty());
  EXPECT_EQ(Attr(a.ino).entry_count, 1u);
  EXPECT_EQ(Attr(b.ino).entry_count, 0u);

  // Over a file with another link: that link survives.
  ASSERT_OK_AND_ASSIGN(Inode two, fs_->File(b.ino, "two"));
  ASSERT_OK(fs_->Link(two.ino, b.ino, "two-b"));
  ASSERT_OK(fs_->Rename(a.ino, "victim", b.ino, "two"));
  Inode t = Attr(two.ino);
  EXPECT_EQ(t.nlink, 1u);
  EXPECT_EQ(t.state, InodeState::kLive);
  EXPECT_EQ(t.parents, (std::vector<BackPointer>{{b.ino, "two-b"}}));
  EXPECT_EQ(Attr(b.ino).entry_count, 2u);
  EXPECT_EQ(Attr(a.ino).entry_count, 0u);

  // RENAME_NOREPLACE.
  EXPECT_CODE(fs_->Rename(b.ino, "two", b.ino, "two-b", kRenameNoReplace), kAlreadyExists);
  ASSERT_OK(fs_->Rename(b.ino, "two", a.ino, "fresh", kRenameNoReplace));
  EXPECT_EQ(Attr(f.ino).parents, (std::vector<BackPointer>{{a.ino, "fresh"}}));

  // To itself, and between two links of one inode: no-ops.
  Inode before = Attr(f.ino);
  ASSERT_OK(fs_->Rename(a.ino, "fresh", a.ino, "fresh"));
  Inode after = Attr(f.ino);
  EXPECT_EQ(after.ctime_ns, before.ctime_ns);
  EXPECT_EQ(after.parents, before.parents);
  ASSERT_OK(fs_->Link(f.ino, a.ino, "alias"));
  ASSERT_OK(fs_->Rename(a.ino, "fresh", a.ino, "alias"));
  EXPECT_OK(fs_->Lookup(a.ino, "fresh"));
  EXPECT_OK(fs_->Lookup(a.ino, "alias"));
  EXPECT_EQ(Attr(f.ino).nlink, 2u);

  // Errors.
  EXPECT_CODE(fs_->Rename(a.ino, "missing", b.ino, "x"), kNotFound);
  EXPECT_CODE(fs_->Rename(a.ino, "fresh", 999'999'999, "x"), kNotFound);
  EXPECT_CODE(fs_->Rename(a.ino, "fresh", f.ino, "x"), kNotDirectory);
  EXPECT_CODE(fs_->Rename(a.ino, "fresh", b.ino, "a/b"), kInvalidArgument);
  EXPECT_CODE(fs_->Rename(a.ino, "fresh", b.ino, std::string(256, 'x')), kNameTooLong);
  EXPECT_CODE(fs_->Rename(a.ino, "fresh", a.ino, "x", kRenameNoReplace | kRenameExchange),
              kInvalidArgument);
  EXPECT_OK(fs_->Lookup(a.ino, "fresh"));
}

TEST_F(NamespaceTest, RenameDirectories) {
  ASSERT_OK_AND_ASSIGN(Inode a, fs_->Mkdir(top_, "a"));
  ASSERT_OK_AND_ASSIGN(Inode b, fs_->Mkdir(top_, "b"));
  ASSERT_OK_AND_ASSIGN(Inode s, fs_->Mkdir(a.ino, "s"));
  ASSERT_OK_AND_ASSIGN(Inode deep, fs_->Mkdir(s.ino, "deep"));
  ASSERT_OK(fs_->File(s.ino, "file"));
  EXPECT_EQ(Attr(a.ino).nlink, 3u);
  EXPECT_EQ(Attr(b.ino).nlink, 2u);

  // Into itself or its own subdirectory.
  EXPECT_CODE(fs_->Rename(a.ino, "s", s.ino, "x"), kInvalidArgument);
  EXPECT_CODE(fs_->Rename(a.ino, "s", deep.ino, "x"), kInvalidArgument);
  EXPECT_CODE(fs_->Rename(top_, "a", deep.ino, "x"), kInvalidArgument);
  ASSERT_OK_AND_ASSIGN(Inode still, fs_->Lookup(a.ino, "s"));
  EXPECT_EQ(still.ino, s.ino);

  // Across parents: both parents' link counts and the moved directory's "..".
  ASSERT_OK(fs_->Rename(a.ino, "s", b.ino, "s2"));
  Inode a1 = Attr(a.ino), b1 = Attr(b.ino);
  EXPECT_EQ(a1.nlink, 2u);
  EXPECT_EQ(a1.entry_count, 0u);
  EXPECT_EQ(b1.nlink, 3u);
  EXPECT_EQ(b1.entry_count, 1u);
  ASSERT_OK_AND_ASSIGN(Inode dotdot, fs_->Lookup(s.ino, ".."));
  EXPECT_EQ(dotdot.ino, b.ino);
  EXPECT_EQ(Attr(s.ino).parents, (std::vector<BackPointer>{{b.ino, "s2"}}));
  EXPECT_EQ(Attr(s.ino).nlink, 3u);  // its own subdirectory still counts
  ASSERT_OK_AND_ASSIGN(Inode deep_up, fs_->Lookup(deep.ino, ".."));
  EXPECT_EQ(deep_up.ino, s.ino);

  // Over an empty directory (directory -> directory).
  ASSERT_OK_AND_ASSIGN(Inode empty, fs_->Mkdir(a.ino, "empty"));
  EXPECT_EQ(Attr(a.ino).nlink, 3u);
  ASSERT_OK(fs_->Rename(b.ino, "s2", a.ino, "empty"));
  ASSERT_OK_AND_ASSIGN(Inode moved, fs_->Lookup(a.ino, "empty"));
  EXPECT_EQ(moved.ino, s.ino);
  Inode e = Attr(empty.ino);
  EXPECT_EQ(e.state, InodeState::kDying);
  EXPECT_EQ(e.nlink, 0u);
  Inode a2 = Attr(a.ino), b2 = Attr(b.ino);
  EXPECT_EQ(a2.nlink, 3u);
  EXPECT_EQ(a2.entry_count, 1u);
  EXPECT_EQ(b2.nlink, 2u);
  EXPECT_EQ(b2.entry_count, 0u);
  ASSERT_OK_AND_ASSIGN(Inode dotdot2, fs_->Lookup(s.ino, ".."));
  EXPECT_EQ(dotdot2.ino, a.ino);

  // Over a non-empty directory; file over directory; directory over file.
  ASSERT_OK_AND_ASSIGN(Inode full, fs_->Mkdir(b.ino, "full"));
  ASSERT_OK(fs_->File(full.ino, "x"));
  ASSERT_OK(fs_->File(b.ino, "plain"));
  EXPECT_CODE(fs_->Rename(a.ino, "empty", b.ino, "full"), kNotEmpty);
  EXPECT_CODE(fs_->Rename(b.ino, "plain", b.ino, "full"), kIsDirectory);
  EXPECT_CODE(fs_->Rename(a.ino, "empty", b.ino, "plain"), kNotDirectory);
  EXPECT_EQ(Attr(full.ino).state, InodeState::kLive);
  ASSERT_OK_AND_ASSIGN(Inode s_again, fs_->Lookup(a.ino, "empty"));
  EXPECT_EQ(s_again.ino, s.ino);
  EXPECT_EQ(Attr(a.ino).nlink, 3u);
  EXPECT_EQ(Attr(b.ino).nlink, 3u);
  EXPECT_EQ(Attr(b.ino).entry_count, 2u);
  EXPECT_OK(fs_->File(full.ino, "y"));  // the failed renames left no dying mark
}

TEST_F(NamespaceTest, RenameExchange) {
  ASSERT_OK_AND_ASSIGN(Inode a, fs_->Mkdir(top_, "a"));
  ASSERT_OK_AND_ASSIGN(Inode b, fs_->Mkdir(top_, "b"));
  ASSERT_OK_AND_ASSIGN(Inode f, fs_->File(a.ino, "x"));
  ASSERT_OK_AND_ASSIGN(Inode d, fs_->Mkdir(b.ino, "y"));
  EXPECT_CODE(fs_->Rename(a.ino, "x", b.ino, "missing", kRenameExchange), kNotFound);
  ASSERT_OK(fs_->Rename(a.ino, "x", b.ino, "y", kRenameExchange));
  ASSERT_OK_AND_ASSIGN(Inode ax, fs_->Lookup(a.ino, "x"));
  ASSERT_OK_AND_ASSIGN(Inode by, fs_->Lookup(b.ino, "y"));
  EXPECT_EQ(ax.ino, d.ino);
  EXPECT_EQ(by.ino, f.ino);
  EXPECT_EQ(ax.parents, (std::vector<BackPointer>{{a.ino, "x"}}));
  EXPECT_EQ(by.parents, (std::vector<BackPointer>{{b.ino, "y"}}));
  ASSERT_OK_AND_ASSIGN(Inode dotdot, fs_->Lookup(d.ino, ".."));
  EXPECT_EQ(dotdot.ino, a.ino);
  Inode a1 = Attr(a.ino), b1 = Attr(b.ino);
  EXPECT_EQ(a1.nlink, 3u);
  EXPECT_EQ(b1.nlink, 2u);
  EXPECT_EQ(a1.entry_count, 1u);
  EXPECT_EQ(b1.entry_count, 1u);
  EXPECT_EQ(Attr(f.ino).nlink, 1u);
  EXPECT_EQ(Attr(d.ino).state, InodeState::kLive);

  // Within one directory, and back.
  ASSERT_OK(fs_->File(a.ino, "z"));
  ASSERT_OK(fs_->Rename(a.ino, "x", a.ino, "z", kRenameExchange));
  ASSERT_OK_AND_ASSIGN(Inode az, fs_->Lookup(a.ino, "z"));
  EXPECT_EQ(az.ino, d.ino);
  EXPECT_EQ(Attr(a.ino).nlink, 3u);
  EXPECT_EQ(Attr(a.ino).entry_count, 2u);
  // A directory exchanged into its own subtree.
  ASSERT_OK(fs_->Mkdir(d.ino, "inner"));
  EXPECT_CODE(fs_->Rename(top_, "a", d.ino, "inner", kRenameExchange), kInvalidArgument);
}

TEST_F(NamespaceTest, ReadDirPagesOfFifty) {
  const int kEntries = 300;
  std::set<std::string> expected;
  for (int i = 0; i < kEntries; ++i) {
    char name[32];
    std::snprintf(name, sizeof(name), "entry-%03d", i);
    ASSERT_OK(fs_->File(top_, name));
    expected.insert(name);
  }
  for (int i = 0; i < kEntries; i += 30) {
    char name[32];
    std::snprintf(name, sizeof(name), "entry-%03d", i);
    ASSERT_OK(fs_->Unlink(top_, name));
    expected.erase(name);
  }
  ASSERT_OK(fs_->Mkdir(top_, "subdir"));
  expected.insert("subdir");
  EXPECT_EQ(Attr(top_).entry_count, expected.size());

  std::map<std::string, int> seen;
  uint64_t offset = 0;
  uint64_t last = 0;
  int pages = 0;
  for (;;) {
    ASSERT_OK_AND_ASSIGN(DirListing page, fs_->ReadDir(top_, offset, 50));
    ASSERT_LE(page.entries.size(), 50u);
    ++pages;
    ASSERT_LT(pages, 20) << "readdir does not end";
    for (const auto& e : page.entries) {
      EXPECT_GT(e.offset, last) << e.name;
      last = e.offset;
      EXPECT_EQ(e.offset, (NameHash64(e.name) >> 1) + 3);  // as namespace.h documents
      ++seen[e.name];
      EXPECT_EQ(e.type, e.name == "subdir" ? FileType::kDirectory : FileType::kRegular);
    }
    if (page.end) break;
    ASSERT_FALSE(page.entries.empty());
    offset = page.entries.back().offset;
  }
  EXPECT_GE(pages, 6);
  EXPECT_EQ(seen.size(), expected.size());
  for (const auto& name : expected) EXPECT_EQ(seen[name], 1) << name;
  for (const auto& [name, n] : seen) EXPECT_TRUE(expected.count(name)) << "deleted " << name;
  // Spot-check that entries name the right inodes.
  ASSERT_OK_AND_ASSIGN(auto all, fs_->ReadAll(top_, 7));
  EXPECT_EQ(all.size(), expected.size());
  for (size_t i = 0; i < all.size(); i += 37) {
    ASSERT_OK_AND_ASSIGN(Inode in, fs_->Lookup(top_, all[i].name));
    EXPECT_EQ(in.ino, all[i].ino);
  }
  // Offsets 0, 1 and 2 all start from the beginning ("." and ".." are the caller's).
  for (uint64_t start : {0, 1, 2}) {
    ASSERT_OK_AND_ASSIGN(DirListing first, fs_->ReadDir(top_, start, 3));
    ASSERT_EQ(first.entries.size(), 3u);
    EXPECT_GT(first.entries[0].offset, 2u);
    ASSERT_OK_AND_ASSIGN(DirListing again, fs_->ReadDir(top_, 0, 3));
    EXPECT_EQ(first.entries[0].name, again.entries[0].name);
  }
  // From the last offset: nothing more.
  ASSERT_OK_AND_ASSIGN(DirListing tail, fs_->ReadDir(top_, last, 50));
  EXPECT_TRUE(tail.entries.empty());
  EXPECT_TRUE(tail.end);

  ASSERT_OK_AND_ASSIGN(Inode f, fs_->Lookup(top_, "entry-001"));
  EXPECT_CODE(fs_->ReadDir(f.ino, 0, 50), kNotDirectory);
  EXPECT_CODE(fs_->ReadDir(999'999'999, 0, 50), kNotFound);
  ASSERT_OK_AND_ASSIGN(Inode empty, fs_->Mkdir(top_, "empty"));
  ASSERT_OK_AND_ASSIGN(DirListing none, fs_->ReadDir(empty.ino, 0, 50));
  EXPECT_TRUE(none.entries.empty());
  EXPECT_TRUE(none.end);
}

// ReadDirNames: every live name, in pages, with the offsets ReadDir gives; removed names may
// still be there (their records are tombstones until GC); a missing directory has none.
TEST_F(NamespaceTest, ReadDirNamesCoversEveryEntry) {
  ASSERT_OK_AND_ASSIGN(Inode d, fs_->Mkdir(top_, "names"));
  std::set<std::string> live;
  for (int i = 0; i < 120; ++i) {
    std::string name = "n" + std::to_string(i);
    ASSERT_OK(fs_->File(d.ino, name));
    live.insert(name);
  }
  for (int i = 0; i < 120; i += 7) {
    std::string name = "n" + std::to_string(i);
    ASSERT_OK(fs_->Unlink(d.ino, name));
    live.erase(name);
  }
  ASSERT_OK(fs_->Rename(d.ino, "n1", d.ino, "moved"));
  live.erase("n1");
  live.insert("moved");
  std::map<std::string, uint64_t> names;
  uint64_t offset = 0;
  for (int pages = 0;; ++pages) {
    ASSERT_LT(pages, 40) << "the listing does not end";
    ASSERT_OK_AND_ASSIGN(DirListing page, fs_->ReadDirNames(d.ino, offset, 16));
    ASSERT_LE(page.entries.size(), 16u);
    for (const auto& e : page.entries) {
      EXPECT_GT(e.offset, offset) << e.name;
      EXPECT_EQ(e.offset, (NameHash64(e.name) >> 1) + 3) << e.name;
      EXPECT_TRUE(names.emplace(e.name, e.offset).second) << "twice: " << e.name;
      EXPECT_TRUE(e.name == "moved" || e.name[0] == 'n') << e.name;
    }
    if (page.end || page.entries.empty()) break;
    offset = page.entries.back().offset;
  }
  for (const auto& name : live) EXPECT_TRUE(names.count(name)) << "missing " << name;
  ASSERT_OK_AND_ASSIGN(auto entries, fs_->ReadAll(d.ino));
  for (const auto& e : entries) EXPECT_EQ(names[e.name], e.offset) << e.name;
  ASSERT_OK_AND_ASSIGN(DirListing none, fs_->ReadDirNames(999'999'999, 0, 16));
  EXPECT_TRUE(none.entries.empty());
  EXPECT_TRUE(none.end);
}

TEST_F(NamespaceTest, Xattrs) {
  ASSERT_OK_AND_ASSIGN(Inode f, fs_->File(top_, "f"));
  ASSERT_OK(fs_->SetXattr(f.ino, "user.a", "one"));
  ASSERT_OK_AND_ASSIGN(std::string v, fs_->GetXattr(f.ino, "user.a"));
  EXPECT_EQ(v, "one");
  EXPECT_GT(Attr(f.ino).ctime_ns, f.ctime_ns);
  EXPECT_CODE(fs_->SetXattr(f.ino, "user.a", "two", kXattrCreate), kAlreadyExists);
  EXPECT_CODE(fs_->SetXattr(f.ino, "user.b", "two", kXattrReplace), kNoData);
  ASSERT_OK(fs_->SetXattr(f.ino, "user.a", "two", kXattrReplace));
  ASSERT_OK(fs_->SetXattr(f.ino, "trusted.b", std::string("bin\0ary", 7), kXattrCreate));
  ASSERT_OK(fs_->SetXattr(f.ino, "user.empty", ""));
  ASSERT_OK_AND_ASSIGN(std::string v2, fs_->GetXattr(f.ino, "user.a"));
  EXPECT_EQ(v2, "two");
  ASSERT_OK_AND_ASSIGN(std::string v3, fs_->GetXattr(f.ino, "trusted.b"));
  EXPECT_EQ(v3, std::string("bin\0ary", 7));
  ASSERT_OK_AND_ASSIGN(std::string v4, fs_->GetXattr(f.ino, "user.empty"));
  EXPECT_EQ(v4, "");
  ASSERT_OK_AND_ASSIGN(auto names, fs_->ListXattr(f.ino));
  EXPECT_EQ(std::set<std::string>(names.begin(), names.end()),
            (std::set<std::string>{"user.a", "trusted.b", "user.empty"}));
  EXPECT_EQ(names.size(), 3u);
  ASSERT_OK(fs_->RemoveXattr(f.ino, "user.a"));
  EXPECT_CODE(fs_->GetXattr(f.ino, "user.a"), kNoData);
  EXPECT_CODE(fs_->RemoveXattr(f.ino, "user.a"), kNoData);
  EXPECT_CODE(fs_->GetXattr(f.ino, "user.never"), kNoData);
  ASSERT_OK_AND_ASSIGN(auto names2, fs_->ListXattr(f.ino));
  EXPECT_EQ(names2.size(), 2u);

  EXPECT_CODE(fs_->SetXattr(f.ino, "plain", "x"), kNotSupported);
  EXPECT_CODE(fs_->GetXattr(f.ino, "plain"), kNotSupported);
  EXPECT_CODE(fs_->RemoveXattr(f.ino, "plain"), kNotSupported);
  EXPECT_CODE(fs_->SetXattr(f.ino, "user.", "x"), kInvalidArgument);  // as ext4
  EXPECT_CODE(fs_->SetXattr(f.ino, "", "x"), kRange);
  EXPECT_CODE(fs_->SetXattr(f.ino, "user." + std::string(251, 'n'), "x"), kRange);
  ASSERT_OK(fs_->SetXattr(f.ino, "user." + std::string(250, 'n'), "x"));

  ASSERT_OK(fs_->SetXattr(f.ino, "user.big", std::string(kMaxXattrValueSize, 'v')));
  ASSERT_OK_AND_ASSIGN(std::string big, fs_->GetXattr(f.ino, "user.big"));
  EXPECT_EQ(big.size(), kMaxXattrValueSize);
  EXPECT_CODE(fs_->SetXattr(f.ino, "user.big2", std::string(kMaxXattrValueSize + 1, 'v')),
              kTooLarge);
  EXPECT_CODE(fs_->GetXattr(f.ino, "user.big2"), kNoData);

  // Directories carry xattrs too; a missing inode has none.
  ASSERT_OK(fs_->SetXattr(top_, "user.dir", "d"));
  ASSERT_OK_AND_ASSIGN(std::string dv, fs_->GetXattr(top_, "user.dir"));
  EXPECT_EQ(dv, "d");
  EXPECT_CODE(fs_->GetXattr(999'999'999, "user.a"), kNotFound);
  EXPECT_CODE(fs_->SetXattr(999'999'999, "user.a", "x"), kNotFound);
}

TEST_F(NamespaceTest, PublishLayoutMergesConcurrentWriters) {
  ASSERT_OK_AND_ASSIGN(Inode f, fs_->File(top_, "f"));
  const Slot a0 = MakeSlot("a0", kMiB), a2 = MakeSlot("a2", 100);
  const Slot b0 = MakeSlot("b0", kMiB), b1 = MakeSlot("b1", kMiB);
  const Slot merged0 = MakeSlot("a0+b0", kMiB);

  // Writer A publishes slots 0 and 2 from the empty layout.
  LayoutUpdate ua;
  ua.slots = {{0, Slot{}, a0}, {2, Slot{}, a2}};
  ua.written_end = 2 * kMiB + 100;
  auto ca = std::make_shared<LayoutConflict>();
  ASSERT_OK_AND_ASSIGN(Inode after_a, fs_->Publish(f.ino, ua, ca));
  EXPECT_EQ(after_a.size, 2 * kMiB + 100);
  EXPECT_EQ(after_a.slots, (std::vector<Slot>{a0, Slot{}, a2}));
  EXPECT_GT(after_a.mtime_ns, f.mtime_ns);
  EXPECT_TRUE(ca->current.empty());

  // Writer B, on another client, still believes slots 0 and 1 are holes.
  ClusterClient other(cluster_->config(), Options());
  Fs fs_b(other);
  LayoutUpdate ub;
  ub.slots = {{0, Slot{}, b0}, {1, Slot{}, b1}};
  ub.written_end = 2 * kMiB;
  auto cb = std::make_shared<LayoutConflict>();
  EXPECT_CODE(fs_b.Publish(f.ino, ub, cb), kConflict);
  ASSERT_EQ(cb->current.size(), 1u);  // only slot 0 changed underneath B
  EXPECT_EQ(cb->current[0].first, 0u);
  EXPECT_EQ(cb->current[0].second, a0);
  EXPECT_EQ(Attr(f.ino).slots, (std::vector<Slot>{a0, Slot{}, a2}));  // nothing applied

  // B rebuilds slot 0 from A's chunk plus its own bytes and publishes again.
  ub.slots = {{0, a0, merged0}, {1, Slot{}, b1}};
  ASSERT_OK_AND_ASSIGN(Inode after_b, fs_b.Publish(f.ino, ub, cb));
  EXPECT_TRUE(cb->current.empty());
  EXPECT_EQ(after_b.slots, (std::vector<Slot>{merged0, b1, a2}));
  EXPECT_EQ(after_b.size, 2 * kMiB + 100);  // max(current, B's end)
  Inode seen = Attr(f.ino);
  EXPECT_EQ(seen.slots, after_b.slots);
  EXPECT_EQ(seen.size, 2 * kMiB + 100);

  // A writer that truncated: its size wins, even below the current one.
  LayoutUpdate ut;
  ut.truncated_to = 0;
  ut.slots = {{0, merged0, MakeSlot("t0", 10)}};
  ut.written_end = 10;
  auto ct = std::make_shared<LayoutConflict>();
  ASSERT_OK_AND_ASSIGN(Inode after_t, fs_->Publish(f.ino, ut, ct));
  EXPECT_EQ(after_t.size, 10u);
  EXPECT_EQ(after_t.slots, (std::vector<Slot>{MakeSlot("t0", 10)}));
  // Truncated up (ftruncate beyond the data, then nothing written).
  LayoutUpdate uu;
  uu.truncated_to = 5 * kMiB;
  uu.written_end = 0;
  uu.touch_mtime = false;
  ASSERT_OK_AND_ASSIGN(Inode after_u, fs_->Publish(f.ino, uu, ct));
  EXPECT_EQ(after_u.size, 5 * kMiB);
  EXPECT_EQ(after_u.slots, (std::vector<Slot>{MakeSlot("t0", 10)}));
  EXPECT_EQ(after_u.mtime_ns, after_t.mtime_ns);
  // A writer that did not truncate never shrinks the file.
  LayoutUpdate us;
  us.slots = {{0, MakeSlot("t0", 10), MakeSlot("s0", 20)}};
  us.written_end = 20;
  ASSERT_OK_AND_ASSIGN(Inode after_s, fs_->Publish(f.ino, us, ct));
  EXPECT_EQ(after_s.size, 5 * kMiB);

  EXPECT_CODE(fs_->Publish(top_, us, ct), kInvalidArgument);
  EXPECT_CODE(fs_->Publish(999'999'999, us, ct), kNotFound);
}

// A publish that carries a setattr (tar, cp -p: write, then set the times of the open file)
// applies it in the same change, after the layout: the given times win over the write time,
// ctime is the change's, and chown's setuid rule holds. A size cannot ride along, and a refused
// publish applies neither.
TEST_F(NamespaceTest, PublishLayoutCarriesASetAttr) {
  ASSERT_OK_AND_ASSIGN(Inode f, fs_->File(top_, "f"));
  SetAttrRequest suid;
  suid.mode = 04755;
  ASSERT_OK_AND_ASSIGN(f, fs_->SetAttr(f.ino, suid));
  LayoutUpdate u;
  u.slots = {{0, Slot{}, MakeSlot("x", 100)}};
  u.written_end = 100;
  u.attrs.emplace();
  u.attrs->atime_ns = 1'000'000'123;
  u.attrs->mtime_ns = 2'000'000'456;
  u.attrs->uid = 7;
  auto c = std::make_shared<LayoutConflict>();
  ASSERT_OK_AND_ASSIGN(Inode after, fs_->Publish(f.ino, u, c));
  EXPECT_EQ(after.size, 100u);
  EXPECT_EQ(after.slots, (std::vector<Slot>{MakeSlot("x", 100)}));
  EXPECT_EQ(after.atime_ns, 1'000'000'123);
  EXPECT_EQ(after.mtime_ns, 2'000'000'456);
  EXPECT_GT(after.ctime_ns, f.ctime_ns);
  EXPECT_EQ(after.uid, 7u);
  EXPECT_EQ(after.mode & 07777, 0755u);  // chown cleared setuid
  Inode seen = Attr(f.ino);
  EXPECT_EQ(seen.mtime_ns, 2'000'000'456);
  EXPECT_EQ(seen.uid, 7u);

  // An omitted time stays; kNow is the change's time, as is ctime.
  LayoutUpdate later;
  later.slots = {{0, MakeSlot("x", 100), MakeSlot("z", 200)}};
  later.written_end = 200;
  later.attrs.emplace();
  later.attrs->mtime_ns = SetAttrRequest::kNow;
  ASSERT_OK_AND_ASSIGN(Inode now_set, fs_->Publish(f.ino, later, c));
  EXPECT_EQ(now_set.atime_ns, 1'000'000'123);
  EXPECT_EQ(now_set.mtime_ns, now_set.ctime_ns);
  EXPECT_GT(now_set.mtime_ns, after.ctime_ns);

  // Refused whole: a size, or slots that changed underneath (nothing of either applied).
  LayoutUpdate sized = u;
  sized.slots = {{0, MakeSlot("z", 200), MakeSlot("y", 10)}};
  sized.attrs->size = 5;
  EXPECT_CODE(fs_->Publish(f.ino, sized, c), kInvalidArgument);
  LayoutUpdate stale = u;
  stale.attrs->mtime_ns = 3'000'000'000;
  EXPECT_CODE(fs_->Publish(f.ino, stale, c), kConflict);
  seen = Attr(f.ino);
  EXPECT_EQ(seen.slots, (std::vector<Slot>{MakeSlot("z", 200)}));
  EXPECT_EQ(seen.mtime_ns, now_set.mtime_ns);
  EXPECT_EQ(seen.size, 200u);
}

// Layout pages (slots beyond the inline ones): a publish swaps a page only from the page it was
// built on, as that page's `live` stood; a truncation drops pages past the new size and clips
// the one it ends in; sizes past the largest file the chunk size allows are refused (EFBIG).
TEST_F(NamespaceTest, PublishLayoutSwapsPagesOnlyFromTheirBase) {
  ASSERT_OK_AND_ASSIGN(Inode f, fs_->File(top_, "f"));
  const uint64_t page_bytes = kSlotsPerPage * kMiB;
  const ChunkId p1 = ChunkId::Of("page 1"), p3 = ChunkId::Of("page 3"),
                p1b = ChunkId::Of("page 1, B");
  LayoutUpdate ua;
  ua.slots = {{0, Slot{}, MakeSlot("a0", kMiB)}};
  ua.pages = {{1, ChunkId(), 0, p1, 2 * kMiB}, {3, ChunkId(), 0, p3, 100}};
  ua.written_end = 3 * page_bytes + 100;
  auto ca = std::make_shared<LayoutConflict>();
  ASSERT_OK_AND_ASSIGN(Inode after_a, fs_->Publish(f.ino, ua, ca));
  ASSERT_EQ(after_a.pages.size(), 2u);
  EXPECT_EQ(*after_a.FindPage(1), (PageRef{1, p1, page_bytes, 2 * kMiB}));
  EXPECT_EQ(after_a.FindPage(3)->id, p3);
  EXPECT_EQ(after_a.size, 3 * page_bytes + 100);

  // B built page 1 on no page at all: refused, and told what page 1 is now.
  LayoutUpdate ub;
  ub.pages = {{1, ChunkId(), 0, p1b, kMiB}, {2, ChunkId(), 0, ChunkId::Of("page 2"), 1}};
  ub.written_end = page_bytes + kMiB;
  auto cb = std::make_shared<LayoutConflict>();
  EXPECT_CODE(fs_->Publish(f.ino, ub, cb), kConflict);
  ASSERT_EQ(cb->pages.size(), 1u);
  EXPECT_EQ(cb->pages[0].first, 1u);
  EXPECT_EQ(cb->pages[0].second.id, p1);
  EXPECT_EQ(Attr(f.ino).pages, after_a.pages);  // nothing applied
  // Rebuilt on page 1 as it is: applied; a page built as all holes removes the entry.
  ub.pages[0].base = p1;
  ub.pages[0].base_live = page_bytes;
  ub.pages.push_back({3, p3, page_bytes, ChunkId(), 0});
  ASSERT_OK_AND_ASSIGN(Inode after_b, fs_->Publish(f.ino, ub, cb));
  EXPECT_EQ(after_b.FindPage(1)->id, p1b);
  EXPECT_NE(after_b.FindPage(2), nullptr);
  EXPECT_EQ(after_b.FindPage(3), nullptr);

  // A truncation into page 2 clips it and keeps page 1 whole.
  SetAttrRequest cut;
  cut.size = 2 * page_bytes + 5;
  ASSERT_OK_AND_ASSIGN(Inode cut_in, fs_->SetAttr(f.ino, cut));
  EXPECT_EQ(cut_in.FindPage(1)->live, page_bytes);
  EXPECT_EQ(cut_in.FindPage(2)->live, 5u);
  EXPECT_EQ(cut_in.FindPage(2)->used, 1u);
  // A writer that built page 2 on its unclipped form conflicts: the clip must not be undone.
  LayoutUpdate uc;
  uc.pages = {{2, after_b.FindPage(2)->id, page_bytes, ChunkId::Of("page 2, C"), kMiB}};
  uc.written_end = 2 * page_bytes + kMiB;
  auto cc = std::make_shared<LayoutConflict>();
  EXPECT_CODE(fs_->Publish(f.ino, uc, cc), kConflict);
  ASSERT_EQ(cc->pages.size(), 1u);
  EXPECT_EQ(cc->pages[0].second.live, 5u);
  cut.size = page_bytes;
  ASSERT_OK_AND_ASSIGN(Inode cut2, fs_->SetAttr(f.ino, cut));
  ASSERT_EQ(cut2.pages.size(), 0u);  // page 1 starts at the new size: dropped
  EXPECT_EQ(cut2.slots.size(), 1u);

  // EFBIG past the largest size: by truncation, and by a publish.
  cut.size = MaxFileSize(kMiB) + 1;
  EXPECT_CODE(fs_->SetAttr(f.ino, cut), kTooLarge);
  cut.size = MaxFileSize(kMiB);
  EXPECT_OK(fs_->SetAttr(f.ino, cut));
  LayoutUpdate ue;
  ue.written_end = MaxFileSize(kMiB) + 1;
  EXPECT_CODE(fs_->Publish(f.ino, ue, cc), kTooLarge);
  // A layout written inline whole (before pages existed): pages for it are refused, and a
  // truncation keeps it inline whole (holes past the end, the end's slot clipped), so a mount
  // that read it never finds its slots moved to pages.
  ASSERT_OK(fs_->EditRaw(InodeKey(f.ino), [&](MetaRecord& rec) {
    rec.inode()->slots.assign(kSlotsPerPage + 100, MakeSlot("legacy", kMiB));
  }));
  EXPECT_CODE(fs_->Publish(f.ino, ua, ca), kInvalidArgument);
  cut.size = 5 * kMiB + 7;
  ASSERT_OK_AND_ASSIGN(Inode legacy, fs_->SetAttr(f.ino, cut));
  ASSERT_EQ(legacy.slots.size(), kSlotsPerPage + 1);
  EXPECT_EQ(legacy.slots[4], MakeSlot("legacy", kMiB));
  EXPECT_EQ(legacy.slots[5].length, 7u);
  EXPECT_TRUE(legacy.slots[6].hole());
  EXPECT_TRUE(legacy.slots[kSlotsPerPage].hole());
  EXPECT_TRUE(legacy.SlotIsInline(3000));
  LayoutUpdate ul;
  ul.slots = {{3000, Slot{}, MakeSlot("l3000", 5)}};
  ul.written_end = 3000 * kMiB + 5;
  ASSERT_OK_AND_ASSIGN(Inode grown, fs_->Publish(f.ino, ul, ca));
  EXPECT_EQ(grown.slots.size(), 3001u);
  EXPECT_TRUE(grown.pages.empty());
}

TEST_F(NamespaceTest, TooManyLinks) {
  ASSERT_OK_AND_ASSIGN(Inode d, fs_->Mkdir(top_, "d"));
  ASSERT_OK_AND_ASSIGN(Inode f, fs_->File(top_, "f"));
  ASSERT_OK_AND_ASSIGN(Inode other, fs_->Mkdir(top_, "other"));
  ASSERT_OK(fs_->Mkdir(other.ino, "sub"));
  ASSERT_OK(fs_->EditRaw(InodeKey(d.ino), [](MetaRecord& rec) { rec.inode()->nlink = kMaxLinks; }));
  EXPECT_CODE(fs_->Mkdir(d.ino, "x"), kTooManyLinks);
  EXPECT_CODE(fs_->Lookup(d.ino, "x"), kNotFound);
  EXPECT_CODE(fs_->Rename(other.ino, "sub", d.ino, "sub"), kTooManyLinks);
  EXPECT_OK(fs_->Lookup(other.ino, "sub"));
  EXPECT_OK(fs_->File(d.ino, "file"));  // a file adds no link
  Inode dd = Attr(d.ino);
  EXPECT_EQ(dd.nlink, kMaxLinks);
  EXPECT_EQ(dd.entry_count, 1u);
  ASSERT_OK(fs_->EditRaw(InodeKey(f.ino), [](MetaRecord& rec) { rec.inode()->nlink = kMaxLinks; }));
  EXPECT_CODE(fs_->Link(f.ino, top_, "f2"), kTooManyLinks);
  EXPECT_CODE(fs_->Lookup(top_, "f2"), kNotFound);
  EXPECT_EQ(Attr(f.ino).nlink, kMaxLinks);
}

TEST_F(NamespaceTest, ReadsFollowIntentsAndChangesWaitForPending) {
  ASSERT_OK_AND_ASSIGN(Inode f, fs_->File(top_, "f"));
  ASSERT_OK_AND_ASSIGN(Inode g, fs_->File(top_, "g"));
  // Committed but not yet resolved: readers already see the new value.
  Plant(TxnState::kCommitted, WallNowNs() + 60'000'000'000, DirEntryKey(top_, "ghost"),
        DirEntry{g.ino, FileType::kRegular});
  ASSERT_OK_AND_ASSIGN(Inode ghost, fs_->Lookup(top_, "ghost"));
  EXPECT_EQ(ghost.ino, g.ino);
  ASSERT_OK_AND_ASSIGN(auto listing, fs_->ReadAll(top_));
  std::set<std::string> names;
  for (const auto& e : listing) names.insert(e.name);
  EXPECT_EQ(names, (std::set<std::string>{"f", "g", "ghost"}));

  // Pending and in time: readers see the old value, a plain change waits for the decision
  // and, once the deadline passes, aborts the transaction and goes ahead.
  ASSERT_OK_AND_ASSIGN(MetaRecord raw, fs_->Raw(InodeKey(f.ino)));
  Inode changed = *raw.inode();
  changed.mode = 0777;
  const int64_t deadline = WallNowNs() + 1'500'000'000;
  uint64_t id = Plant(TxnState::kPending, deadline, InodeKey(f.ino), changed);
  EXPECT_EQ(Attr(f.ino).mode, 0644u);
  SetAttrRequest chmod;
  chmod.mode = 0600;
  ASSERT_OK_AND_ASSIGN(Inode after, fs_->SetAttr(f.ino, chmod));
  EXPECT_GT(WallNowNs(), deadline);
  EXPECT_EQ(after.mode, 0600u);
  ASSERT_OK_AND_ASSIGN(MetaRecord x, fs_->Raw(TxnKey(id)));
  EXPECT_EQ(x.txn()->state, TxnState::kAborted);
  ASSERT_OK_AND_ASSIGN(MetaRecord now, fs_->Raw(InodeKey(f.ino)));
  EXPECT_FALSE(now.intent.has_value());
  EXPECT_EQ(now.inode()->mode, 0600u);
}

TEST_F(NamespaceTest, FixDirectoryCountsRepairsCorruptCounts) {
  ASSERT_OK_AND_ASSIGN(Inode d, fs_->Mkdir(top_, "d"));
  ASSERT_OK(fs_->File(d.ino, "f1"));
  ASSERT_OK(fs_->File(d.ino, "f2"));
  ASSERT_OK(fs_->Mkdir(d.ino, "s1"));
  ASSERT_OK_AND_ASSIGN(bool clean, fs_->FixDirectoryCounts(d.ino));
  EXPECT_FALSE(clean);

  ASSERT_OK(fs_->EditRaw(InodeKey(d.ino), [](MetaRecord& rec) {
    ASSERT_NE(rec.inode(), nullptr);
    rec.inode()->entry_count += 5;
    rec.inode()->nlink = 9;
  }));
  EXPECT_EQ(Attr(d.ino).entry_count, 8u);
  ASSERT_OK_AND_ASSIGN(bool fixed, fs_->FixDirectoryCounts(d.ino));
  EXPECT_TRUE(fixed);
  Inode now = Attr(d.ino);
  EXPECT_EQ(now.entry_count, 3u);
  EXPECT_EQ(now.nlink, 3u);

  // Too low, too.
  ASSERT_OK(fs_->EditRaw(InodeKey(d.ino), [](MetaRecord& rec) {
    rec.inode()->entry_count = 0;
    rec.inode()->nlink = 2;
  }));
  // With the count at 0 the directory looks empty to the count check alone; the scan still
  // refuses to remove it.
  EXPECT_CODE(fs_->Rmdir(top_, "d"), kNotEmpty);
  ASSERT_OK_AND_ASSIGN(bool fixed2, fs_->FixDirectoryCounts(d.ino));
  EXPECT_TRUE(fixed2);
  now = Attr(d.ino);
  EXPECT_EQ(now.entry_count, 3u);
  EXPECT_EQ(now.nlink, 3u);
  ASSERT_OK_AND_ASSIGN(bool again, fs_->FixDirectoryCounts(d.ino));
  EXPECT_FALSE(again);
  ASSERT_OK_AND_ASSIGN(Inode f, fs_->Lookup(d.ino, "f1"));
  ASSERT_OK_AND_ASSIGN(bool on_file, fs_->FixDirectoryCounts(f.ino));
  EXPECT_FALSE(on_file);
}

TEST_F(NamespaceTest, ResolveTransactionsAbortsExpiredAndAppliesDecided) {
  ASSERT_OK_AND_ASSIGN(Inode keep, fs_->File(top_, "keep"));
  ASSERT_OK_AND_ASSIGN(Inode other, fs_->File(top_, "other"));
  ASSERT_OK_AND_ASSIGN(Inode gone, fs_->File(top_, "gone"));
  ASSERT_OK_AND_ASSIGN(Inode fresh, fs_->File(top_, "fresh"));
  const int64_t now = WallNowNs();
  // Pending past its deadline: replaces "keep" by another inode if it ever commits.
  uint64_t expired = Plant(TxnState::kPending, now - 5'000'000'000, DirEntryKey(top_, "keep"),
                           DirEntry{other.ino, FileType::kRegular});
  // Committed: removes "gone".
  uint64_t committed =
      Plant(TxnState::kCommitted, now - 5'000'000'000, DirEntryKey(top_, "gone"), std::monostate{});
  // Pending and still in time: left alone.
  uint64_t young =
      Plant(TxnState::kPending, now + 60'000'000'000, DirEntryKey(top_, "fresh"), std::monostate{});

  ASSERT_OK_AND_ASSIGN(int touched, fs_->ResolveTransactions());
  EXPECT_GE(touched, 2);

  ASSERT_OK_AND_ASSIGN(MetaRecord x1, fs_->Raw(TxnKey(expired)));
  ASSERT_NE(x1.txn(), nullptr);
  EXPECT_EQ(x1.txn()->state, TxnState::kAborted);
  ASSERT_OK_AND_ASSIGN(MetaRecord e1, fs_->Raw(DirEntryKey(top_, "keep")));
  EXPECT_FALSE(e1.intent.has_value());
  ASSERT_NE(e1.entry(), nullptr);
  EXPECT_EQ(e1.entry()->ino, keep.ino);
  ASSERT_OK_AND_ASSIGN(Inode k, fs_->Lookup(top_, "keep"));
  EXPECT_EQ(k.ino, keep.ino);

  ASSERT_OK_AND_ASSIGN(MetaRecord e2, fs_->Raw(DirEntryKey(top_, "gone")));
  EXPECT_FALSE(e2.intent.has_value());
  EXPECT_TRUE(e2.absent());
  EXPECT_CODE(fs_->Lookup(top_, "gone"), kNotFound);
  ASSERT_OK_AND_ASSIGN(MetaRecord x2, fs_->Raw(TxnKey(committed)));
  EXPECT_EQ(x2.txn()->state, TxnState::kCommitted);

  ASSERT_OK_AND_ASSIGN(MetaRecord e3, fs_->Raw(DirEntryKey(top_, "fresh")));
  ASSERT_TRUE(e3.intent.has_value());
  EXPECT_EQ(e3.intent->txn, young);
  ASSERT_OK_AND_ASSIGN(MetaRecord x3, fs_->Raw(TxnKey(young)));
  EXPECT_EQ(x3.txn()->state, TxnState::kPending);
  // Readers see the old value of a pending transaction.
  ASSERT_OK_AND_ASSIGN(Inode fr, fs_->Lookup(top_, "fresh"));
  EXPECT_EQ(fr.ino, fresh.ino);
  ASSERT_OK_AND_ASSIGN(auto listing, fs_->ReadAll(top_));
  std::set<std::string> names;
  for (const auto& e : listing) names.insert(e.name);
  EXPECT_EQ(names, (std::set<std::string>{"keep", "other", "fresh"}));
  // Clean up the young one so later scans do not meet it.
  ASSERT_OK(
      fs_->EditRaw(TxnKey(young), [](MetaRecord& rec) { rec.txn()->state = TxnState::kAborted; }));
  ASSERT_OK(fs_->ResolveTransactions());
  ASSERT_OK_AND_ASSIGN(MetaRecord e4, fs_->Raw(DirEntryKey(top_, "fresh")));
  EXPECT_FALSE(e4.intent.has_value());
  EXPECT_NE(e4.entry(), nullptr);
}

TEST_F(NamespaceTest, ReadersAbortExpiredTransactions) {
  ASSERT_OK_AND_ASSIGN(Inode keep, fs_->File(top_, "keep"));
  uint64_t id = 0x1234'5678'9abc'def1ull ^ keep.ino;
  Txn t;
  t.id = id;
  t.created_ns = WallNowNs() - 10'000'000'000;
  t.deadline_ns = t.created_ns + 1;
  t.participants = {DirEntryKey(top_, "keep")};
  ASSERT_OK(fs_->EditRaw(TxnKey(id), [&t](MetaRecord& rec) { rec.body = t; }));
  ASSERT_OK(fs_->EditRaw(DirEntryKey(top_, "keep"), [&](MetaRecord& rec) {
    rec.intent = Intent{id, std::monostate{}};
  }));
  ASSERT_OK_AND_ASSIGN(Inode k, fs_->Lookup(top_, "keep"));
  EXPECT_EQ(k.ino, keep.ino);
  ASSERT_OK_AND_ASSIGN(MetaRecord x, fs_->Raw(TxnKey(id)));
  EXPECT_EQ(x.txn()->state, TxnState::kAborted);
  // A plain change meeting the dead intent drops it and goes ahead.
  ASSERT_OK(fs_->Unlink(top_, "keep"));
  ASSERT_OK_AND_ASSIGN(MetaRecord e, fs_->Raw(DirEntryKey(top_, "keep")));
  EXPECT_FALSE(e.intent.has_value());
  EXPECT_TRUE(e.absent());
}

TEST_F(NamespaceTest, FixInodeAdoptsOrphansIntoLostFound) {
  const int64_t now = WallNowNs();
  auto orphan = [&](int64_t birth_deadline) -> Result<uint64_t> {
    auto ino = client_->AllocateInode();
    if (!ino.ok()) return ino.status();
    Inode in;
    in.ino = *ino;
    in.type = FileType::kRegular;
    in.mode = 0600;
    in.nlink = 1;
    in.chunk_size = kMiB;
    in.atime_ns = in.mtime_ns = in.ctime_ns = in.btime_ns = birth_deadline - 60'000'000'000;
    in.birth_deadline_ns = birth_deadline;
    MetaRecord rec;
    rec.body = in;
    auto w = client_->CreateFresh(InodeKey(*ino), rec.Encode());
    if (!w.ok()) return w.status();
    return *ino;
  };
  ASSERT_OK_AND_ASSIGN(uint64_t old_ino, orphan(now - 120'000'000'000));
  ASSERT_OK_AND_ASSIGN(uint64_t young_ino, orphan(now + 120'000'000'000));

  // Still within its birth grace: a create may be about to name it.
  ASSERT_OK_AND_ASSIGN(bool young_changed, fs_->FixInode(young_ino));
  EXPECT_FALSE(young_changed);
  EXPECT_EQ(Attr(young_ino).state, InodeState::kLive);
  EXPECT_TRUE(Attr(young_ino).parents.empty());

  ASSERT_OK_AND_ASSIGN(bool adopted, fs_->FixInode(old_ino));
  EXPECT_TRUE(adopted);
  ASSERT_OK_AND_ASSIGN(Inode lf, fs_->Lookup(kRootIno, "lost+found"));
  EXPECT_TRUE(lf.is_dir());
  const std::string name = "#" + std::to_string(old_ino);
  ASSERT_OK_AND_ASSIGN(Inode found, fs_->Lookup(lf.ino, name));
  EXPECT_EQ(found.ino, old_ino);
  EXPECT_EQ(found.nlink, 1u);
  EXPECT_EQ(found.state, InodeState::kLive);
  EXPECT_EQ(found.parents, (std::vector<BackPointer>{{lf.ino, name}}));
  EXPECT_GE(Attr(lf.ino).entry_count, 1u);
  ASSERT_OK_AND_ASSIGN(bool again, fs_->FixInode(old_ino));
  EXPECT_FALSE(again);

  // A healthy inode is left alone.
  ASSERT_OK_AND_ASSIGN(Inode f, fs_->File(top_, "healthy"));
  ASSERT_OK_AND_ASSIGN(bool healthy, fs_->FixInode(f.ino));
  EXPECT_FALSE(healthy);
  // A wrong link count is brought in line with the entries naming the inode.
  ASSERT_OK(fs_->Link(f.ino, top_, "healthy2"));
  ASSERT_OK(fs_->EditRaw(InodeKey(f.ino), [](MetaRecord& rec) { rec.inode()->nlink = 7; }));
  ASSERT_OK_AND_ASSIGN(bool relinked, fs_->FixInode(f.ino));
  EXPECT_TRUE(relinked);
  EXPECT_EQ(Attr(f.ino).nlink, 2u);
  // A back-pointer naming no entry, within the birth grace: a create may be about to write
  // that entry, so the inode is left exactly as it is.
  ASSERT_OK_AND_ASSIGN(Inode g, fs_->File(top_, "g"));
  ASSERT_OK(
      fs_->EditRaw(DirEntryKey(top_, "g"), [](MetaRecord& rec) { rec.body = std::monostate{}; }));
  ASSERT_OK_AND_ASSIGN(bool in_grace, fs_->FixInode(g.ino));
  EXPECT_FALSE(in_grace);
  Inode gi = Attr(g.ino);
  EXPECT_EQ(gi.nlink, 1u);
  EXPECT_EQ(gi.state, InodeState::kLive);
  EXPECT_EQ(gi.parents, (std::vector<BackPointer>{{top_, "g"}}));
  // Past it, nothing names the inode: adopted.
  ASSERT_OK(fs_->EditRaw(InodeKey(g.ino), [&](MetaRecord& rec) {
    rec.inode()->birth_deadline_ns = now - 120'000'000'000;
  }));
  ASSERT_OK_AND_ASSIGN(bool adopted_g, fs_->FixInode(g.ino));
  EXPECT_TRUE(adopted_g);
  const std::string g_name = "#" + std::to_string(g.ino);
  ASSERT_OK_AND_ASSIGN(Inode g_found, fs_->Lookup(lf.ino, g_name));
  EXPECT_EQ(g_found.ino, g.ino);
  EXPECT_EQ(g_found.nlink, 1u);
  EXPECT_EQ(g_found.parents, (std::vector<BackPointer>{{lf.ino, g_name}}));
}

// ---- concurrency on the real cluster --------------------------------------------------------

TEST(NamespaceConcurrency, SixteenClientsRaceToCreateOneName) {
  TestCluster cluster;
  const int kClients = 16;
  std::vector<std::unique_ptr<ClusterClient>> clients;
  for (int i = 0; i < kClients; ++i) {
    clients.push_back(std::make_unique<ClusterClient>(cluster.config(), Options()));
  }
  Fs fs0(*clients[0]);
  ASSERT_OK(fs0.Root());
  ASSERT_OK_AND_ASSIGN(Inode dir, fs0.Mkdir(kRootIno, "race"));
  for (int round = 0; round < 3; ++round) {
    const std::string name = "name" + std::to_string(round);
    std::atomic<int> ready{0};
    std::vector<Result<Inode>> results(kClients, Status(StatusCode::kInternal, "not run"));
    std::vector<std::thread> threads;
    for (int i = 0; i < kClients; ++i) {
      threads.emplace_back([&, i]() {
        Fs fs(*clients[i]);
        ++ready;
        while (ready.load() < kClients) std::this_thread::yield();
        CreateRequest req;
        req.type = i % 2 ? FileType::kRegular : FileType::kDirectory;
        req.mode = 0600;
        req.uid = static_cast<uint32_t>(i);
        results[i] = fs.Create(dir.ino, name, req);
      });
    }
    for (auto& t : threads) t.join();
    int winners = 0, winner = -1;
    for (int i = 0; i < kClients; ++i) {
      if (results[i].ok()) {
        ++winners;
        winner = i;
      } else {
        EXPECT_EQ(results[i].status().code(), StatusCode::kAlreadyExists)
            << "client " << i << ": " << results[i].status().ToString();
      }
    }
    ASSERT_EQ(winners, 1) << "round " << round;
    ASSERT_OK_AND_ASSIGN(Inode got, fs0.Lookup(dir.ino, name));
    EXPECT_EQ(got.ino, results[winner]->ino);
    EXPECT_EQ(got.uid, static_cast<uint32_t>(winner));
    EXPECT_EQ(got.parents, (std::vector<BackPointer>{{dir.ino, name}}));
  }
  ASSERT_OK_AND_ASSIGN(Inode d, fs0.GetAttr(dir.ino));
  ASSERT_OK_AND_ASSIGN(auto listing, fs0.ReadAll(dir.ino));
  EXPECT_EQ(listing.size(), 3u);
  EXPECT_EQ(d.entry_count, 3u);
  uint32_t subdirs = 0;
  for (const auto& e : listing) subdirs += e.type == FileType::kDirectory;
  EXPECT_EQ(d.nlink, 2 + subdirs);
  ASSERT_OK_AND_ASSIGN(bool fixed, fs0.FixDirectoryCounts(dir.ino));
  EXPECT_FALSE(fixed);
}

TEST(NamespaceConcurrency, CrossingRenamesLoseNoFile) {
  TestCluster cluster;
  const int kThreads = 8;
  const int kFiles = 16;
  const auto kDuration = std::chrono::seconds(10);
  std::vector<std::unique_ptr<ClusterClient>> clients;
  for (int i = 0; i < kThreads; ++i) {
    clients.push_back(std::make_unique<ClusterClient>(cluster.config(), Options()));
  }
  Fs fs0(*clients[0]);
  ASSERT_OK(fs0.Root());
  ASSERT_OK_AND_ASSIGN(Inode a, fs0.Mkdir(kRootIno, "a"));
  ASSERT_OK_AND_ASSIGN(Inode b, fs0.Mkdir(kRootIno, "b"));
  std::map<std::string, uint64_t> inos;
  for (int i = 0; i < kFiles; ++i) {
    std::string name = "f" + std::to_string(i);
    ASSERT_OK_AND_ASSIGN(Inode f, fs0.File(i % 2 ? a.ino : b.ino, name));
    inos[name] = f.ino;
  }

  std::mutex mu;
  std::map<StatusCode, int> outcomes;
  std::vector<std::string> unexpected;
  std::atomic<bool> stop{false};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t]() {
      Fs fs(*clients[t]);
      std::mt19937_64 rng(1000 + t);
      while (!stop) {
        std::string name = "f" + std::to_string(rng() % kFiles);
        bool a_to_b = rng() % 2;
        Status s =
            a_to_b ? fs.Rename(a.ino, name, b.ino, name) : fs.Rename(b.ino, name, a.ino, name);
        std::lock_guard<std::mutex> lock(mu);
        ++outcomes[s.code()];
        if (!s.ok() && s.code() != StatusCode::kNotFound && s.code() != StatusCode::kBusy) {
          unexpected.push_back(s.ToString());
        }
      }
    });
  }
  std::this_thread::sleep_for(kDuration);
  stop = true;
  for (auto& th : threads) th.join();
  for (const auto& [code, n] : outcomes) std::printf("rename %s: %d\n", StatusCodeName(code), n);
  EXPECT_TRUE(unexpected.empty()) << unexpected.size() << " unexpected, first: " << unexpected[0];
  EXPECT_GT(outcomes[StatusCode::kOk], kThreads);
  EXPECT_LE(outcomes[StatusCode::kBusy], outcomes[StatusCode::kOk] / 10 + 1);

  // Every file is in exactly one of the two directories, with a matching inode.
  std::map<std::string, int> seen;
  for (uint64_t dir : {a.ino, b.ino}) {
    ASSERT_OK_AND_ASSIGN(auto listing, fs0.ReadAll(dir, 5));
    ASSERT_OK_AND_ASSIGN(Inode d, fs0.GetAttr(dir));
    EXPECT_EQ(d.entry_count, listing.size()) << "dir " << dir;
    EXPECT_EQ(d.nlink, 2u);
    for (const auto& e : listing) {
      ++seen[e.name];
      ASSERT_TRUE(inos.count(e.name)) << e.name;
      EXPECT_EQ(e.ino, inos[e.name]) << e.name;
      ASSERT_OK_AND_ASSIGN(Inode in, fs0.GetAttr(e.ino));
      EXPECT_EQ(in.nlink, 1u) << e.name;
      EXPECT_EQ(in.state, InodeState::kLive) << e.name;
      EXPECT_EQ(in.parents, (std::vector<BackPointer>{{dir, e.name}})) << e.name;
      ASSERT_OK_AND_ASSIGN(Inode looked, fs0.Lookup(dir, e.name));
      EXPECT_EQ(looked.ino, e.ino);
    }
    ASSERT_OK_AND_ASSIGN(bool fixed, fs0.FixDirectoryCounts(dir));
    EXPECT_FALSE(fixed) << "dir " << dir;
  }
  EXPECT_EQ(seen.size(), static_cast<size_t>(kFiles));
  for (const auto& [name, n] : seen) EXPECT_EQ(n, 1) << name;
  // Nothing is left pending: a repair pass finds only decided transactions.
  ASSERT_OK(fs0.ResolveTransactions());
  for (const auto& [name, ino] : inos) {
    ASSERT_OK_AND_ASSIGN(MetaRecord raw, fs0.Raw(InodeKey(ino)));
    EXPECT_FALSE(raw.intent.has_value()) << name;
  }
}

std::vector<std::unique_ptr<ClusterClient>> Clients(TestCluster& cluster, int n) {
  std::vector<std::unique_ptr<ClusterClient>> clients;
  for (int i = 0; i < n; ++i) {
    clients.push_back(std::make_unique<ClusterClient>(cluster.config(), Options()));
  }
  return clients;
}

// Transactional attempts that lost a conflict and ran again, over all `clients`.
uint64_t ConflictRetries(const std::vector<std::unique_ptr<ClusterClient>>& clients) {
  uint64_t n = 0;
  for (auto& c : clients) n += c->RunSync<uint64_t>([&] { return c->ns().conflict_retries(); });
  return n;
}

// Renames within one directory to names that do not exist yet (a download's "x.part" renamed
// to "x", from 8 clients at once) leave the directory out of their transactions and set its
// times after the commit (no count changes, so no rename mark): transactions on different
// names never conflict, and the directory's counts come out exact.
TEST(NamespaceConcurrency, RenamesToNewNamesInOneDirectoryDoNotContend) {
  TestCluster cluster;
  const int kThreads = 8;
  const int kRounds = 6;
  auto clients = Clients(cluster, kThreads);
  Fs fs0(*clients[0]);
  ASSERT_OK(fs0.Root());
  ASSERT_OK_AND_ASSIGN(Inode dir, fs0.Mkdir(kRootIno, "d"));
  ASSERT_OK(fs0.Mkdir(dir.ino, "sub"));
  const int64_t before_ns = WallNowNs();

  std::mutex mu;
  std::vector<std::string> failures;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t]() {
      Fs fs(*clients[t]);
      for (int r = 0; r < kRounds; ++r) {
        const std::string x = "x" + std::to_string(t) + "." + std::to_string(r);
        auto made = fs.File(dir.ino, x + ".part");
        Status s = made.ok() ? fs.Rename(dir.ino, x + ".part", dir.ino, x) : made.status();
        if (!s.ok()) {
          std::lock_guard<std::mutex> lock(mu);
          failures.push_back(x + ": " + s.ToString());
          return;
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  ASSERT_TRUE(failures.empty()) << failures.size() << " failed, first: " << failures[0];
  EXPECT_EQ(ConflictRetries(clients), 0u)
      << "renames of different names in one directory conflicted";

  const uint64_t kFiles = kThreads * kRounds;
  ASSERT_OK_AND_ASSIGN(auto listing, fs0.ReadAll(dir.ino));
  EXPECT_EQ(listing.size(), kFiles + 1);
  ASSERT_OK_AND_ASSIGN(Inode d, fs0.GetAttr(dir.ino));
  EXPECT_EQ(d.entry_count, kFiles + 1);
  EXPECT_EQ(d.nlink, 3u);
  EXPECT_GE(d.mtime_ns, before_ns);
  EXPECT_EQ(d.ctime_ns, d.mtime_ns);
  ASSERT_OK_AND_ASSIGN(bool fixed, fs0.FixDirectoryCounts(dir.ino));
  EXPECT_FALSE(fixed);
  for (const auto& e : listing) {
    EXPECT_EQ(e.name.find(".part"), std::string::npos) << e.name;
    ASSERT_OK_AND_ASSIGN(Inode in, fs0.GetAttr(e.ino));
    EXPECT_EQ(in.parents, (std::vector<BackPointer>{{dir.ino, e.name}})) << e.name;
  }

  // A directory renamed to a new name in the same directory: counts and links unchanged, times
  // set after the commit.
  ASSERT_OK(fs0.Rename(dir.ino, "sub", dir.ino, "sub2"));
  ASSERT_OK_AND_ASSIGN(Inode d2, fs0.GetAttr(dir.ino));
  EXPECT_EQ(d2.entry_count, kFiles + 1);
  EXPECT_EQ(d2.nlink, 3u);
  EXPECT_GE(d2.mtime_ns, d.mtime_ns);
  ASSERT_OK_AND_ASSIGN(Inode sub, fs0.Lookup(dir.ino, "sub2"));
  EXPECT_EQ(sub.parents, (std::vector<BackPointer>{{dir.ino, "sub2"}}));
  // A rename that fails (its source is gone) changes nothing.
  EXPECT_CODE(fs0.Rename(dir.ino, "sub", dir.ino, "sub3"), kNotFound);
  ASSERT_OK_AND_ASSIGN(Inode d3, fs0.GetAttr(dir.ino));
  EXPECT_EQ(d3.entry_count, d2.entry_count);
  EXPECT_EQ(d3.nlink, d2.nlink);
  // The directory stays removable once emptied: no count was left high.
  for (const auto& e : listing) {
    if (e.name != "sub") ASSERT_OK(fs0.Unlink(dir.ino, e.name));
  }
  ASSERT_OK(fs0.Rmdir(dir.ino, "sub2"));
  ASSERT_OK(fs0.Rmdir(kRootIno, "d"));
}

// Renames of files over other names in one directory (the "write x.tmp, rename it over x"
// pattern) and moves of files between directories, from 8 clients at once, take only the names
// and inodes they touch into their transactions, with rename marks on the directories whose
// counts they change: transactions on different names never conflict, and the counts and
// times come out exact.
TEST(NamespaceConcurrency, RenamesOverNamesAndBetweenDirectoriesDoNotContend) {
  TestCluster cluster;
  const int kThreads = 8;
  const int kRounds = 6;
  auto clients = Clients(cluster, kThreads);
  Fs fs0(*clients[0]);
  ASSERT_OK(fs0.Root());
  ASSERT_OK_AND_ASSIGN(Inode dir, fs0.Mkdir(kRootIno, "d"));
  for (int t = 0; t < kThreads; ++t) ASSERT_OK(fs0.File(dir.ino, "x" + std::to_string(t)));
  const int64_t before_ns = WallNowNs();
  auto retries = [&]() { return ConflictRetries(clients); };
  const uint64_t retries_before = retries();

  std::mutex mu;
  std::vector<std::string> failures;
  std::vector<uint64_t> replaced;  // inodes the renames replaced
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t]() {
      Fs fs(*clients[t]);
      const std::string x = "x" + std::to_string(t), tmp = x + ".tmp";
      for (int r = 0; r < kRounds; ++r) {
        auto old = fs.Lookup(dir.ino, x);
        auto made = fs.File(dir.ino, tmp);
        Status s = made.ok() ? fs.Rename(dir.ino, tmp, dir.ino, x) : made.status();
        std::lock_guard<std::mutex> lock(mu);
        if (!old.ok() || !s.ok()) {
          failures.push_back(x + " round " + std::to_string(r) + ": " +
                             (old.ok() ? s.ToString() : old.status().ToString()));
          return;
        }
        replaced.push_back(old->ino);
      }
    });
  }
  for (auto& th : threads) th.join();
  ASSERT_TRUE(failures.empty()) << failures.size() << " failed, first: " << failures[0];
  EXPECT_EQ(retries(), retries_before) << "renames of different names in one directory conflicted";

  ASSERT_OK_AND_ASSIGN(auto listing, fs0.ReadAll(dir.ino));
  EXPECT_EQ(listing.size(), static_cast<size_t>(kThreads));
  ASSERT_OK_AND_ASSIGN(Inode d, fs0.GetAttr(dir.ino));
  EXPECT_EQ(d.entry_count, static_cast<uint64_t>(kThreads));
  EXPECT_TRUE(d.rename_marks.empty());
  EXPECT_EQ(d.nlink, 2u);
  EXPECT_GE(d.mtime_ns, before_ns);
  EXPECT_EQ(d.ctime_ns, d.mtime_ns);
  ASSERT_OK_AND_ASSIGN(bool fixed, fs0.FixDirectoryCounts(dir.ino));
  EXPECT_FALSE(fixed);
  for (const auto& e : listing) {
    EXPECT_EQ(e.name.find(".tmp"), std::string::npos) << e.name;
    ASSERT_OK_AND_ASSIGN(Inode in, fs0.GetAttr(e.ino));
    EXPECT_EQ(in.nlink, 1u) << e.name;
    EXPECT_EQ(in.parents, (std::vector<BackPointer>{{dir.ino, e.name}})) << e.name;
  }
  ASSERT_EQ(replaced.size(), static_cast<size_t>(kThreads * kRounds));
  for (uint64_t ino : replaced) {
    auto in = fs0.GetAttr(ino);
    if (in.ok()) {
      EXPECT_EQ(in->nlink, 0u) << "replaced inode " << ino;
    }
  }

  // Files moved between two directories by every client at once (a mail spool's tmp/ to new/):
  // no conflicts either, and both directories' counts exact.
  ASSERT_OK_AND_ASSIGN(Inode tmp_dir, fs0.Mkdir(kRootIno, "tmp"));
  ASSERT_OK_AND_ASSIGN(Inode new_dir, fs0.Mkdir(kRootIno, "new"));
  const uint64_t retries_before_moves = retries();
  threads.clear();
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t]() {
      Fs fs(*clients[t]);
      for (int r = 0; r < kRounds; ++r) {
        const std::string name = "m" + std::to_string(t) + "." + std::to_string(r);
        auto made = fs.File(tmp_dir.ino, name);
        Status s = made.ok() ? fs.Rename(tmp_dir.ino, name, new_dir.ino, name) : made.status();
        if (!s.ok()) {
          std::lock_guard<std::mutex> lock(mu);
          failures.push_back(name + ": " + s.ToString());
          return;
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  ASSERT_TRUE(failures.empty()) << failures.size() << " failed, first: " << failures[0];
  EXPECT_EQ(retries(), retries_before_moves)
      << "moves of different names between two directories conflicted";
  ASSERT_OK_AND_ASSIGN(auto in_tmp, fs0.ReadAll(tmp_dir.ino));
  ASSERT_OK_AND_ASSIGN(auto in_new, fs0.ReadAll(new_dir.ino));
  EXPECT_TRUE(in_tmp.empty());
  EXPECT_EQ(in_new.size(), static_cast<size_t>(kThreads * kRounds));
  ASSERT_OK_AND_ASSIGN(Inode tmp_after, fs0.GetAttr(tmp_dir.ino));
  ASSERT_OK_AND_ASSIGN(Inode new_after, fs0.GetAttr(new_dir.ino));
  EXPECT_EQ(tmp_after.entry_count, 0u);
  EXPECT_EQ(new_after.entry_count, static_cast<uint64_t>(kThreads * kRounds));
  EXPECT_TRUE(tmp_after.rename_marks.empty());
  EXPECT_TRUE(new_after.rename_marks.empty());
  ASSERT_OK_AND_ASSIGN(bool tmp_fixed, fs0.FixDirectoryCounts(tmp_dir.ino));
  ASSERT_OK_AND_ASSIGN(bool new_fixed, fs0.FixDirectoryCounts(new_dir.ino));
  EXPECT_FALSE(tmp_fixed);
  EXPECT_FALSE(new_fixed);
  for (const auto& e : in_new) {
    ASSERT_OK_AND_ASSIGN(Inode in, fs0.GetAttr(e.ino));
    EXPECT_EQ(in.parents, (std::vector<BackPointer>{{new_dir.ino, e.name}})) << e.name;
  }
  // The emptied directory can be removed at once: its count came down with the last move.
  ASSERT_OK(fs0.Rmdir(kRootIno, "tmp"));
  // A move into a directory already removed fails, and leaves the file where it was.
  ASSERT_OK_AND_ASSIGN(Inode gone, fs0.Mkdir(kRootIno, "gone"));
  ASSERT_OK(fs0.File(new_dir.ino, "late"));
  ASSERT_OK(fs0.Rmdir(kRootIno, "gone"));
  EXPECT_CODE(fs0.Rename(new_dir.ino, "late", gone.ino, "late"), kNotFound);
  ASSERT_OK_AND_ASSIGN(Inode late, fs0.Lookup(new_dir.ino, "late"));
  EXPECT_EQ(late.parents, (std::vector<BackPointer>{{new_dir.ino, "late"}}));
  ASSERT_OK_AND_ASSIGN(Inode new_final, fs0.GetAttr(new_dir.ino));
  EXPECT_EQ(new_final.entry_count, static_cast<uint64_t>(kThreads * kRounds + 1));
  EXPECT_TRUE(new_final.rename_marks.empty()) << "the failed move's mark was settled";

  // Two files exchanged between directories: no count changes, no marks, both names swapped.
  ASSERT_OK_AND_ASSIGN(Inode a, fs0.File(dir.ino, "a"));
  ASSERT_OK_AND_ASSIGN(Inode b, fs0.File(new_dir.ino, "b"));
  ASSERT_OK(fs0.Rename(dir.ino, "a", new_dir.ino, "b", kRenameExchange));
  ASSERT_OK_AND_ASSIGN(Inode now_b, fs0.Lookup(new_dir.ino, "b"));
  ASSERT_OK_AND_ASSIGN(Inode now_a, fs0.Lookup(dir.ino, "a"));
  EXPECT_EQ(now_b.ino, a.ino);
  EXPECT_EQ(now_a.ino, b.ino);
  ASSERT_OK_AND_ASSIGN(Inode d_x, fs0.GetAttr(dir.ino));
  ASSERT_OK_AND_ASSIGN(Inode new_x, fs0.GetAttr(new_dir.ino));
  EXPECT_EQ(d_x.entry_count, static_cast<uint64_t>(kThreads + 1));
  EXPECT_EQ(new_x.entry_count, static_cast<uint64_t>(kThreads * kRounds + 2));
  EXPECT_TRUE(d_x.rename_marks.empty());
  EXPECT_TRUE(new_x.rename_marks.empty());
}

TEST(NamespaceConcurrency, RmdirRacingCreatesLeavesNoOrphans) {
  TestCluster cluster;
  const int kCreators = 4;
  const int kRounds = 16;
  std::vector<std::unique_ptr<ClusterClient>> clients;
  for (int i = 0; i <= kCreators; ++i) {
    clients.push_back(std::make_unique<ClusterClient>(cluster.config(), Options()));
  }
  Fs fs0(*clients[0]);
  ASSERT_OK(fs0.Root());
  int removed = 0;
  for (int round = 0; round < kRounds; ++round) {
    const std::string dname = "d" + std::to_string(round);
    ASSERT_OK_AND_ASSIGN(Inode d, fs0.Mkdir(kRootIno, dname));
    std::atomic<int> ready{0};
    Status rmdir_status;
    std::vector<Status> created(kCreators);
    std::vector<std::thread> threads;
    for (int i = 0; i <= kCreators; ++i) {
      threads.emplace_back([&, i]() {
        Fs fs(*clients[i]);
        ++ready;
        while (ready.load() <= kCreators) std::this_thread::yield();
        if (i == kCreators) {
          rmdir_status = fs.Rmdir(kRootIno, dname);
        } else {
          // Creators start a little later in later rounds, so rmdir wins some rounds.
          std::this_thread::sleep_for(std::chrono::microseconds((round % 8) * 400 * (1 + i % 2)));
          auto r = i % 2 ? fs.File(d.ino, "c" + std::to_string(i))
                         : fs.Mkdir(d.ino, "c" + std::to_string(i));
          created[i] = StatusOf(r);
        }
      });
    }
    for (auto& t : threads) t.join();
    int ok = 0;
    for (const auto& s : created) {
      if (s.ok()) {
        ++ok;
      } else {
        EXPECT_EQ(s.code(), StatusCode::kNotFound) << s.ToString();
      }
    }
    ASSERT_OK_AND_ASSIGN(Inode after, fs0.GetAttr(d.ino));
    ASSERT_OK_AND_ASSIGN(auto listing, fs0.ReadAll(d.ino));
    if (rmdir_status.ok()) {
      ++removed;
      EXPECT_EQ(ok, 0) << "a create succeeded in a directory that was removed";
      EXPECT_EQ(after.state, InodeState::kDying);
      EXPECT_TRUE(listing.empty()) << listing.size() << " orphan entries";
      EXPECT_CODE(fs0.Lookup(kRootIno, dname), kNotFound);
    } else {
      EXPECT_EQ(rmdir_status.code(), StatusCode::kNotEmpty) << rmdir_status.ToString();
      EXPECT_GT(ok, 0);
      EXPECT_EQ(after.state, InodeState::kLive);
      EXPECT_EQ(listing.size(), static_cast<size_t>(ok));
      EXPECT_EQ(after.entry_count, listing.size());
      uint32_t subdirs = 0;
      for (const auto& e : listing) subdirs += e.type == FileType::kDirectory;
      EXPECT_EQ(after.nlink, 2 + subdirs);
    }
  }
  std::printf("rmdir won %d of %d rounds\n", removed, kRounds);
  ASSERT_OK_AND_ASSIGN(bool fixed, fs0.FixDirectoryCounts(kRootIno));
  EXPECT_FALSE(fixed) << "root counts were wrong";
}

TEST(NamespaceConcurrency, CrossingDirectoryMovesNeverFormACycle) {
  TestCluster cluster;
  ClusterClient c0(cluster.config(), Options()), c1(cluster.config(), Options());
  Fs fs0(c0), fs1(c1);
  ASSERT_OK(fs0.Root());
  for (int round = 0; round < 8; ++round) {
    const std::string xn = "x" + std::to_string(round), yn = "y" + std::to_string(round);
    ASSERT_OK_AND_ASSIGN(Inode x, fs0.Mkdir(kRootIno, xn));
    ASSERT_OK_AND_ASSIGN(Inode y, fs0.Mkdir(kRootIno, yn));
    std::atomic<int> ready{0};
    Status s0, s1;
    std::thread t0([&]() {
      ++ready;
      while (ready.load() < 2) std::this_thread::yield();
      s0 = fs0.Rename(kRootIno, xn, y.ino, xn);  // x into y
    });
    std::thread t1([&]() {
      ++ready;
      while (ready.load() < 2) std::this_thread::yield();
      s1 = fs1.Rename(kRootIno, yn, x.ino, yn);  // y into x
    });
    t0.join();
    t1.join();
    EXPECT_NE(s0.ok(), s1.ok()) << s0.ToString() << " / " << s1.ToString();
    for (const Status& s : {s0, s1}) {
      if (!s.ok()) {
        EXPECT_TRUE(s.code() == StatusCode::kInvalidArgument || s.code() == StatusCode::kNotFound)
            << s.ToString();
      }
    }
    // Both still hang off the root: walking ".." from either reaches it.
    for (uint64_t start : {x.ino, y.ino}) {
      uint64_t cur = start;
      int steps = 0;
      while (cur != kRootIno && steps < 5) {
        ASSERT_OK_AND_ASSIGN(Inode up, fs0.Lookup(cur, ".."));
        cur = up.ino;
        ++steps;
      }
      EXPECT_EQ(cur, kRootIno) << "cycle from " << start;
    }
  }
  ASSERT_OK_AND_ASSIGN(bool fixed, fs0.FixDirectoryCounts(kRootIno));
  EXPECT_FALSE(fixed);
}

TEST(NamespaceConcurrency, OperationsWorkWithOneNodeDown) {
  TestCluster cluster;
  ClusterClient client(cluster.config(), Options());
  Fs fs(client);
  ASSERT_OK(fs.Root());
  ASSERT_OK_AND_ASSIGN(Inode d, fs.Mkdir(kRootIno, "d"));
  ASSERT_OK(fs.File(d.ino, "before"));
  cluster.Kill(2);
  ASSERT_OK_AND_ASSIGN(Inode f, fs.File(d.ino, "f"));
  ASSERT_OK(fs.Link(f.ino, d.ino, "f2"));
  ASSERT_OK(fs.Rename(d.ino, "f", kRootIno, "moved"));
  ASSERT_OK(fs.Unlink(d.ino, "f2"));
  ASSERT_OK_AND_ASSIGN(Inode e, fs.Mkdir(d.ino, "e"));
  ASSERT_OK(fs.Rmdir(d.ino, "e"));
  ASSERT_OK(fs.SetXattr(f.ino, "user.k", "v"));
  ASSERT_OK_AND_ASSIGN(auto listing, fs.ReadAll(d.ino));
  ASSERT_EQ(listing.size(), 1u);
  EXPECT_EQ(listing[0].name, "before");
  ASSERT_OK(fs.ResolveTransactions());
  // A recount settles keys that only one replica may hold, so it needs every replica of the
  // directory's set: NoQuorum, naming c, while c is down.
  auto blind = fs.FixDirectoryCounts(d.ino);
  ASSERT_FALSE(blind.ok());
  EXPECT_EQ(blind.status().code(), StatusCode::kNoQuorum) << blind.status().ToString();
  EXPECT_NE(blind.status().message().find("c:"), std::string::npos) << blind.status().ToString();
  cluster.Start(2);
  Result<bool> fixed = blind;
  for (int attempt = 0; attempt < 50 && !fixed.ok(); ++attempt) {  // the client reconnects
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    fixed = fs.FixDirectoryCounts(d.ino);
  }
  ASSERT_OK(fixed.status());
  EXPECT_FALSE(*fixed);
  ASSERT_OK_AND_ASSIGN(Inode moved, fs.Lookup(kRootIno, "moved"));
  EXPECT_EQ(moved.ino, f.ino);
  EXPECT_EQ(moved.nlink, 1u);
  ASSERT_OK_AND_ASSIGN(Inode dir, fs.GetAttr(d.ino));
  EXPECT_EQ(dir.entry_count, 1u);
  EXPECT_CODE(fs.Lookup(d.ino, "e"), kNotFound);
}

}  // namespace
}  // namespace quorumfs
