// Failures under a real mount: a chunkserver killed during a large write, two of three servers
// down (operations fail with EIO within op_timeout, never hang, and the mount recovers by
// itself), the mount process killed during a rename storm (the namespace stays consistent), the
// servers' disks filling up (ENOSPC, and everything works again once space is freed), and
// network partitions between mounts and servers on separate network namespaces.
#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "common/cluster_client.h"
#include "tests/admin_test_util.h"
#include "tests/test_cluster.h"
#include "tests/test_mount.h"
#include "tests/test_netns.h"

namespace quorumfs {
namespace testing {
namespace {

using Clock = std::chrono::steady_clock;
constexpr size_t kMiB = 1024 * 1024;

double Since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// Deterministic, incompressible, never-deduplicated bytes of block `i`.
void FillBlock(uint64_t i, std::string* out) {
  out->resize(kMiB);
  uint64_t x = (i + 1) * 0x9E3779B97F4A7C15ull;
  auto* w = reinterpret_cast<uint64_t*>(out->data());
  for (size_t k = 0; k < kMiB / 8; ++k) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    w[k] = x;
  }
}

uint64_t Mix(uint64_t h, const std::string& data) {
  const auto* w = reinterpret_cast<const uint64_t*>(data.data());
  for (size_t k = 0; k < data.size() / 8; ++k) h = (h ^ w[k]) * 0x100000001B3ull;
  for (size_t k = data.size() / 8 * 8; k < data.size(); ++k) {
    h = (h ^ static_cast<unsigned char>(data[k])) * 0x100000001B3ull;
  }
  return h;
}

// Checksum of a whole file read through the mount; sets *size.
uint64_t FileChecksum(const std::string& path, uint64_t* size, int* err) {
  *err = 0;
  *size = 0;
  int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) {
    *err = errno;
    return 0;
  }
  uint64_t h = 1469598103934665603ull;
  std::string buf(kMiB, '\0');
  while (true) {
    ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n < 0) {
      *err = errno;
      break;
    }
    if (n == 0) break;
    // Full blocks only, so the hash matches the writer's block-wise hash.
    std::string got(buf.data(), static_cast<size_t>(n));
    while (got.size() < kMiB) {
      ssize_t m = ::read(fd, buf.data(), kMiB - got.size());
      if (m <= 0) break;
      got.append(buf.data(), static_cast<size_t>(m));
    }
    h = Mix(h, got);
    *size += got.size();
  }
  ::close(fd);
  return h;
}

// Runs `op` (returning 0 or an errno) in a child process, so a hung FUSE request cannot hang
// the test. Returns {errno or -1 if it did not finish within `limit` s, seconds taken}.
std::pair<int, double> Bounded(const std::function<int()>& op, double limit) {
  int p[2];
  if (::pipe(p) != 0) return {-2, 0};
  auto start = Clock::now();
  pid_t pid = ::fork();
  if (pid == 0) {
    ::close(p[0]);
    int e = op();
    if (::write(p[1], &e, sizeof(e)) < 0) {
    }
    ::_exit(0);
  }
  ::close(p[1]);
  pollfd pfd{p[0], POLLIN, 0};
  int rc = ::poll(&pfd, 1, static_cast<int>(limit * 1000));
  int result = -1;
  if (rc == 1 && ::read(p[0], &result, sizeof(result)) != sizeof(result)) result = -3;
  double took = Since(start);
  ::close(p[0]);
  if (rc != 1) ::kill(pid, SIGKILL);
  int status;
  ::waitpid(pid, &status, 0);
  return {result, took};
}

std::string ErrName(int e) {
  if (e == -1) return "did not finish";
  if (e < 0) return "harness error " + std::to_string(e);
  const char* n = ::strerrorname_np(e);
  return n ? n : std::to_string(e);
}

std::set<std::string> List(const std::string& dir, int* err) {
  std::set<std::string> names;
  *err = 0;
  DIR* d = ::opendir(dir.c_str());
  if (!d) {
    *err = errno;
    return names;
  }
  while (true) {
    errno = 0;
    dirent* e = ::readdir(d);
    if (!e) {
      *err = errno;
      break;
    }
    std::string n = e->d_name;
    if (n != "." && n != "..") names.insert(n);
  }
  ::closedir(d);
  return names;
}

// open(O_CREAT | O_EXCL) and close: 0 or the first errno.
int CreateExclusive(const std::string& path) {
  int fd = ::open(path.c_str(), O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0644);
  if (fd < 0) return errno;
  return ::close(fd) == 0 ? 0 : errno;
}

class FailureTest : public ::testing::Test {
 protected:
  void SetUp() override { QUORUMFS_REQUIRE_FUSE(); }
};

TEST_F(FailureTest, ChunkserverKilledDuringLargeWrite) {
  TestCluster cluster;
  TestMount mount(cluster.cluster_file(), cluster.dir() + "/mnt");
  ASSERT_TRUE(mount.ok());
  const uint64_t blocks = 256;  // 256 MiB
  std::string path = mount.path("big");
  int fd = ::open(path.c_str(), O_CREAT | O_WRONLY, 0644);
  ASSERT_GE(fd, 0) << std::strerror(errno);
  uint64_t h = 1469598103934665603ull;
  std::string block;
  auto start = Clock::now();
  for (uint64_t i = 0; i < blocks; ++i) {
    if (i == blocks / 4) cluster.Kill(1);  // kill -9 a server a quarter of the way through
    FillBlock(i, &block);
    h = Mix(h, block);
    ssize_t n = ::pwrite(fd, block.data(), block.size(), static_cast<off_t>(i * kMiB));
    ASSERT_EQ(n, static_cast<ssize_t>(kMiB)) << "block " << i << ": " << std::strerror(errno);
  }
  ASSERT_EQ(::fsync(fd), 0) << std::strerror(errno);
  ASSERT_EQ(::close(fd), 0) << std::strerror(errno);
  std::fprintf(stderr, "wrote %llu MiB in %.1f s with one server down\n",
               static_cast<unsigned long long>(blocks), Since(start));
  // Back with the server, and with a fresh mount (nothing cached), the bytes are the same.
  cluster.Start(1);
  ASSERT_TRUE(mount.Remount());
  uint64_t size = 0;
  int err = 0;
  uint64_t got = FileChecksum(path, &size, &err);
  EXPECT_EQ(err, 0) << std::strerror(err);
  EXPECT_EQ(size, blocks * kMiB);
  EXPECT_EQ(got, h) << "the file read back differs from what was written";
  // Also readable with a different server down (the one that missed nothing).
  cluster.Kill(0);
  ASSERT_TRUE(mount.Remount());
  got = FileChecksum(path, &size, &err);
  EXPECT_EQ(err, 0) << std::strerror(err);
  EXPECT_EQ(got, h) << "read back with server a down";
}

enum class Outage { kKilled, kFrozen };

void NoQuorum(Outage outage) {
  TestCluster cluster;
  TestMountOptions opts;
  opts.op_timeout = 3;
  TestMount mount(cluster.cluster_file(), cluster.dir() + "/mnt", opts);
  ASSERT_TRUE(mount.ok());
  std::string existing = mount.path("existing");
  {
    int fd = ::open(existing.c_str(), O_CREAT | O_WRONLY, 0644);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::write(fd, "before", 6), 6);
    ASSERT_EQ(::close(fd), 0);
  }
  ASSERT_EQ(::mkdir(mount.path("dir").c_str(), 0755), 0);
  // O_CLOEXEC: the servers restarted below must not inherit it (it would keep the mount busy).
  int open_fd = ::open(existing.c_str(), O_WRONLY | O_CLOEXEC);
  ASSERT_GE(open_fd, 0);

  // Two of three servers go away: killed (connections are refused at once), or frozen with
  // SIGSTOP (requests are accepted and never answered: only timeouts end them).
  std::vector<pid_t> frozen;
  if (outage == Outage::kKilled) {
    cluster.Kill(1);
    cluster.Kill(2);
  } else {
    for (int i : {1, 2}) {
      pid_t pid = cluster.pid(i);
      ASSERT_GT(pid, 0) << "cannot find server " << i;
      ASSERT_EQ(::kill(pid, SIGSTOP), 0);
      frozen.push_back(pid);
    }
  }
  struct Thaw {
    std::vector<pid_t>* pids;
    ~Thaw() {
      for (pid_t p : *pids) ::kill(p, SIGCONT);
    }
  } thaw{&frozen};
  const double limit = 8;
  struct Case {
    const char* what;
    std::function<int()> op;
    int expect = EIO;
  };
  std::vector<Case> cases = {
      {"stat of a name never looked up",
       [&] {
         struct stat st;
         return ::stat(mount.path("never-seen").c_str(), &st) == 0 ? 0 : errno;
       }},
      {"create", [&] { return CreateExclusive(mount.path("new-file")); }},
      {"open of an existing file",
       [&] {
         int fd = ::open(existing.c_str(), O_RDONLY);
         if (fd < 0) return errno;
         ::close(fd);
         return 0;
       }},
      {"mkdir", [&] { return ::mkdir(mount.path("dir/sub").c_str(), 0755) == 0 ? 0 : errno; }},
      {"readdir",
       [&] {
         int e = 0;
         List(mount.path("dir"), &e);
         return e;
       }},
      {"write (buffered: succeeds)",
       [&] { return ::pwrite(open_fd, "during", 6, 0) == 6 ? 0 : errno; }, 0},
      {"fsync", [&] { return ::fsync(open_fd) == 0 ? 0 : errno; }},
  };
  for (const auto& c : cases) {
    auto [e, took] = Bounded(c.op, 20);
    EXPECT_EQ(ErrName(e), ErrName(c.expect)) << c.what << " (took " << took << " s)";
    EXPECT_LT(took, limit) << c.what << " returned " << ErrName(e) << " too late";
    std::fprintf(stderr, "no quorum: %-32s -> %s in %.2f s\n", c.what, ErrName(e).c_str(), took);
  }

  // The servers come back: the same mount works again without being touched.
  if (outage == Outage::kKilled) {
    cluster.Start(1);
    cluster.Start(2);
  } else {
    for (pid_t p : frozen) ::kill(p, SIGCONT);
    frozen.clear();
  }
  auto start = Clock::now();
  int e = -1;
  while (Since(start) < 20) {
    e = Bounded([&] { return CreateExclusive(mount.path("new-file")); }, 20).first;
    if (e == 0 || e == EEXIST) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  EXPECT_TRUE(e == 0 || e == EEXIST) << "create after recovery: " << ErrName(e);
  std::fprintf(stderr, "recovered after %.2f s\n", Since(start));
  struct stat st;
  EXPECT_EQ(::stat(mount.path("never-seen").c_str(), &st), -1);
  EXPECT_EQ(errno, ENOENT);
  EXPECT_EQ(::stat(mount.path("new-file").c_str(), &st), 0) << std::strerror(errno);
  EXPECT_EQ(::mkdir(mount.path("dir/sub2").c_str(), 0755), 0) << std::strerror(errno);
  int le = 0;
  std::set<std::string> names = List(mount.path("dir"), &le);
  EXPECT_EQ(le, 0);
  EXPECT_TRUE(names.count("sub2"));
  // The write that failed to publish is retried by the next fsync on the same descriptor.
  auto [fe, took] = Bounded([&] { return ::fsync(open_fd) == 0 ? 0 : errno; }, 20);
  EXPECT_EQ(ErrName(fe), ErrName(0)) << "fsync after recovery (" << took << " s)";
  EXPECT_EQ(::close(open_fd), 0) << std::strerror(errno);
  char buf[16] = {};
  int fd = ::open(existing.c_str(), O_RDONLY);
  ASSERT_GE(fd, 0) << std::strerror(errno);
  EXPECT_EQ(::read(fd, buf, sizeof(buf)), 6);
  EXPECT_EQ(std::string(buf), "during");
  ::close(fd);
  auto teardown = Clock::now();
  mount.Stop();
  std::fprintf(stderr, "unmounted in %.2f s\n", Since(teardown));
}

// SIGTERM (shutdown, `umount` by an init system) publishes what the mount still buffers, then
// the daemon exits with status 0.
TEST_F(FailureTest, SigtermPublishesBufferedWrites) {
  TestCluster cluster;
  TestMount mount(cluster.cluster_file(), cluster.dir() + "/mnt");
  ASSERT_TRUE(mount.ok());
  std::string path = mount.path("buffered");
  int fd = ::open(path.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
  ASSERT_GE(fd, 0);
  uint64_t h = 1469598103934665603ull;
  std::string block;
  for (uint64_t i = 0; i < 3; ++i) {
    FillBlock(i, &block);
    if (i == 2) block.resize(12345);  // a partial last chunk, never uploaded before the flush
    h = Mix(h, block);
    ASSERT_EQ(::write(fd, block.data(), block.size()), static_cast<ssize_t>(block.size()));
  }
  ASSERT_EQ(::kill(mount.pid(), SIGTERM), 0);
  EXPECT_TRUE(mount.WaitCleanExit(10)) << "no clean exit 10 s after SIGTERM\n" << mount.Log();
  ASSERT_TRUE(mount.Remount());
  ::close(fd);  // the old connection is gone: nothing more happens here
  uint64_t size = 0;
  int err = 0;
  uint64_t got = FileChecksum(path, &size, &err);
  EXPECT_EQ(err, 0) << std::strerror(err);
  EXPECT_EQ(size, 2 * kMiB + 12345);
  EXPECT_EQ(got, h) << "the buffered bytes were not all published at SIGTERM";
}

// An unmount (here lazy, as `umount -l`) ends the daemon by itself, with status 0, and what was
// written before is there at the next mount.
TEST_F(FailureTest, UnmountEndsTheDaemon) {
  TestCluster cluster;
  TestMount mount(cluster.cluster_file(), cluster.dir() + "/mnt");
  ASSERT_TRUE(mount.ok());
  std::string path = mount.path("kept");
  std::string block;
  FillBlock(7, &block);
  {
    int fd = ::open(path.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::write(fd, block.data(), block.size()), static_cast<ssize_t>(block.size()));
    ASSERT_EQ(::close(fd), 0);
  }
  EXPECT_TRUE(mount.UnmountAndWait(10)) << "no clean exit 10 s after the unmount\n" << mount.Log();
  ASSERT_TRUE(mount.Remount());
  uint64_t size = 0;
  int err = 0;
  uint64_t got = FileChecksum(path, &size, &err);
  EXPECT_EQ(err, 0) << std::strerror(err);
  EXPECT_EQ(size, block.size());
  EXPECT_EQ(got, Mix(1469598103934665603ull, block));
}

// Closing a read-only descriptor publishes nothing, so it neither waits for nor fails with
// another descriptor's buffered writes; the writer's own close still reports that they could not
// be made durable.
TEST_F(FailureTest, ReadOnlyCloseIsNotChargedForAnotherDescriptorsWrites) {
  TestCluster cluster;
  TestMountOptions mo;
  mo.op_timeout = 2;
  TestMount mount(cluster.cluster_file(), cluster.dir() + "/mnt", mo);
  ASSERT_TRUE(mount.ok());
  std::string path = mount.path("shared");
  int writer = ::open(path.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
  ASSERT_GE(writer, 0);
  std::string block;
  FillBlock(3, &block);
  block.resize(100000);  // one partial chunk: stays buffered until a flush
  ASSERT_EQ(::write(writer, block.data(), block.size()), static_cast<ssize_t>(block.size()));
  int reader = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(reader, 0);
  std::string got(block.size(), '\0');
  EXPECT_EQ(::read(reader, got.data(), got.size()), static_cast<ssize_t>(got.size()));
  EXPECT_TRUE(got == block) << "this mount's reader sees this mount's unpublished writes";
  cluster.Kill(1);
  cluster.Kill(2);  // no quorum from here on
  auto start = Clock::now();
  EXPECT_EQ(::close(reader), 0);
  EXPECT_LT(Since(start), 1.0) << "a read-only close waited for the writer's upload";
  errno = 0;
  EXPECT_EQ(::close(writer), -1) << "the writer's close must report the failed upload";
  EXPECT_EQ(errno, EIO);
}

// df on a mount with one server frozen (SIGSTOP: its kernel accepts the call, nothing answers)
// answers at once, and still counts that server's space from its last answer: a monitoring
// script's df neither hangs for a call timeout nor sees the file system shrink by a third.
TEST_F(FailureTest, DfAnswersAtOnceWithAServerFrozen) {
  TestCluster cluster;
  TestMount mount(cluster.cluster_file(), cluster.dir() + "/mnt");
  ASSERT_TRUE(mount.ok());
  // A few times first: a server slower than df's 100 ms wait on a loaded machine is counted
  // from its last answer once it has answered one of these.
  struct statvfs before;
  for (int i = 0; i < 3; ++i) {
    ASSERT_EQ(::statvfs(mount.dir().c_str(), &before), 0) << std::strerror(errno);
  }
  ASSERT_GT(before.f_blocks, 0u);
  Frozen frozen(cluster.pid(1));
  ASSERT_TRUE(frozen.ok());
  for (int round = 0; round < 3; ++round) {
    auto [e, took] = Bounded(
        [&] {
          struct statvfs st;
          return ::statvfs(mount.dir().c_str(), &st) == 0 ? 0 : errno;
        },
        20);
    EXPECT_EQ(ErrName(e), ErrName(0));
    EXPECT_LT(took, 2.0) << "df waited on the frozen server (round " << round << ")";
    std::fprintf(stderr, "df with a server frozen: %.3f s\n", took);
  }
  struct statvfs during;
  ASSERT_EQ(::statvfs(mount.dir().c_str(), &during), 0) << std::strerror(errno);
  // All three data dirs share one file system here, so its size is the same as before.
  EXPECT_EQ(during.f_blocks, before.f_blocks) << "the frozen server's space was left out";
}

// Creates or truncates `path` and writes `data` to it whole; false on any error.
bool WriteWhole(const std::string& path, const std::string& data) {
  int fd = ::open(path.c_str(), O_CREAT | O_WRONLY | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return false;
  bool ok = ::write(fd, data.data(), data.size()) == static_cast<ssize_t>(data.size());
  return ::close(fd) == 0 && ok;
}

// An open that finds a file changed since this mount last saw it makes the kernel ask for the
// file's attributes again (KernelCacheCurrent), and the mount answers that from the inode the open
// read instead of reading it a second time: with every server gone after the open, fstat still
// works, and shows the other mount's latest write.
TEST_F(FailureTest, AttributesAfterAnOpenComeFromTheOpensRead) {
  TestCluster cluster;
  TestMountOptions mo;
  mo.op_timeout = 2;
  TestMount writer(cluster.cluster_file(), cluster.dir() + "/mnt-w", mo);
  mo.extra_opts = {"attr_timeout=10"};  // no expiry while the test runs, however slow
  TestMount reader(cluster.cluster_file(), cluster.dir() + "/mnt-r", mo);
  ASSERT_TRUE(writer.ok() && reader.ok());
  const std::string first(1000, 'a'), second(70000, 'b');
  ASSERT_TRUE(WriteWhole(writer.path("f"), first));
  std::string got(first.size(), '\0');
  int fd = ::open(reader.path("f").c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::read(fd, got.data(), got.size()), static_cast<ssize_t>(first.size()));
  ASSERT_TRUE(got == first);
  ::close(fd);
  // The reader's own changes are never hidden: after one, the attributes are read again.
  ASSERT_TRUE(WriteWhole(writer.path("g"), first));
  int g = ::open(reader.path("g").c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(g, 0);
  struct stat before, after;
  ASSERT_EQ(::fstat(g, &before), 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(5));
  ASSERT_EQ(::fsetxattr(g, "user.k", "v", 1, 0), 0) << std::strerror(errno);
  ASSERT_EQ(::fstat(g, &after), 0);
  EXPECT_GT(after.st_ctim.tv_sec * 1000000000LL + after.st_ctim.tv_nsec,
            before.st_ctim.tv_sec * 1000000000LL + before.st_ctim.tv_nsec)
      << "the reader's own setxattr did not move ctime";
  ::close(g);
  ASSERT_TRUE(WriteWhole(writer.path("f"), second));  // the reader's kernel caches the old size
  fd = ::open(reader.path("f").c_str(), O_RDONLY | O_CLOEXEC);  // close-to-open: reads the inode
  ASSERT_GE(fd, 0);
  for (int i = 0; i < 3; ++i) cluster.Kill(i);
  struct stat st;
  EXPECT_EQ(::fstat(fd, &st), 0) << "the mount read the attributes again: " << std::strerror(errno);
  EXPECT_EQ(st.st_size, static_cast<off_t>(second.size()));
  ::close(fd);
}

// After a create in a directory the kernel drops the directory's attributes and asks for them
// again; the mount answers from what its own create left in the directory's inode, for the
// rest of attr_timeout (no read: it succeeds with every server killed, and shows the create's
// mtime). Past attr_timeout it reads the cluster again.
TEST_F(FailureTest, DirectoryAttributesAfterItsOwnCreateComeFromThatCreate) {
  TestCluster cluster;
  TestMountOptions mo;
  mo.op_timeout = 2;
  mo.extra_opts = {"attr_timeout=10"};  // no expiry while the test runs, however slow
  TestMount lasting(cluster.cluster_file(), cluster.dir() + "/mnt-l", mo);
  mo.extra_opts = {"attr_timeout=1"};
  TestMount brief(cluster.cluster_file(), cluster.dir() + "/mnt-b", mo);
  ASSERT_TRUE(lasting.ok() && brief.ok());
  auto create_in = [](const std::string& dir, struct stat* before) {
    if (::mkdir(dir.c_str(), 0755) != 0) return -1;
    int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0 || ::fstat(dfd, before) != 0) return -1;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    int fd = ::openat(dfd, "f", O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0644);
    if (fd < 0 || ::close(fd) != 0) return -1;
    return dfd;
  };
  struct stat d_before, e_before, st;
  int dfd = create_in(lasting.path("d"), &d_before);
  ASSERT_GE(dfd, 0) << std::strerror(errno);
  int efd = create_in(brief.path("e"), &e_before);
  ASSERT_GE(efd, 0) << std::strerror(errno);
  std::this_thread::sleep_for(std::chrono::milliseconds(1200));
  for (int i = 0; i < 3; ++i) cluster.Kill(i);
  EXPECT_EQ(::fstat(dfd, &st), 0) << "the mount read the directory again: " << std::strerror(errno);
  EXPECT_GT(st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec,
            d_before.st_mtim.tv_sec * 1000000000LL + d_before.st_mtim.tv_nsec)
      << "the create's mtime";
  EXPECT_NE(::fstat(efd, &st), 0) << "answered past attr_timeout";
  ::close(dfd);
  ::close(efd);
}

// An open of a file this mount has never read starts fetching the file's first chunk, as the
// lookup before it saw it, beside the open's read of the inode: once the open has returned and
// the fetch has had time to finish, the read needs no server. A lookup that saw an older version
// must not change what the open reads (close-to-open): the read still follows the open's layout.
TEST_F(FailureTest, OpenFetchesTheFirstChunkTheLookupSaw) {
  TestCluster cluster;
  TestMountOptions mo;
  mo.op_timeout = 2;
  mo.extra_opts = {"attr_timeout=10", "entry_timeout=10"};
  TestMount writer(cluster.cluster_file(), cluster.dir() + "/mnt-w", mo);
  TestMount reader(cluster.cluster_file(), cluster.dir() + "/mnt-r", mo);
  ASSERT_TRUE(writer.ok() && reader.ok());
  auto read_fd = [](int fd, std::string* out, int* err) {
    out->assign(256 * 1024, '\0');
    ssize_t n = ::pread(fd, out->data(), out->size(), 0);
    *err = n < 0 ? errno : 0;
    out->resize(n < 0 ? 0 : static_cast<size_t>(n));
  };
  std::string v1(65536, 'a'), v2(65536, 'b'), v3(40000, 'c'), got;
  int err = 0;
  struct stat st;
  // The lookup sees v1, the file then becomes v2: the open reads v2 and so must the read.
  ASSERT_TRUE(WriteWhole(writer.path("stale"), v1)) << std::strerror(errno);
  ASSERT_EQ(::stat(reader.path("stale").c_str(), &st), 0) << std::strerror(errno);
  ASSERT_TRUE(WriteWhole(writer.path("stale"), v2)) << std::strerror(errno);
  int sfd = ::open(reader.path("stale").c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(sfd, 0) << std::strerror(errno);
  read_fd(sfd, &got, &err);
  EXPECT_EQ(err, 0) << std::strerror(err);
  EXPECT_TRUE(got == v2) << "read " << got.size() << " bytes, not the version the open found";
  ::close(sfd);
  // Files the reader learns of from a lookup, from a readdirplus and from a lookup read-ahead
  // listing (the last of 16 names looked up in one directory): each opened, then every server
  // killed once the fetches have had time to finish.
  ASSERT_EQ(::mkdir(writer.path("d").c_str(), 0755), 0) << std::strerror(errno);
  ASSERT_EQ(::mkdir(writer.path("e").c_str(), 0755), 0) << std::strerror(errno);
  std::map<std::string, std::string> files = {{"fresh", v3}, {"d/listed", std::string(30000, 'd')}};
  for (int i = 0; i < 16; ++i) files["e/f" + std::to_string(i)] = std::string(1000 + i, 'e');
  for (const auto& [name, data] : files) {
    ASSERT_TRUE(WriteWhole(writer.path(name), data)) << name << ": " << std::strerror(errno);
  }
  ASSERT_EQ(::stat(reader.path("fresh").c_str(), &st), 0) << std::strerror(errno);
  int lerr = 0;
  EXPECT_EQ(List(reader.path("d"), &lerr).count("listed"), 1u) << std::strerror(lerr);
  for (int i = 0; i < 15; ++i) {
    ASSERT_EQ(::stat(reader.path("e/f" + std::to_string(i)).c_str(), &st), 0);
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(1000));  // the listing completes
  ASSERT_EQ(::stat(reader.path("e/f15").c_str(), &st), 0) << std::strerror(errno);
  // A file of two chunks is not prefetched: an open of it need not read its start.
  std::string big(kMiB + 1, 'g');
  ASSERT_TRUE(WriteWhole(writer.path("big"), big)) << std::strerror(errno);
  ASSERT_EQ(::stat(reader.path("big").c_str(), &st), 0) << std::strerror(errno);
  struct Fds {
    std::map<std::string, int> fds;
    ~Fds() {
      for (const auto& [name, fd] : fds) ::close(fd);
    }
  } open_files;
  for (const char* name : {"fresh", "d/listed", "e/f15", "big"}) {
    int fd = ::open(reader.path(name).c_str(), O_RDONLY | O_CLOEXEC);
    ASSERT_GE(fd, 0) << name << ": " << std::strerror(errno);
    open_files.fds[name] = fd;
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  for (int i = 0; i < 3; ++i) cluster.Kill(i);
  for (const auto& [name, fd] : open_files.fds) {
    read_fd(fd, &got, &err);
    if (name == "big") {
      EXPECT_NE(err, 0) << "a two-chunk file was fetched at open";
      continue;
    }
    EXPECT_EQ(err, 0) << name << ": the read went to the servers: " << std::strerror(err);
    EXPECT_TRUE(got == files[name]) << name << ": read " << got.size() << " bytes";
  }
}

// Writes `blocks` MiB of FillBlock data from block `first` to `path`, fsyncs and closes it;
// returns 0 or the first errno. For Bounded.
int WriteBlocks(const std::string& path, uint64_t first, uint64_t blocks) {
  int fd = ::open(path.c_str(), O_CREAT | O_WRONLY | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return errno;
  std::string block;
  int e = 0;
  for (uint64_t i = 0; i < blocks && e == 0; ++i) {
    FillBlock(first + i, &block);
    if (::write(fd, block.data(), block.size()) != static_cast<ssize_t>(block.size())) e = errno;
  }
  if (e == 0 && ::fsync(fd) != 0) e = errno;
  if (::close(fd) != 0 && e == 0) e = errno;
  return e;
}

uint64_t BlocksChecksum(uint64_t first, uint64_t blocks) {
  uint64_t h = 1469598103934665603ull;
  std::string block;
  for (uint64_t i = 0; i < blocks; ++i) {
    FillBlock(first + i, &block);
    h = Mix(h, block);
  }
  return h;
}

// The chunkservers' disks fill up. Each data dir is a 40 MiB tmpfs (this binary runs in a mount
// namespace of its own). A file larger than the disks answers ENOSPC, not EIO, at fsync; chunk
// puts leave --reserve free, so unlinks, creates and renames still work on the full disks, and
// `fsck --gc` gives the failed file's space back. When something else takes the rest of the
// disks too, metadata changes fail within op_timeout instead of hanging, work again once space
// is freed (each server reopens its metadata store by itself), and every server restarts with
// all it acknowledged: a server whose LevelDB log write had failed part-way used to refuse to
// start ("Corruption: checksum mismatch").
TEST_F(FailureTest, FullDisksAnswerEnospcAndRecoverOnceSpaceIsFreed) {
  ASSERT_EQ(::geteuid(), 0u) << "this test mounts tmpfs file systems and needs root";
  TestClusterOptions co;
  co.start = false;
  co.server_args = {"--reserve", "8MiB"};
  TestCluster cluster(co);
  TmpfsDisks disks;
  ASSERT_NO_FATAL_FAILURE(StartOnTmpfs(cluster, "40m", &disks));
  TestMountOptions mo;
  mo.op_timeout = 3;
  TestMount mount(cluster.cluster_file(), cluster.dir() + "/mnt", mo);
  ASSERT_TRUE(mount.ok());
  // df counts what files can take: each server's free space less its reserve, over N.
  struct statvfs fs_stats;
  ASSERT_EQ(::statvfs(mount.dir().c_str(), &fs_stats), 0) << std::strerror(errno);
  uint64_t avail = static_cast<uint64_t>(fs_stats.f_bavail) * fs_stats.f_frsize;
  EXPECT_LE(avail, 32 * kMiB);
  EXPECT_GT(avail, 28 * kMiB);
  auto fsck = [&](std::vector<std::string> args) {
    args.insert(args.begin(), {"fsck", "--cluster", cluster.cluster_file(), "--timeout", "3"});
    return RunCli(args, cluster.dir(), 60);
  };

  // 48 MiB on disks that hold about 32 MiB of chunks each.
  auto [big_err, big_took] = Bounded([&] { return WriteBlocks(mount.path("big"), 0, 48); }, 60);
  EXPECT_EQ(ErrName(big_err), ErrName(ENOSPC)) << "after " << big_took << " s";
  // Its last close dropped the writes that could not be published: this mount shows the file as
  // the cluster has it (empty), not 48 MiB that no other mount sees (RELEASE follows close).
  struct stat big_st {};
  for (int i = 0; i < 40; ++i) {
    ASSERT_EQ(::stat(mount.path("big").c_str(), &big_st), 0) << std::strerror(errno);
    if (big_st.st_size == 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_EQ(big_st.st_size, 0);
  EXPECT_NE(mount.Log().find("could not be published"), std::string::npos) << mount.Log();
  // `quorumfs status` says which nodes are full.
  CliResult status = RunCli({"status", "--cluster", cluster.cluster_file()}, cluster.dir(), 30);
  EXPECT_NE(status.out.find("FULL: new chunks refused"), std::string::npos) << status.All();

  // The reserve keeps metadata writable.
  EXPECT_EQ(::unlink(mount.path("big").c_str()), 0) << std::strerror(errno);
  ASSERT_EQ(::mkdir(mount.path("d").c_str(), 0755), 0) << std::strerror(errno);
  int fd = ::open(mount.path("d/note").c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
  ASSERT_GE(fd, 0) << std::strerror(errno);
  ASSERT_EQ(::write(fd, "still here", 10), 10);
  ASSERT_EQ(::close(fd), 0) << std::strerror(errno);
  ASSERT_EQ(::rename(mount.path("d/note").c_str(), mount.path("d/kept").c_str()), 0)
      << std::strerror(errno);

  // GC takes back what the failed file's chunks held; then 16 MiB fit.
  CliResult gc = fsck({"--gc", "--grace", "0", "--no-writers"});
  EXPECT_LE(gc.code, 1) << gc.All();
  auto [after_err, after_took] =
      Bounded([&] { return WriteBlocks(mount.path("after"), 100, 16); }, 60);
  ASSERT_EQ(ErrName(after_err), ErrName(0)) << "after " << after_took << " s";

  // Something else fills the rest of every disk: metadata changes fail, and do not hang.
  for (const auto& d : disks.dirs) ASSERT_NO_FATAL_FAILURE(FillWithBallast(d + "/ballast"));
  auto create = [](const std::string& path, int flags) {
    int f = ::open(path.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC | flags, 0644);
    if (f < 0) return errno;
    ::close(f);
    return 0;
  };
  int failed_create = 0;
  for (int i = 0; i < 200 && failed_create == 0; ++i) {
    std::string p = mount.path("x" + std::to_string(i));
    auto [e, took] = Bounded([&] { return create(p, O_EXCL); }, 30);
    ASSERT_NE(e, -1) << "create x" << i << " hung for " << took << " s";
    failed_create = e;
  }
  EXPECT_TRUE(failed_create == ENOSPC || failed_create == EIO) << ErrName(failed_create);

  // Space comes back: so do metadata changes, without a restart.
  for (const auto& d : disks.dirs) ASSERT_EQ(::unlink((d + "/ballast").c_str()), 0);
  int e = -1;
  auto until = Clock::now() + std::chrono::seconds(10);
  while (e != 0 && Clock::now() < until) {
    e = Bounded([&] { return create(mount.path("y"), 0); }, 30).first;
    if (e != 0) std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  EXPECT_EQ(ErrName(e), ErrName(0)) << "a create once space was freed";

  // Every server starts again, and nothing acknowledged is lost.
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(cluster.Terminate(i), 0) << cluster.Log(i);
    ASSERT_NO_FATAL_FAILURE(cluster.Start(i));
  }
  CliResult repair = fsck({"--repair", "--recount-quiet", "2"});  // nothing runs meanwhile
  EXPECT_LE(repair.code, 1) << repair.All();
  CliResult check = fsck({});
  EXPECT_EQ(check.code, 0) << check.All();
  uint64_t size = 0;
  int err = 0;
  uint64_t sum = 0;
  for (int attempt = 0; attempt < 20; ++attempt) {  // the mount reconnects
    sum = FileChecksum(mount.path("after"), &size, &err);
    if (err == 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
  }
  EXPECT_EQ(err, 0) << std::strerror(err);
  EXPECT_EQ(size, 16 * kMiB);
  EXPECT_EQ(sum, BlocksChecksum(100, 16));
  char buf[16] = {};
  int kept = ::open(mount.path("d/kept").c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(kept, 0) << std::strerror(errno);
  EXPECT_EQ(::read(kept, buf, sizeof(buf)), 10);
  EXPECT_EQ(std::string(buf), "still here");
  ::close(kept);
}

// A file renamed over while this mount has it open (an editor's save, a package upgrade
// replacing a running binary) lives on through its descriptor as an unlinked file does: its
// inode stays unlinked-open under the mount's lease, so `fsck --gc` keeps its chunks, and
// reads through the descriptor still return its bytes after the GC. (It used to be marked
// dying at once, and the GC took its chunks.)
TEST_F(FailureTest, AFileRenamedOverWhileOpenKeepsItsDataThroughGc) {
  TestCluster cluster;
  TestMountOptions mo;
  mo.extra_opts = {"cache_size=0"};  // reads through the descriptor go to the servers
  TestMount mount(cluster.cluster_file(), cluster.dir() + "/mnt", mo);
  ASSERT_TRUE(mount.ok());
  ASSERT_EQ(ErrName(WriteBlocks(mount.path("victim"), 0, 3)), ErrName(0));
  ASSERT_EQ(ErrName(WriteBlocks(mount.path("new"), 10, 1)), ErrName(0));
  int fd = ::open(mount.path("victim").c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0) << std::strerror(errno);
  ASSERT_EQ(::rename(mount.path("new").c_str(), mount.path("victim").c_str()), 0)
      << std::strerror(errno);
  struct stat st {};
  ASSERT_EQ(::fstat(fd, &st), 0) << std::strerror(errno);
  EXPECT_EQ(st.st_nlink, 0u);
  CliResult gc = RunCli({"fsck", "--cluster", cluster.cluster_file(), "--timeout", "3", "--gc",
                         "--grace", "0", "--no-writers"},
                        cluster.dir(), 60);
  EXPECT_LE(gc.code, 1) << gc.All();
  // Nothing of the old file may come from the kernel's cache either.
  ASSERT_EQ(::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED), 0);
  std::string got, block;
  uint64_t h = 1469598103934665603ull;
  for (int i = 0; i < 3; ++i) {
    block.assign(kMiB, '\0');
    ASSERT_EQ(::pread(fd, block.data(), kMiB, static_cast<off_t>(i) * kMiB),
              static_cast<ssize_t>(kMiB))
        << "block " << i << ": " << std::strerror(errno);
    h = Mix(h, block);
  }
  EXPECT_EQ(h, BlocksChecksum(0, 3)) << "the replaced file's bytes changed under its descriptor";
  EXPECT_EQ(::close(fd), 0);
  uint64_t size = 0;
  int err = 0;
  EXPECT_EQ(FileChecksum(mount.path("victim"), &size, &err), BlocksChecksum(10, 1));
  EXPECT_EQ(err, 0) << std::strerror(err);
}

TEST_F(FailureTest, ServersKilledOperationsFailFastAndRecover) { NoQuorum(Outage::kKilled); }

TEST_F(FailureTest, ServersFrozenOperationsTimeOutAndRecover) { NoQuorum(Outage::kFrozen); }

// An operation that meets a transaction a crashed client left pending waits until the
// transaction may be aborted (past its deadline), even when that is longer than the mount's
// op_timeout: it then succeeds. (Its wait used to be op_timeout, equal to the default
// transaction deadline, so an unlink that met a dead mount's rename could fail with EBUSY just
// as the rename expired; FailureTest.MountKilledDuringRenameStorm caught it in CI.)
TEST_F(FailureTest, OperationsWaitOutACrashedClientsTransaction) {
  TestCluster cluster;
  TestMountOptions mo;
  mo.op_timeout = 1;
  TestMount mount(cluster.cluster_file(), cluster.dir() + "/mnt", mo);
  ASSERT_TRUE(mount.ok());
  ASSERT_EQ(::mkdir(mount.path("d").c_str(), 0755), 0) << std::strerror(errno);
  int fd = ::open(mount.path("a").c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
  ASSERT_GE(fd, 0) << std::strerror(errno);
  ASSERT_EQ(::close(fd), 0);
  struct stat d;
  ASSERT_EQ(::stat(mount.path("d").c_str(), &d), 0);
  {
    // A client that dies with its rename's intents attached: pending for 4 s.
    ClusterClientOptions o;
    o.ns.test_crash_txn_after_intents = true;
    o.ns.txn_timeout_ns = 4'000'000'000;
    ClusterClient crasher(cluster.config(), o);
    Status s = crasher.RunSync<Status>([&] {
      return crasher.ns().Rename(kRootIno, "a", static_cast<uint64_t>(d.st_ino), "a", 0);
    });
    ASSERT_EQ(s.code(), StatusCode::kUnavailable) << s.ToString();
  }
  auto [e, took] = Bounded([&] { return ::unlink(mount.path("a").c_str()) == 0 ? 0 : errno; }, 30);
  EXPECT_EQ(ErrName(e), ErrName(0)) << "unlink after " << took << " s";
  EXPECT_GT(took, 1.5) << "the unlink waited for the pending rename";
  int le = 0;
  EXPECT_TRUE(List(mount.path("d"), &le).empty()) << "the rename was rolled back";
  EXPECT_EQ(::rmdir(mount.path("d").c_str()), 0) << std::strerror(errno);
}

// Two threads move files between d1 and d2 and a third renames files within d2 when the mount
// is killed; after a remount every file is under exactly one name, every file can be moved
// back or removed, and d2 can be removed (no count left high).
TEST_F(FailureTest, MountKilledDuringRenameStorm) {
  TestCluster cluster;
  TestMount mount(cluster.cluster_file(), cluster.dir() + "/mnt");
  ASSERT_TRUE(mount.ok());
  const int files = 12;
  const int kWithin = 4;  // files renamed within d2 (to a new name: outside their transaction)
  std::string d1 = mount.path("d1"), d2 = mount.path("d2");
  ASSERT_EQ(::mkdir(d1.c_str(), 0755), 0);
  for (int i = 0; i < files; ++i) {
    std::string p = d1 + "/f" + std::to_string(i);
    int fd = ::open(p.c_str(), O_CREAT | O_WRONLY, 0644);
    ASSERT_GE(fd, 0);
    std::string content = "file " + std::to_string(i);
    ASSERT_EQ(::write(fd, content.data(), content.size()), static_cast<ssize_t>(content.size()));
    ASSERT_EQ(::close(fd), 0);
  }
  auto check = [&](const std::string& when) {
    int e1 = 0, e2 = 0;
    std::set<std::string> in1 = List(d1, &e1), in2 = List(d2, &e2);
    ASSERT_EQ(e1, 0) << when << ": readdir d1: " << std::strerror(e1);
    ASSERT_EQ(e2, 0) << when << ": readdir d2: " << std::strerror(e2);
    // d2 also holds the files renamed within it (w<i> <-> v<i>): each under one of its names.
    for (int i = 0; i < kWithin; ++i) {
      std::string w = "w" + std::to_string(i), v = "v" + std::to_string(i);
      EXPECT_EQ(in2.count(w) + in2.count(v), 1u) << when << ": " << w << " / " << v;
      in2.erase(w);
      in2.erase(v);
    }
    for (int i = 0; i < files; ++i) {
      std::string name = "f" + std::to_string(i);
      int copies = static_cast<int>(in1.count(name) + in2.count(name));
      EXPECT_EQ(copies, 1) << when << ": " << name << " is in " << copies << " directories";
      std::string dir = in1.count(name) ? d1 : d2;
      int fd = ::open((dir + "/" + name).c_str(), O_RDONLY);
      EXPECT_GE(fd, 0) << when << ": open " << name << ": " << std::strerror(errno);
      if (fd >= 0) {
        char buf[32] = {};
        ssize_t n = ::read(fd, buf, sizeof(buf));
        EXPECT_EQ(std::string(buf, n > 0 ? n : 0), "file " + std::to_string(i)) << when;
        ::close(fd);
      }
    }
    EXPECT_EQ(in1.size() + in2.size(), static_cast<size_t>(files)) << when;
  };
  for (int round = 0; round < 3 && !HasFailure(); ++round) {
    std::string r = "round " + std::to_string(round) + ": ";
    ASSERT_EQ(::mkdir(d2.c_str(), 0755), 0) << r << std::strerror(errno);
    for (int i = 0; i < kWithin; ++i) {
      int fd = ::open((d2 + "/w" + std::to_string(i)).c_str(), O_CREAT | O_WRONLY, 0644);
      ASSERT_GE(fd, 0) << r << std::strerror(errno);
      ASSERT_EQ(::close(fd), 0);
    }
    std::atomic<bool> stop{false};
    std::atomic<int> renames{0};
    // Two threads move files between d1 and d2 until the mount dies under them.
    auto storm = [&](uint32_t seed) {
      std::mt19937 rng(seed);
      while (!stop) {
        int i = static_cast<int>(rng() % files);
        std::string name = "f" + std::to_string(i);
        std::string a = d1 + "/" + name, b = d2 + "/" + name;
        int rc = ::rename(a.c_str(), b.c_str());
        if (rc != 0 && errno == ENOENT) rc = ::rename(b.c_str(), a.c_str());
        if (rc == 0) ++renames;
      }
    };
    // A third renames files within d2 between two names until the mount dies under it.
    auto within = [&]() {
      std::mt19937 rng(100 + round);
      while (!stop) {
        std::string i = std::to_string(rng() % kWithin);
        std::string w = d2 + "/w" + i, v = d2 + "/v" + i;
        int rc = ::rename(w.c_str(), v.c_str());
        if (rc != 0 && errno == ENOENT) rc = ::rename(v.c_str(), w.c_str());
        if (rc == 0) ++renames;
      }
    };
    std::thread t1(storm, 1 + round * 2), t2(storm, 2 + round * 2), t3(within);
    auto start = Clock::now();
    int target = 30 + 17 * round;
    while (renames < target && Since(start) < 30) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    mount.Kill();  // SIGKILL mid-storm
    stop = true;
    t1.join();
    t2.join();
    t3.join();
    std::fprintf(stderr, "%s%d renames before the kill\n", r.c_str(), renames.load());
    ASSERT_TRUE(mount.Remount());
    check(r + "right after the remount");
    // Every file can be moved back (renames meeting the dead mount's pending transactions wait
    // for them to expire or abort them); then d2 is empty and can be removed.
    auto back = Clock::now();
    for (int i = 0; i < files; ++i) {
      std::string name = "f" + std::to_string(i);
      struct stat st;
      if (::stat((d2 + "/" + name).c_str(), &st) == 0) {
        auto [e, took] = Bounded(
            [&] {
              return ::rename((d2 + "/" + name).c_str(), (d1 + "/" + name).c_str()) == 0 ? 0
                                                                                         : errno;
            },
            60);
        EXPECT_EQ(ErrName(e), ErrName(0)) << r << "moving " << name << " back (" << took << " s)";
      }
    }
    std::fprintf(stderr, "%smoved everything back in %.1f s\n", r.c_str(), Since(back));
    check(r + "after moving everything back");
    // The files renamed within d2 are removed (a rename pending from the dead mount waits, as
    // above); if a rename killed midway had left d2's count high, the rmdir below would fail.
    // A rename the mount sent just before it died can still be decided after the remount (its
    // commit reached one server, and the next read of the transaction that hears that server
    // finishes it): the file then moves to its other name between the stat and the unlink,
    // and is removed under that one.
    for (int i = 0; i < kWithin; ++i) {
      const std::string w = "w" + std::to_string(i), v = "v" + std::to_string(i);
      for (int attempt = 0; attempt < 2; ++attempt) {
        struct stat st;
        std::string name = ::stat((d2 + "/" + w).c_str(), &st) == 0   ? w
                           : ::stat((d2 + "/" + v).c_str(), &st) == 0 ? v
                                                                      : "";
        if (name.empty()) {
          ADD_FAILURE() << r << w << " / " << v << " is under neither name";
          break;
        }
        auto [e, took] =
            Bounded([&] { return ::unlink((d2 + "/" + name).c_str()) == 0 ? 0 : errno; }, 60);
        if (e == ENOENT && attempt == 0) {
          std::fprintf(stderr, "%s%s moved to its other name after the remount\n", r.c_str(),
                       name.c_str());
          continue;
        }
        EXPECT_EQ(ErrName(e), ErrName(0)) << r << "unlink " << name << " (" << took << " s)";
        break;
      }
    }
    int e2 = 0;
    EXPECT_TRUE(List(d2, &e2).empty()) << r;
    // A transaction the dead mount left pending may still hold an entry of d2 (rmdir reports
    // ENOTEMPTY while it is pending); past its deadline (10 s) it is aborted and d2 empties.
    auto rm = Clock::now();
    int rc = -1;
    while ((rc = ::rmdir(d2.c_str())) != 0 && errno == ENOTEMPTY && Since(rm) < 15) {
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    EXPECT_EQ(rc, 0) << r << "d2 should be empty: " << std::strerror(errno);
    if (Since(rm) > 0.5) std::fprintf(stderr, "%srmdir took %.1f s\n", r.c_str(), Since(rm));
    struct stat st;
    ASSERT_EQ(::stat(d1.c_str(), &st), 0);
    EXPECT_EQ(st.st_nlink, 2u) << r;
  }
}

// Network partitions, on separate "hosts": three servers and two mounts, each in a network
// namespace of its own, every mount wired to every server by a link of its own
// (tests/test_netns.h). A cut link drops packets silently, as a failed switch port does: unlike
// a killed server (refused at once) or a frozen one (its kernel still acknowledges), a
// connection over it just stops carrying bytes.
class PartitionTest : public FailureTest {
 protected:
  void SetUp() override {
    FailureTest::SetUp();
    if (IsSkipped()) return;
    std::string why;
    if (!NetLab::Available(&why)) GTEST_SKIP() << "partition tests skipped: " << why;
    lab_ = std::make_unique<NetLab>(3, 2);
    ASSERT_TRUE(lab_->ok());
    StartLabCluster(*lab_, 3, 2, &cluster_, &mounts_);
    for (const auto& m : mounts_) ASSERT_TRUE(m->ok());
  }
  void TearDown() override {
    mounts_.clear();  // the mounts go first: their daemons must not wait on a dead network
    cluster_.reset();
    lab_.reset();
  }
  TestMount& m(int c) { return *mounts_[c]; }
  CliResult Fsck(std::vector<std::string> args) {
    args.insert(args.begin(), {"fsck", "--cluster", cluster_->cluster_file(), "--timeout", "3"});
    return RunCli(args, cluster_->dir(), 120, lab_->client_ns(0));
  }
  // Retries `op` (0 or an errno) until it returns 0 or `limit` s have passed; returns the
  // seconds it took, or -1.
  static double SecondsUntilOk(const std::function<int()>& op, double limit) {
    auto start = Clock::now();
    while (Since(start) < limit) {
      if (Bounded(op, limit).first == 0) return Since(start);
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return -1;
  }

  std::unique_ptr<NetLab> lab_;
  std::unique_ptr<TestCluster> cluster_;
  std::vector<std::unique_ptr<TestMount>> mounts_;
};

// A mount cut off from two of three servers fails its changes with EIO within op_timeout while
// the mount on the majority side goes on; once the links heal, the cut-off mount works again
// within seconds, and sees what the other wrote meanwhile.
TEST_F(PartitionTest, MinoritySideFailsInTimeAndCatchesUpAfterTheHeal) {
  ASSERT_EQ(ErrName(WriteBlocks(m(0).path("before"), 0, 2)), ErrName(0));
  ASSERT_TRUE(lab_->Cut(0, 1) && lab_->Cut(0, 2));

  auto [ce, ctook] = Bounded([&] { return CreateExclusive(m(0).path("minority")); }, 30);
  EXPECT_EQ(ErrName(ce), ErrName(EIO)) << "create on the minority side";
  EXPECT_LT(ctook, 8) << "create on the minority side returned " << ErrName(ce) << " too late";
  auto [we, wtook] = Bounded([&] { return WriteBlocks(m(0).path("lost"), 50, 2); }, 30);
  EXPECT_NE(ErrName(we), ErrName(0)) << "a write acknowledged by one server of three";
  EXPECT_LT(wtook, 15);

  auto [me, mtook] = Bounded([&] { return WriteBlocks(m(1).path("majority"), 10, 3); }, 30);
  EXPECT_EQ(ErrName(me), ErrName(0)) << "write on the majority side (" << mtook << " s)";
  uint64_t size = 0;
  int err = 0;
  EXPECT_EQ(FileChecksum(m(1).path("before"), &size, &err), BlocksChecksum(0, 2));
  EXPECT_EQ(err, 0) << std::strerror(err);

  ASSERT_TRUE(lab_->Heal(0, 1) && lab_->Heal(0, 2));
  double back = SecondsUntilOk([&] { return CreateExclusive(m(0).path("after-heal")); }, 60);
  std::fprintf(stderr, "the cut-off mount's first create succeeded %.2f s after the heal\n", back);
  EXPECT_GE(back, 0) << "the cut-off mount never recovered";
  EXPECT_LT(back, 8) << "the cut-off mount took too long to recover";
  EXPECT_EQ(FileChecksum(m(0).path("majority"), &size, &err), BlocksChecksum(10, 3));
  EXPECT_EQ(err, 0) << std::strerror(err);
  EXPECT_EQ(size, 3 * kMiB);
  struct stat st {};
  EXPECT_EQ(::stat(m(1).path("after-heal").c_str(), &st), 0) << std::strerror(errno);
}

// Each mount reaches a different two of the three servers: both have quorums (they meet in the
// middle server) and both go on. Each reads what the other wrote, and when both create the same
// names at once, each name has exactly one creator and both mounts see its bytes. After the
// heal, fsck copies the chunks each side could put on two servers only to the third, and finds
// the cluster clean.
TEST_F(PartitionTest, OverlappingQuorumsBothProceedAndAgree) {
  ASSERT_TRUE(lab_->Cut(0, 2) && lab_->Cut(1, 0));
  for (int c = 0; c < 2; ++c) {
    std::string name = "from" + std::to_string(c);
    auto [e, took] = Bounded([&] { return WriteBlocks(m(c).path(name), 100 * c, 3); }, 60);
    ASSERT_EQ(ErrName(e), ErrName(0)) << name << " (" << took << " s)";
  }
  for (int c = 0; c < 2; ++c) {
    uint64_t size = 0;
    int err = 0;
    uint64_t sum = FileChecksum(m(1 - c).path("from" + std::to_string(c)), &size, &err);
    EXPECT_EQ(err, 0) << std::strerror(err);
    EXPECT_EQ(size, 3 * kMiB);
    EXPECT_EQ(sum, BlocksChecksum(100 * c, 3)) << "from" << c << " read through the other mount";
  }

  constexpr int kNames = 40;
  std::vector<int> result[2];
  std::vector<std::thread> threads;
  for (int c = 0; c < 2; ++c) {
    result[c].assign(kNames, -1);
    threads.emplace_back([&, c] {
      for (int i = 0; i < kNames; ++i) {
        std::string path = m(c).path("race" + std::to_string(i));
        int fd = ::open(path.c_str(), O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0644);
        if (fd < 0) {
          result[c][i] = errno;
          continue;
        }
        std::string mark = "mount " + std::to_string(c);
        result[c][i] = ::write(fd, mark.data(), mark.size()) == ssize_t(mark.size()) ? 0 : errno;
        if (::close(fd) != 0 && result[c][i] == 0) result[c][i] = errno;
      }
    });
  }
  for (auto& t : threads) t.join();
  for (int i = 0; i < kNames; ++i) {
    std::string name = "race" + std::to_string(i);
    int wins = (result[0][i] == 0) + (result[1][i] == 0);
    EXPECT_EQ(wins, 1) << name << ": " << ErrName(result[0][i]) << " / " << ErrName(result[1][i]);
    if (wins != 1) continue;
    int winner = result[0][i] == 0 ? 0 : 1;
    EXPECT_EQ(ErrName(result[1 - winner][i]), ErrName(EEXIST)) << name;
    for (int c = 0; c < 2; ++c) {
      char buf[32] = {};
      int fd = ::open(m(c).path(name).c_str(), O_RDONLY | O_CLOEXEC);
      ASSERT_GE(fd, 0) << name << " through mount " << c << ": " << std::strerror(errno);
      EXPECT_EQ(::read(fd, buf, sizeof(buf) - 1), 7) << name << " through mount " << c;
      EXPECT_EQ(std::string(buf), "mount " + std::to_string(winner)) << name;
      ::close(fd);
    }
  }

  ASSERT_TRUE(lab_->Heal(0, 2) && lab_->Heal(1, 0));
  CliResult repair = Fsck({"--repair", "--recount-quiet", "2"});  // nothing runs meanwhile
  EXPECT_EQ(repair.code, 1) << "chunks on two servers of three should need copying\n"
                            << repair.All();
  CliResult check = Fsck({});
  EXPECT_EQ(check.code, 0) << check.All();
}

// A server the network cuts off silently costs the mount one call timeout, not one per call:
// the mount notices that the connection answers nothing and stops waiting on it. Before, every
// chunk read that tried that server first waited out a whole call timeout (a 3 MiB file took
// 3-6 s to read instead of 0.03 s), and so did every listing; every create waited 100 ms for
// its all-replica round.
TEST_F(PartitionTest, ASilentServerCostsOneTimeoutNotOnePerCall) {
  constexpr int kFiles = 6;
  for (int f = 0; f < kFiles; ++f) {
    ASSERT_EQ(ErrName(WriteBlocks(m(1).path("f" + std::to_string(f)), 10 * f, 3)), ErrName(0));
  }
  ASSERT_EQ(::mkdir(m(1).path("d").c_str(), 0755), 0) << std::strerror(errno);
  ASSERT_EQ(::mkdir(m(1).path("listed").c_str(), 0755), 0) << std::strerror(errno);
  for (int i = 0; i < 20; ++i) {
    ASSERT_EQ(ErrName(CreateExclusive(m(1).path("listed/" + std::to_string(i)))), ErrName(0));
  }
  auto creates = [&](const std::string& prefix, int n) {
    auto start = Clock::now();
    for (int i = 0; i < n; ++i) {
      EXPECT_EQ(ErrName(CreateExclusive(m(0).path("d/" + prefix + std::to_string(i)))), ErrName(0));
    }
    return Since(start);
  };
  auto reads = [&](int first, int count) {
    auto start = Clock::now();
    for (int f = first; f < first + count; ++f) {
      uint64_t size = 0;
      int err = 0;
      EXPECT_EQ(FileChecksum(m(0).path("f" + std::to_string(f)), &size, &err),
                BlocksChecksum(10 * f, 3));
      EXPECT_EQ(err, 0) << "f" << f << ": " << std::strerror(err);
    }
    return Since(start);
  };
  auto listing = [&] {
    auto start = Clock::now();
    int err = 0;
    EXPECT_EQ(List(m(0).path("listed"), &err).size(), 20u);  // never listed by this mount
    EXPECT_EQ(err, 0) << std::strerror(err);
    return Since(start);
  };
  double healthy_creates = creates("h", 30);
  ASSERT_TRUE(lab_->Cut(0, 2));
  // The first calls to the cut-off server wait out the call timeout (3 s with op_timeout=3).
  double first = creates("x", 30);
  // From then on the mount does not wait for it.
  double later_creates = creates("y", 30);
  double later_reads = reads(0, kFiles);
  double later_listing = listing();
  std::fprintf(stderr,
               "healthy: 30 creates %.2f s; cut off: 30 creates %.2f s, then 30 creates %.2f s, "
               "%d reads of 3 MiB %.2f s, a listing %.2f s\n",
               healthy_creates, first, later_creates, kFiles, later_reads, later_listing);
  EXPECT_LT(first, 8);
  EXPECT_LT(later_creates, 1.5 + 2 * healthy_creates);
  EXPECT_LT(later_reads, 2);
  EXPECT_LT(later_listing, 1);
  // And once the link heals, the server is used again: a write reaches all three.
  ASSERT_TRUE(lab_->Heal(0, 2));
  // The mount reconnects when a call comes after its backoff (at most 1 s): keep it busy.
  for (int i = 0; i < 10; ++i) {
    EXPECT_EQ(ErrName(CreateExclusive(m(0).path("d/z" + std::to_string(i)))), ErrName(0));
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
  }
  ASSERT_EQ(ErrName(WriteBlocks(m(0).path("after"), 500, 2)), ErrName(0));
  // What was written during the cut is on two servers of three until fsck copies it.
  CliResult repair = Fsck({"--repair", "--recount-quiet", "2"});  // nothing runs meanwhile
  EXPECT_EQ(repair.code, 1) << repair.All();
  EXPECT_EQ(repair.out.find("[/after]"), std::string::npos) << "written after the heal:\n"
                                                            << repair.All();
  CliResult check = Fsck({});
  EXPECT_EQ(check.code, 0) << check.All();
}

// Established TCP connections to port 7100 (a lab server's) in network namespace `ns`; -1 if
// `ss` could not be run.
int ServerConnections(const std::string& ns) {
  std::string cmd =
      "ip netns exec " + ns + " ss -Htn state established '( sport = :7100 )' 2>/dev/null";
  FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) return -1;
  int lines = 0;
  char buf[512];
  while (std::fgets(buf, sizeof(buf), p)) ++lines;
  return ::pclose(p) == 0 ? lines : -1;
}

// A client cut off for good (its host crashed, a cable pulled) never closes its connections;
// the server drops them after its keepalive (`--keepalive 1` here: 1 s idle, then 3 probes 1 s
// apart) instead of holding them, with their descriptors and RPC state, for as long as it runs.
TEST_F(FailureTest, AServerDropsTheConnectionsOfAClientThatIsGone) {
  std::string why;
  if (!NetLab::Available(&why)) GTEST_SKIP() << "partition tests skipped: " << why;
  NetLab lab(3, 1);
  ASSERT_TRUE(lab.ok());
  TestClusterOptions co;
  for (int s = 0; s < 3; ++s) {
    co.netns.push_back(lab.server_ns(s));
    co.hosts.push_back(lab.server_host(s));
  }
  co.server_args = {"--keepalive", "1"};
  TestCluster cluster(co);
  TestMountOptions mo;
  mo.op_timeout = 3;
  mo.netns = lab.client_ns(0);
  auto mount = std::make_unique<TestMount>(cluster.cluster_file(), cluster.dir() + "/m0", mo);
  ASSERT_TRUE(mount->ok());
  ASSERT_EQ(CreateExclusive(mount->path("f")), 0);  // the mount talks to every server
  const int before = ServerConnections(lab.server_ns(1));
  ASSERT_GE(before, 1) << "the mount has no connection to server 1";
  // Idle for longer than the keepalive: a live client's connection stays.
  std::this_thread::sleep_for(std::chrono::seconds(5));
  EXPECT_EQ(ServerConnections(lab.server_ns(1)), before) << "dropped a live client";
  ASSERT_TRUE(lab.Cut(0, 1));
  auto start = Clock::now();
  int now = before;
  while (Since(start) < 20 && (now = ServerConnections(lab.server_ns(1))) > 0) {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  EXPECT_EQ(now, 0) << "server 1 still holds the cut-off client's connections after "
                    << Since(start) << " s";
  if (now == 0) std::fprintf(stderr, "connections dropped %.1f s after the cut\n", Since(start));
  EXPECT_GT(ServerConnections(lab.server_ns(0)), 0) << "server 0 dropped a live client";
  mount.reset();  // before the cluster: its daemon must not wait on the cut link
}

// A link to one server that keeps failing and coming back (cut 2 s, up 2 s, five times) never
// shows to programs on a mount that always reaches a quorum: every create, write, fsync, read,
// rename and unlink of a busy workload succeeds, each within op_timeout plus one call timeout,
// and nothing written is lost or changed.
TEST_F(PartitionTest, AFlappingLinkToOneServerNeverFailsAnOperation) {
  ASSERT_EQ(::mkdir(m(0).path("w").c_str(), 0755), 0) << std::strerror(errno);
  std::atomic<bool> stop{false};
  std::atomic<int> ops{0};
  std::vector<std::string> failures;
  double slowest = 0;
  std::thread worker([&] {
    std::string block;
    for (int i = 0; !stop && failures.size() < 5; ++i) {
      std::string a = m(0).path("w/a" + std::to_string(i));
      std::string b = m(0).path("w/b" + std::to_string(i));
      auto step = [&](const char* what, const std::function<int()>& op) {
        auto start = Clock::now();
        int e = op();
        slowest = std::max(slowest, Since(start));
        if (e != 0)
          failures.push_back(std::string(what) + " " + std::to_string(i) + ": " + ErrName(e));
        ++ops;
        return e == 0;
      };
      FillBlock(1000 + i, &block);
      block.resize(64 * 1024 + 7 * i);
      uint64_t sum = Mix(1469598103934665603ull, block);
      if (!step("write+fsync", [&] {
            int fd = ::open(a.c_str(), O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0644);
            if (fd < 0) return errno;
            int e = ::write(fd, block.data(), block.size()) == ssize_t(block.size()) ? 0 : errno;
            if (e == 0 && ::fsync(fd) != 0) e = errno;
            if (::close(fd) != 0 && e == 0) e = errno;
            return e;
          })) {
        continue;
      }
      if (!step("rename", [&] { return ::rename(a.c_str(), b.c_str()) == 0 ? 0 : errno; }))
        continue;
      step("read", [&] {
        uint64_t size = 0;
        int err = 0;
        uint64_t got = FileChecksum(b, &size, &err);
        if (err != 0) return err;
        return size == block.size() && got == sum ? 0 : EBADMSG;
      });
      if (i % 2 == 0) step("unlink", [&] { return ::unlink(b.c_str()) == 0 ? 0 : errno; });
    }
  });
  for (int flap = 0; flap < 5; ++flap) {
    ASSERT_TRUE(lab_->Cut(0, 2));
    std::this_thread::sleep_for(std::chrono::seconds(2));
    ASSERT_TRUE(lab_->Heal(0, 2));
    std::this_thread::sleep_for(std::chrono::seconds(2));
  }
  stop = true;
  worker.join();
  std::fprintf(stderr, "%d operations while the link flapped, the slowest %.2f s\n", ops.load(),
               slowest);
  EXPECT_TRUE(failures.empty()) << failures.size() << " failed, the first: " << failures[0];
  EXPECT_GT(ops.load(), 20);
  EXPECT_LT(slowest, 3 + 3 + 1) << "op_timeout plus one call timeout";
  // Every file the workload left is whole through the other mount too.
  int err = 0;
  std::set<std::string> names = List(m(1).path("w"), &err);
  EXPECT_EQ(err, 0);
  for (const auto& n : names) {
    EXPECT_EQ(n[0], 'b') << n;
    struct stat st {};
    EXPECT_EQ(::stat(m(1).path("w/" + n).c_str(), &st), 0) << n;
    EXPECT_EQ(st.st_size, 64 * 1024 + 7 * std::stoi(n.substr(1))) << n;
  }
}

}  // namespace
}  // namespace testing
}  // namespace quorumfs
