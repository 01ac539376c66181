// Two mounts of one cluster: close-to-open visibility, O_EXCL races between processes on both
// mounts, concurrent renames into one name, and concurrent writers of different byte ranges.
#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <functional>
#include <future>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "tests/test_cluster.h"
#include "tests/test_mount.h"

namespace quorumfs {
namespace testing {
namespace {

constexpr size_t kMiB = 1024 * 1024;

std::string ReadFile(const std::string& path, int* err = nullptr) {
  int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) {
    if (err) *err = errno;
    return "<" + std::string(std::strerror(errno)) + ">";
  }
  std::string out;
  char buf[1 << 16];
  ssize_t n;
  while ((n = ::read(fd, buf, sizeof(buf))) > 0) out.append(buf, static_cast<size_t>(n));
  if (n < 0 && err) *err = errno;
  ::close(fd);
  if (err && n >= 0) *err = 0;
  return out;
}

bool WriteFile(const std::string& path, const std::string& data) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) return false;
  bool ok = ::write(fd, data.data(), data.size()) == static_cast<ssize_t>(data.size());
  return ::close(fd) == 0 && ok;
}

std::set<std::string> List(const std::string& dir) {
  std::set<std::string> names;
  DIR* d = ::opendir(dir.c_str());
  while (d) {
    dirent* e = ::readdir(d);
    if (!e) break;
    std::string n = e->d_name;
    if (n != "." && n != "..") names.insert(n);
  }
  if (d) ::closedir(d);
  return names;
}

std::string Fill(size_t n, char c) { return std::string(n, c); }

// Compares file contents without printing megabytes.
::testing::AssertionResult Same(const std::string& got, const std::string& want) {
  if (got == want) return ::testing::AssertionSuccess();
  size_t i = 0;
  while (i < got.size() && i < want.size() && got[i] == want[i]) ++i;
  auto show = [](const std::string& s, size_t at) {
    std::string part = s.substr(at, 24);
    return "\"" + part + "\"" + (s.size() > at + 24 ? "..." : "");
  };
  return ::testing::AssertionFailure()
         << "got " << got.size() << " bytes, want " << want.size() << "; first difference at " << i
         << ": got " << show(got, i) << ", want " << show(want, i);
}

// Writes blocks parity, parity + 2, ... of `block` bytes at base + i * block (block i filled with
// c + i % 8), with an fsync after every 16th if `fsync_midway`, then closes fd: 0 or an errno.
int WriteInterleaved(int fd, uint64_t base, size_t block, size_t blocks, size_t parity, char c,
                     bool fsync_midway) {
  for (size_t i = parity; i < blocks; i += 2) {
    std::string data = Fill(block, static_cast<char>(c + i % 8));
    if (::pwrite(fd, data.data(), block, static_cast<off_t>(base + i * block)) !=
        static_cast<ssize_t>(block)) {
      int e = errno;
      ::close(fd);
      return e;
    }
    if (fsync_midway && i % 16 == parity) ::fsync(fd);  // publish midway, too
  }
  return ::close(fd) == 0 ? 0 : errno;
}

// Writes the even blocks through fa (filled from 'a') and the odd ones through fb (from 'A') at
// once, with WriteInterleaved; expects both to succeed and returns what [base, base + blocks *
// block) must then hold.
std::string RaceInterleavedWriters(int fa, int fb, uint64_t base, size_t block, size_t blocks,
                                   bool fsync_midway) {
  int ra = -1, rb = -1;
  std::thread ta([&] { ra = WriteInterleaved(fa, base, block, blocks, 0, 'a', fsync_midway); });
  std::thread tb([&] { rb = WriteInterleaved(fb, base, block, blocks, 1, 'A', fsync_midway); });
  ta.join();
  tb.join();
  EXPECT_EQ(ra, 0) << std::strerror(ra);
  EXPECT_EQ(rb, 0) << std::strerror(rb);
  std::string want;
  for (size_t i = 0; i < blocks; ++i) {
    want += Fill(block, static_cast<char>((i % 2 ? 'A' : 'a') + i % 8));
  }
  return want;
}

// Forks `n` children that block until released, then run `body(i)` and exit with its result.
// Returns their exit codes (or -signal).
std::vector<int> RaceProcesses(int n, const std::function<int(int)>& body) {
  int gate[2];
  EXPECT_EQ(::pipe(gate), 0);
  std::vector<pid_t> pids;
  for (int i = 0; i < n; ++i) {
    pid_t pid = ::fork();
    if (pid == 0) {
      ::close(gate[1]);
      char c;
      while (::read(gate[0], &c, 1) < 0 && errno == EINTR) {
      }
      ::_exit(body(i));
    }
    pids.push_back(pid);
  }
  ::close(gate[0]);
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  ::close(gate[1]);  // every child's read returns 0 at once
  std::vector<int> codes;
  for (pid_t pid : pids) {
    int status = 0;
    ::waitpid(pid, &status, 0);
    codes.push_back(WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status));
  }
  return codes;
}

class MultiMountTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    std::string why;
    if (!FuseAvailable(&why)) return;
    cluster_ = new TestCluster();
    a_ = new TestMount(cluster_->cluster_file(), cluster_->dir() + "/mnt-a");
    b_ = new TestMount(cluster_->cluster_file(), cluster_->dir() + "/mnt-b");
  }
  static void TearDownTestSuite() {
    delete a_;
    delete b_;
    delete cluster_;
    a_ = b_ = nullptr;
    cluster_ = nullptr;
  }
  void SetUp() override {
    QUORUMFS_REQUIRE_FUSE();
    ASSERT_TRUE(a_ && a_->ok() && b_ && b_->ok()) << "mount failed";
    name_ = ::testing::UnitTest::GetInstance()->current_test_info()->name();
    ASSERT_EQ(::mkdir(a_->path(name_).c_str(), 0755), 0) << std::strerror(errno);
  }
  std::string A(const std::string& rel) { return a_->path(name_ + "/" + rel); }
  std::string B(const std::string& rel) { return b_->path(name_ + "/" + rel); }

  static TestCluster* cluster_;
  static TestMount* a_;
  static TestMount* b_;
  std::string name_;
};

TestCluster* MultiMountTest::cluster_ = nullptr;
TestMount* MultiMountTest::a_ = nullptr;
TestMount* MultiMountTest::b_ = nullptr;

TEST_F(MultiMountTest, CloseToOpen) {
  // A file created on A is found on B at once (missing names are not cached).
  struct stat st;
  EXPECT_NE(::stat(B("f").c_str(), &st), 0);
  ASSERT_TRUE(WriteFile(A("f"), "written on A"));
  EXPECT_EQ(ReadFile(B("f")), "written on A");
  // Keep a descriptor open on A (its page cache holds the old bytes) while B overwrites the
  // same bytes: same size, so only the change time tells A the file changed.
  int held = ::open(A("f").c_str(), O_RDONLY);
  ASSERT_GE(held, 0);
  char buf[64] = {};
  ASSERT_EQ(::pread(held, buf, sizeof(buf), 0), 12);
  ASSERT_TRUE(WriteFile(B("f"), "WRITTEN ON B"));
  EXPECT_EQ(ReadFile(A("f")), "WRITTEN ON B") << "reopen on A after close on B";
  ::close(held);
  // Growing and shrinking.
  std::string big = Fill(3 * kMiB + 17, 'b');
  ASSERT_TRUE(WriteFile(B("f"), big));
  EXPECT_TRUE(Same(ReadFile(A("f")), big));
  ASSERT_EQ(::stat(A("f").c_str(), &st), 0);
  EXPECT_EQ(st.st_size, static_cast<off_t>(big.size()));
  ASSERT_TRUE(WriteFile(A("f"), "short"));
  EXPECT_EQ(ReadFile(B("f")), "short");
  // A write in place on A (no truncation) of one byte inside a chunk B has cached.
  EXPECT_EQ(ReadFile(B("f")), "short");
  int fd = ::open(A("f").c_str(), O_WRONLY);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::pwrite(fd, "S", 1, 0), 1);
  ASSERT_EQ(::close(fd), 0);
  EXPECT_EQ(ReadFile(B("f")), "Short");
  // Unlink on B: A no longer finds the file (open goes to the cluster).
  ASSERT_EQ(::unlink(B("f").c_str()), 0);
  int err = 0;
  ReadFile(A("f"), &err);
  EXPECT_EQ(err, ENOENT);
  // O_CREAT through A's (stale) name creates a new file.
  ASSERT_TRUE(WriteFile(B("g"), "old g"));
  EXPECT_EQ(ReadFile(A("g")), "old g");
  ASSERT_EQ(::unlink(B("g").c_str()), 0);
  fd = ::open(A("g").c_str(), O_CREAT | O_RDWR, 0644);
  ASSERT_GE(fd, 0) << std::strerror(errno);
  ASSERT_EQ(::write(fd, "new g", 5), 5);
  ASSERT_EQ(::close(fd), 0);
  EXPECT_EQ(ReadFile(B("g")), "new g");
  // Renames and directories show up on the other mount.
  ASSERT_EQ(::mkdir(A("d").c_str(), 0755), 0);
  ASSERT_TRUE(WriteFile(A("d/x"), "x"));
  ASSERT_EQ(::rename(B("d/x").c_str(), B("d/y").c_str()), 0);
  EXPECT_EQ(List(A("d")), std::set<std::string>({"y"}));
  EXPECT_EQ(ReadFile(A("d/y")), "x");
}

// A publishes a layout that also carries B's newer bytes in chunks A did not write: A's page
// cache still holds the old bytes of those chunks, so A's next open must drop them.
TEST_F(MultiMountTest, PublishMergingAnotherMountsBytes) {
  std::string base = Fill(3 * kMiB, 'o');
  ASSERT_TRUE(WriteFile(A("f"), base));
  int fa = ::open(A("f").c_str(), O_RDWR);
  ASSERT_GE(fa, 0);
  std::string buf(4096, '\0');
  ASSERT_EQ(::pread(fa, buf.data(), buf.size(), 0), 4096);  // A caches chunk 0
  int fb = ::open(B("f").c_str(), O_WRONLY);
  ASSERT_GE(fb, 0);
  ASSERT_EQ(::pwrite(fb, "BBBB", 4, 0), 4);  // B changes chunk 0 and publishes
  ASSERT_EQ(::close(fb), 0);
  ASSERT_EQ(::pwrite(fa, "AAAA", 4, 2 * kMiB + 10), 4);  // A changes chunk 2 only
  ASSERT_EQ(::close(fa), 0);
  std::string want = base;
  want.replace(0, 4, "BBBB");
  want.replace(2 * kMiB + 10, 4, "AAAA");
  EXPECT_TRUE(Same(ReadFile(A("f")), want)) << "on A";
  EXPECT_TRUE(Same(ReadFile(B("f")), want)) << "on B";
}

TEST_F(MultiMountTest, ExclusiveCreateRace) {
  for (int round = 0; round < 4; ++round) {
    std::string name = "excl-" + std::to_string(round);
    std::vector<int> codes = RaceProcesses(16, [&](int i) {
      std::string path = (i % 2 ? A(name) : B(name));
      int fd = ::open(path.c_str(), O_CREAT | O_EXCL | O_WRONLY, 0644);
      if (fd >= 0) {
        std::string me = "winner " + std::to_string(i);
        bool ok = ::write(fd, me.data(), me.size()) == static_cast<ssize_t>(me.size());
        return ::close(fd) == 0 && ok ? 0 : 3;
      }
      return errno == EEXIST ? 1 : 10 + errno;
    });
    int winners = 0, losers = 0;
    int winner = -1;
    for (size_t i = 0; i < codes.size(); ++i) {
      if (codes[i] == 0)
        ++winners, winner = static_cast<int>(i);
      else if (codes[i] == 1)
        ++losers;
      else
        ADD_FAILURE() << "round " << round << " process " << i << " exit code " << codes[i];
    }
    EXPECT_EQ(winners, 1) << "round " << round;
    EXPECT_EQ(losers, 15) << "round " << round;
    EXPECT_EQ(ReadFile(A(name)), "winner " + std::to_string(winner));
    EXPECT_EQ(ReadFile(B(name)), "winner " + std::to_string(winner));
  }
  std::set<std::string> want = {"excl-0", "excl-1", "excl-2", "excl-3"};
  EXPECT_EQ(List(A("")), want);
  EXPECT_EQ(List(B("")), want);
}

// open(O_CREAT|O_TRUNC) on one mount while another mount renames a full file into that name.
// When the rename lands between this kernel's lookup (no such name) and its CREATE, the
// mount's create finds the name taken and opens the file that is there; the kernel takes that
// for a file it created (FMODE_CREATED) and so does not truncate it. The mount must: in every
// order the descriptor's file is empty right after the open (either ours, since replaced by
// the rename, or the renamed one, truncated). Before, the race left the open file at 4 KiB.
TEST_F(MultiMountTest, CreateRacingARenameIntoTheNameStillTruncates) {
  const std::string full(4096, 'r');
  int not_truncated = 0;
  std::string first;
  for (int i = 0; i < 60; ++i) {
    const std::string src = "src-" + std::to_string(i), dst = "dst-" + std::to_string(i);
    ASSERT_TRUE(WriteFile(A(src), full));
    // The rename is a transaction of several rounds; the open starts 0-9 ms after it, so that
    // some of them meet its commit between their lookup and their create.
    const auto delay = std::chrono::microseconds((i % 30) * 300);
    const auto go = std::chrono::steady_clock::now() + std::chrono::milliseconds(2);
    std::thread renamer([&] {
      std::this_thread::sleep_until(go);
      EXPECT_EQ(::rename(A(src).c_str(), A(dst).c_str()), 0) << std::strerror(errno);
    });
    std::this_thread::sleep_until(go + delay);
    int fd = ::open(B(dst).c_str(), O_CREAT | O_TRUNC | O_WRONLY, 0644);
    struct stat st {};
    int fstat_rc = fd >= 0 ? ::fstat(fd, &st) : -1;
    int open_errno = errno;
    if (fd >= 0) ::close(fd);
    renamer.join();
    ASSERT_GE(fd, 0) << dst << ": " << std::strerror(open_errno);
    ASSERT_EQ(fstat_rc, 0);
    if (st.st_size != 0) {
      ++not_truncated;
      if (first.empty()) {
        first = dst + " (open " + std::to_string(delay.count()) + " us after the rename)";
      }
    }
  }
  EXPECT_EQ(not_truncated, 0) << "open(O_TRUNC) left the file it opened full, first " << first;
}

// The same race, for permission and for O_TRUNC's loss of setuid: the file renamed into the
// name is root's, and the open comes from another user (uid and gid 65534, through a third
// mount with allow_other). The kernel checks nothing on a file it believes it created, so the
// mount must. A mode-0600 file: the open either creates the user's own file (before the rename)
// or fails with EACCES, never opens root's. A 04775 file of group 65534 opened with O_TRUNC: the
// user may open it, and then finds it empty and no longer setuid, as the kernel's own O_TRUNC
// by a caller other than root leaves it.
TEST_F(MultiMountTest, CreateRacingARenameIntoTheNameChecksPermission) {
  TestMountOptions mo;
  mo.extra_opts = {"allow_other"};
  TestMount c(cluster_->cluster_file(), cluster_->dir() + "/mnt-c", mo);
  ASSERT_TRUE(c.ok());
  // The other user must reach the mount point and create in the test's directory.
  ASSERT_EQ(::chmod(cluster_->dir().c_str(), 0755), 0) << std::strerror(errno);
  ASSERT_EQ(::chmod(A("").c_str(), 0777), 0) << std::strerror(errno);
  const uid_t nobody = 65534;
  // One race: root's file (mode, group) renamed into a fresh name while the other user opens
  // it with `flags`, 0-9 ms after. The child's exit code: 0 it created its own file, 1 EACCES,
  // 2 it opened root's file, found empty and not setuid, 3 it opened root's file otherwise.
  auto race = [&](int i, const std::string& prefix, mode_t mode, gid_t group, int flags) {
    const std::string src = prefix + "-src-" + std::to_string(i);
    const std::string dst = prefix + "-" + std::to_string(i);
    EXPECT_TRUE(WriteFile(A(src), "root's"));
    EXPECT_EQ(::chown(A(src).c_str(), 0, group), 0) << std::strerror(errno);
    EXPECT_EQ(::chmod(A(src).c_str(), mode), 0) << std::strerror(errno);
    const std::string path = c.path(name_ + "/" + dst);
    const auto go = std::chrono::steady_clock::now() + std::chrono::milliseconds(20);
    const auto delay = std::chrono::microseconds((i % 30) * 300);
    pid_t pid = ::fork();
    if (pid == 0) {
      if (::setgroups(0, nullptr) != 0 || ::setresgid(nobody, nobody, nobody) != 0 ||
          ::setresuid(nobody, nobody, nobody) != 0) {
        ::_exit(9);
      }
      std::this_thread::sleep_until(go + delay);
      int fd = ::open(path.c_str(), flags, 0644);
      if (fd < 0) ::_exit(errno == EACCES ? 1 : 10 + errno);
      struct stat st {};
      int rc = ::fstat(fd, &st);
      ::close(fd);
      if (rc != 0) ::_exit(8);
      if (st.st_uid == nobody) ::_exit(0);
      ::_exit(st.st_size == 0 && !(st.st_mode & S_ISUID) ? 2 : 3);
    }
    if (pid < 0) return -1;
    std::this_thread::sleep_until(go);
    EXPECT_EQ(::rename(A(src).c_str(), A(dst).c_str()), 0) << std::strerror(errno);
    int status = 0;
    if (::waitpid(pid, &status, 0) != pid || !WIFEXITED(status)) return -1;
    return WEXITSTATUS(status);
  };
  int counts[4] = {0, 0, 0, 0};
  for (int i = 0; i < 60; ++i) {
    int code = race(i, "secret", 0600, 0, O_CREAT | O_WRONLY);
    ASSERT_TRUE(code >= 0 && code <= 3) << "race " << i << ": child exit " << code;
    counts[code]++;
  }
  std::fprintf(stderr, "0600 file: created their own %d, refused %d, opened root's %d\n", counts[0],
               counts[1], counts[2] + counts[3]);
  EXPECT_EQ(counts[2] + counts[3], 0) << "another user opened root's 0600 file for writing";
  EXPECT_GT(counts[1], 0);
  int suid[4] = {0, 0, 0, 0};
  for (int i = 0; i < 60; ++i) {
    int code = race(i, "suid", 04775, nobody, O_CREAT | O_WRONLY | O_TRUNC);
    ASSERT_TRUE(code >= 0 && code <= 3) << "race " << i << ": child exit " << code;
    suid[code]++;
  }
  std::fprintf(stderr,
               "04775 file, O_TRUNC: created their own %d, refused %d, opened it truncated "
               "and cleared %d, opened it otherwise %d\n",
               suid[0], suid[1], suid[2], suid[3]);
  EXPECT_EQ(suid[1], 0) << "a member of the file's group was refused";
  EXPECT_EQ(suid[3], 0) << "O_TRUNC by another user left the file full or setuid";
  EXPECT_GT(suid[2], 0);
}

TEST_F(MultiMountTest, ConcurrentRenamesIntoOneName) {
  for (int round = 0; round < 3; ++round) {
    std::string dir = "r" + std::to_string(round);
    ASSERT_EQ(::mkdir(A(dir).c_str(), 0755), 0);
    const int n = 8;
    for (int i = 0; i < n; ++i) {
      ASSERT_TRUE(WriteFile(A(dir + "/src" + std::to_string(i)), "from " + std::to_string(i)));
    }
    std::vector<int> codes = RaceProcesses(n, [&](int i) {
      std::string from = dir + "/src" + std::to_string(i), to = dir + "/target";
      int r = i % 2 ? ::rename(A(from).c_str(), A(to).c_str())
                    : ::rename(B(from).c_str(), B(to).c_str());
      return r == 0 ? 0 : 10 + errno;
    });
    for (size_t i = 0; i < codes.size(); ++i) {
      EXPECT_EQ(codes[i], 0) << "round " << round << " rename " << i << " failed: errno "
                             << codes[i] - 10;
    }
    for (auto* m : {a_, b_}) {
      std::string d = m->path(name_ + "/" + dir);
      EXPECT_EQ(List(d), std::set<std::string>({"target"})) << m->dir();
      std::string content = ReadFile(d + "/target");
      EXPECT_EQ(content.rfind("from ", 0), 0u) << content;
      struct stat st;
      ASSERT_EQ(::stat((d + "/target").c_str(), &st), 0);
      EXPECT_EQ(st.st_nlink, 1u);
    }
    // The directory's entry count is right: it empties and can be removed.
    ASSERT_EQ(::unlink(B(dir + "/target").c_str()), 0);
    EXPECT_EQ(::rmdir(A(dir).c_str()), 0) << std::strerror(errno);
  }
}

TEST_F(MultiMountTest, ConcurrentWritersOfDifferentRanges) {
  // Interleaved 64 KiB blocks: A writes the even ones, B the odd ones, so both mounts change
  // every chunk and each must rebuild its slots from the other's bytes when it publishes.
  const size_t block = 64 * 1024, blocks = 64;  // 4 MiB
  for (int round = 0; round < 3; ++round) {
    std::string name = "shared" + std::to_string(round);
    std::string base = round == 0 ? "" : Fill(blocks * block / 2, '.');  // also over data
    ASSERT_TRUE(WriteFile(A(name), base));
    // Both mounts cache the old bytes in their page caches first.
    EXPECT_TRUE(Same(ReadFile(A(name)), base));
    EXPECT_TRUE(Same(ReadFile(B(name)), base));
    int fa = ::open(A(name).c_str(), O_WRONLY);
    int fb = ::open(B(name).c_str(), O_WRONLY);
    ASSERT_GE(fa, 0);
    ASSERT_GE(fb, 0);
    std::string want = RaceInterleavedWriters(fa, fb, 0, block, blocks, round == 2);
    for (auto* m : {a_, b_}) {
      EXPECT_TRUE(Same(ReadFile(m->path(name_ + "/" + name)), want))
          << "round " << round << " on " << m->dir();
    }
  }
}

// A flush that publishes a slot while the slot is written again leaves it dirty with the later
// write. Once another mount has overwritten the published bytes, the next publish (a conflict,
// rebuilt on the other mount's bytes) must lay only the later write over them: the published
// bytes laid again would undo the other mount's write, which came after them. (The flush here
// is an unlock's: a close's would be followed by its RELEASE, which publishes everything.)
TEST_F(MultiMountTest, PublishedBytesAreNotLaidAgainOverALaterWrite) {
  const std::string old_bytes(100, 'A'), later(100, 'a'), other(100, 'B');
  int w = ::open(A("f").c_str(), O_CREAT | O_RDWR, 0644);
  ASSERT_GE(w, 0) << std::strerror(errno);
  struct flock fl;
  std::memset(&fl, 0, sizeof(fl));
  fl.l_type = F_WRLCK;
  fl.l_whence = SEEK_SET;
  ASSERT_EQ(::fcntl(w, F_SETLK, &fl), 0) << std::strerror(errno);
  ASSERT_EQ(::pwrite(w, old_bytes.data(), 100, 0), 100);
  std::future<int> unlocked;
  {
    // Two of three servers frozen: the unlock (a flush of the file first) waits for its chunk
    // put while the file is written again.
    Frozen f1(cluster_->pid(1)), f2(cluster_->pid(2));
    ASSERT_TRUE(f1.ok() && f2.ok());
    unlocked = std::async(std::launch::async, [w] {
      struct flock un;
      std::memset(&un, 0, sizeof(un));
      un.l_type = F_UNLCK;
      un.l_whence = SEEK_SET;
      return ::fcntl(w, F_SETLK, &un) == 0 ? 0 : errno;
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(400));
    ASSERT_EQ(::pwrite(w, later.data(), 100, 500), 100);
    // A small write into a slot the mount holds is answered on the FUSE thread and applied by
    // the loop before its next request: this one (answered without the cluster), so that the
    // write lands while the flush waits.
    EXPECT_EQ(::lseek(w, 0, SEEK_DATA), 0);
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_EQ(unlocked.get(), 0);
  // Mount b sees what that flush published, and overwrites it.
  EXPECT_EQ(ReadFile(B("f")), old_bytes);
  int b = ::open(B("f").c_str(), O_RDWR);
  ASSERT_GE(b, 0) << std::strerror(errno);
  ASSERT_EQ(::pwrite(b, other.data(), 100, 0), 100);
  ASSERT_EQ(::close(b), 0) << std::strerror(errno);
  ASSERT_EQ(::close(w), 0) << std::strerror(errno);
  std::string want = other + std::string(400, '\0') + later;
  EXPECT_EQ(ReadFile(B("f")), want);
  EXPECT_EQ(ReadFile(A("f")), want);
}

// Lookup read-ahead (a mount that sees many lookups in one directory lists it and answers
// from the listing for entry_timeout): this mount's own changes show at once, another mount's
// within entry_timeout plus attr_timeout (1 s each by default), as with the kernel's caches.
// Small writes into slots mount a already holds are answered on its FUSE thread and applied by
// its loop thread before the next request it handles: a read through another descriptor (the
// kernel's pages dropped first, so the read reaches the mount), a truncate and an fsync all see
// every write answered before them, and mount b sees them all after the fsync and the close.
TEST_F(MultiMountTest, WritesAnsweredOnTheFuseThreadAreSeenByEveryLaterCall) {
  std::string path = A("f");
  std::string model(3 * kMiB, '\0');
  for (size_t i = 0; i < model.size(); ++i) model[i] = static_cast<char>('a' + (i * 7) % 26);
  int w = ::open(path.c_str(), O_CREAT | O_RDWR, 0644);
  ASSERT_GE(w, 0) << std::strerror(errno);
  ASSERT_EQ(::pwrite(w, model.data(), model.size(), 0), static_cast<ssize_t>(model.size()));
  int r = ::open(path.c_str(), O_RDONLY);
  ASSERT_GE(r, 0) << std::strerror(errno);
  std::mt19937 rng(7);
  for (int round = 0; round < 400; ++round) {
    size_t len = 1 + rng() % 8192;
    size_t off = rng() % (model.size() - len);
    std::string buf(len, static_cast<char>('A' + round % 26));
    ASSERT_EQ(::pwrite(w, buf.data(), len, static_cast<off_t>(off)), static_cast<ssize_t>(len));
    model.replace(off, len, buf);
    if (round % 10 == 9) {
      ASSERT_EQ(::posix_fadvise(r, 0, 0, POSIX_FADV_DONTNEED), 0);
      size_t roff = rng() % model.size();
      size_t rlen = std::min<size_t>(65536, model.size() - roff);
      std::string got(rlen, '\0');
      ASSERT_EQ(::pread(r, got.data(), rlen, static_cast<off_t>(roff)), static_cast<ssize_t>(rlen));
      ASSERT_TRUE(Same(got, model.substr(roff, rlen))) << "round " << round << " at " << roff;
    }
    if (round == 150) {  // cuts bytes the writes just before it put beyond the new end
      ASSERT_EQ(::ftruncate(w, 2 * kMiB + 12345), 0) << std::strerror(errno);
      model.resize(2 * kMiB + 12345);
    }
    if (round == 250) {
      ASSERT_EQ(::fsync(w), 0) << std::strerror(errno);
      ASSERT_TRUE(Same(ReadFile(B("f")), model)) << "after fsync";
    }
  }
  EXPECT_EQ(::close(r), 0);
  ASSERT_EQ(::close(w), 0) << std::strerror(errno);
  EXPECT_TRUE(Same(ReadFile(B("f")), model)) << "after close";
}

// Writes answered on the FUSE thread while another descriptor's close publishes the same
// slots: a write queued just before the publish finds its slot gone when applied and takes the
// ordinary path, with every later write after it. The bytes must still be the writer's, in its
// order, on both mounts.
TEST_F(MultiMountTest, WritesRacingAnotherDescriptorsCloseKeepTheirOrder) {
  std::string path = A("f");
  std::string model(2 * kMiB, 'x');
  int w = ::open(path.c_str(), O_CREAT | O_RDWR, 0644);
  ASSERT_GE(w, 0) << std::strerror(errno);
  ASSERT_EQ(::pwrite(w, model.data(), model.size(), 0), static_cast<ssize_t>(model.size()));
  std::atomic<bool> done{false};
  std::atomic<int> closes{0};
  std::thread closer([&] {
    while (!done) {
      int fd = ::open(path.c_str(), O_RDWR);
      if (fd < 0 || ::close(fd) != 0) break;
      ++closes;
    }
  });
  std::mt19937 rng(11);
  for (int i = 0; i < 3000; ++i) {
    size_t off = (rng() % (model.size() / 512 - 8)) * 512;
    std::string buf(4096, static_cast<char>('a' + i % 26));
    ASSERT_EQ(::pwrite(w, buf.data(), buf.size(), static_cast<off_t>(off)), 4096);
    model.replace(off, buf.size(), buf);
  }
  done = true;
  closer.join();
  EXPECT_GT(closes.load(), 0);
  ASSERT_EQ(::close(w), 0) << std::strerror(errno);
  EXPECT_TRUE(Same(ReadFile(path), model)) << "mount a";
  EXPECT_TRUE(Same(ReadFile(B("f")), model)) << "mount b";
}

// A close of a file nothing was written to since the mount last found it clean is answered on
// the FUSE thread (quiet_ in fuse/filesystem.cc); any write in between, staged on the FUSE
// thread or applied on the loop, must still make the next close publish it. Walks the
// transitions: created and closed empty; opened (clean), written, closed; written into a slot
// already held (staged), closed; two descriptors, one writing, the other closing first. Each
// close that must publish is checked from the other mount while a dup of the descriptor still
// holds the file open, so only the close's own FLUSH can have published the bytes.
TEST_F(MultiMountTest, ClosesOfCleanFilesSkipTheLoopButNeverAWrite) {
  // Descriptors still open when an assertion returns are closed here: an open file keeps the
  // mount busy, so its daemon would not exit at teardown.
  std::vector<int> open_fds;
  struct CloseAll {
    std::vector<int>* fds;
    ~CloseAll() {
      for (int fd : *fds) ::close(fd);
    }
  } close_all{&open_fds};
  auto Open = [&](int flags) {
    int fd = ::open(A("q").c_str(), flags, 0644);
    if (fd >= 0) open_fds.push_back(fd);
    return fd;
  };
  auto Close = [&](int fd) {
    open_fds.erase(std::remove(open_fds.begin(), open_fds.end(), fd), open_fds.end());
    return ::close(fd);
  };
  int fd = Open(O_CREAT | O_EXCL | O_WRONLY);
  ASSERT_GE(fd, 0) << std::strerror(errno);
  ASSERT_EQ(Close(fd), 0);
  EXPECT_TRUE(Same(ReadFile(B("q")), ""));
  std::string model;
  for (int round = 0; round < 20; ++round) {
    SCOPED_TRACE(round);
    // Opened clean, then written through the loop (no slot held), then (in two rounds of three)
    // into the slot now held, which the FUSE thread queues.
    fd = Open(O_RDWR);
    ASSERT_GE(fd, 0) << std::strerror(errno);
    std::string first(100 + round, static_cast<char>('a' + round));
    std::string second(37, static_cast<char>('A' + round));
    size_t off = static_cast<size_t>(round) * 4096;
    ASSERT_EQ(::pwrite(fd, first.data(), first.size(), static_cast<off_t>(off)),
              static_cast<ssize_t>(first.size()));
    if (model.size() < off + first.size()) model.resize(off + first.size(), '\0');
    model.replace(off, first.size(), first);
    if (round % 3 != 0) {
      ASSERT_EQ(::pwrite(fd, second.data(), second.size(), static_cast<off_t>(off + 50)),
                static_cast<ssize_t>(second.size()));
      model.replace(off + 50, second.size(), second);
    }
    if (round % 2 == 1) {
      // Another descriptor of the same file, opened while it is dirty and closed first.
      int other = Open(O_RDWR);
      ASSERT_GE(other, 0) << std::strerror(errno);
      std::string third(9, static_cast<char>('0' + round % 10));
      ASSERT_EQ(::pwrite(fd, third.data(), third.size(), static_cast<off_t>(off + 7)), 9);
      model.replace(off + 7, third.size(), third);
      ASSERT_EQ(Close(other), 0);
    }
    // A duplicate keeps the open file description alive: the close sends FLUSH but no RELEASE
    // (whose own flush would publish the bytes soon after and hide a close that did not).
    int keep = ::dup(fd);
    ASSERT_GE(keep, 0) << std::strerror(errno);
    open_fds.push_back(keep);
    ASSERT_EQ(Close(fd), 0) << std::strerror(errno);
    ASSERT_TRUE(Same(ReadFile(B("q")), model)) << "after the close of round " << round;
    ASSERT_EQ(Close(keep), 0) << std::strerror(errno);
    // Opened and closed without a write: quiet from here.
    fd = Open(O_WRONLY);
    ASSERT_GE(fd, 0) << std::strerror(errno);
    ASSERT_EQ(Close(fd), 0);
  }
  EXPECT_TRUE(Same(ReadFile(A("q")), model)) << "mount a";
}

TEST_F(MultiMountTest, LookupReadAheadSeesChangesInTime) {
  constexpr int kFiles = 40;
  for (int i = 0; i < kFiles; ++i) ASSERT_TRUE(WriteFile(A("f" + std::to_string(i)), "x"));
  struct stat st;
  auto stat_all_on_b = [&](int from) {
    for (int i = from; i < kFiles; ++i) {
      ASSERT_EQ(::stat(B("f" + std::to_string(i)).c_str(), &st), 0) << i;
    }
  };
  stat_all_on_b(10);  // B lists the directory after a few lookups
  // B's own changes, each followed by a lookup the kernel sends to the mount.
  ASSERT_EQ(::unlink(B("f10").c_str()), 0);
  EXPECT_NE(::stat(B("f10").c_str(), &st), 0);
  EXPECT_EQ(errno, ENOENT);
  stat_all_on_b(11);
  ASSERT_EQ(::rename(B("f11").c_str(), B("r11").c_str()), 0);
  EXPECT_NE(::stat(B("f11").c_str(), &st), 0);
  EXPECT_EQ(::stat(B("r11").c_str(), &st), 0);
  // A's changes to names B looked up a moment ago.
  for (int i = 12; i < kFiles; ++i) ASSERT_EQ(::stat(B("f" + std::to_string(i)).c_str(), &st), 0);
  ASSERT_EQ(::chmod(A("f12").c_str(), 0640), 0);
  ASSERT_EQ(::unlink(A("f13").c_str()), 0);
  ASSERT_TRUE(WriteFile(A("f14"), "longer now"));
  auto start = std::chrono::steady_clock::now();
  bool mode_seen = false, unlink_seen = false, size_seen = false;
  while (std::chrono::steady_clock::now() - start < std::chrono::seconds(5) &&
         !(mode_seen && unlink_seen && size_seen)) {
    if (::stat(B("f12").c_str(), &st) == 0 && (st.st_mode & 07777) == 0640) mode_seen = true;
    if (::stat(B("f13").c_str(), &st) != 0 && errno == ENOENT) unlink_seen = true;
    if (::stat(B("f14").c_str(), &st) == 0 && st.st_size == 10) size_seen = true;
    for (int i = 20; i < kFiles; ++i) ::stat(B("f" + std::to_string(i)).c_str(), &st);
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_TRUE(mode_seen && unlink_seen && size_seen)
      << "mode " << mode_seen << " unlink " << unlink_seen << " size " << size_seen;
  EXPECT_LT(secs, 3.0) << "another mount's changes took longer than the two timeouts";
  EXPECT_EQ(ReadFile(B("f14")), "longer now");
}

// Misses from a listing of names (-o negative_timeout=3: a mount that sees many misses in one
// directory lists the names it may hold and answers a lookup of any other "no such file" on
// its FUSE thread, for 3 s from when the listing began): such answers need no server; every
// name the mount adds itself shows at once, also after the kernel dropped its entries; a name
// it found by readdir stays found; another mount's new name shows once the listing is made
// again (past half its life), and at once after a lock is taken. Without the option (mount B),
// a name another mount created is found at once however many misses came before.
TEST_F(MultiMountTest, MissesFromANameListingSeeChangesInTime) {
  TestMountOptions with_names;
  with_names.extra_opts = {"negative_timeout=3"};
  TestMount c(cluster_->cluster_file(), cluster_->dir() + "/mnt-c", with_names);
  ASSERT_TRUE(c.ok());
  auto C = [&](const std::string& rel) { return c.path(name_ + "/" + rel); };
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(WriteFile(A("f" + std::to_string(i)), "x"));
  struct stat st;
  int fresh = 0;
  auto miss_on = [&](const std::function<std::string(const std::string&)>& at, int n) {
    for (int i = 0; i < n; ++i) {  // lookups of names never used before
      std::string p = at("missing" + std::to_string(fresh++));
      EXPECT_NE(::stat(p.c_str(), &st), 0) << p;
      EXPECT_EQ(errno, ENOENT) << p;
    }
  };
  // True if C answers a miss while every server is frozen. (An unanswered lookup finishes
  // once the servers go on.)
  auto answered_frozen = [&] {
    std::string p = C("missing" + std::to_string(fresh++));
    std::promise<int> result;
    std::future<int> got = result.get_future();
    std::thread lookup;
    bool answered = false;
    {
      std::vector<std::unique_ptr<quorumfs::testing::Frozen>> frozen;
      for (int i = 0; i < 3; ++i) {
        frozen.push_back(std::make_unique<quorumfs::testing::Frozen>(cluster_->pid(i)));
      }
      lookup = std::thread([&result, p] {
        struct stat s;
        result.set_value(::stat(p.c_str(), &s) == 0 ? 0 : errno);
      });
      if (got.wait_for(std::chrono::milliseconds(300)) == std::future_status::ready) {
        answered = got.get() == ENOENT;
      }
    }
    lookup.join();
    return answered;
  };
  // A new listing of the directory on C, checked to answer. SIGUSR1 drops C's listings first.
  // Tried a few times: on a slow machine the listing may take longer than the pause, and the
  // kernel may have to look the directory itself up again while the servers are frozen.
  auto fresh_listing = [&] {
    for (int attempt = 0; attempt < 10; ++attempt) {
      ::kill(c.pid(), SIGUSR1);
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      miss_on(C, 10);
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      if (answered_frozen()) return true;
    }
    return false;
  };

  // The default: B misses as much, then finds A's new name at once.
  miss_on([&](const std::string& rel) { return B(rel); }, 10);
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  ASSERT_TRUE(WriteFile(A("at_once"), "w"));
  EXPECT_EQ(::stat(B("at_once").c_str(), &st), 0) << std::strerror(errno);

  // C's own new names, each looked up after the kernel dropped its entries: the listing
  // answers for every name but these. A name A made after the listing began, found by
  // readdir, stays found.
  ASSERT_TRUE(fresh_listing()) << "no miss was answered from a listing of names";
  ASSERT_TRUE(WriteFile(A("listed"), "v"));
  bool listed = false;
  DIR* dir = ::opendir(C("").c_str());
  ASSERT_NE(dir, nullptr) << std::strerror(errno);
  while (struct dirent* e = ::readdir(dir)) listed = listed || std::string(e->d_name) == "listed";
  ::closedir(dir);
  EXPECT_TRUE(listed);
  int fd = ::open(C("created").c_str(), O_CREAT | O_EXCL | O_WRONLY, 0644);
  ASSERT_GE(fd, 0) << std::strerror(errno);
  ASSERT_EQ(::close(fd), 0);
  ASSERT_EQ(::mkdir(C("dir").c_str(), 0755), 0) << std::strerror(errno);
  ASSERT_EQ(::symlink("f0", C("symlink").c_str()), 0) << std::strerror(errno);
  ASSERT_EQ(::link(C("f0").c_str(), C("hardlink").c_str()), 0) << std::strerror(errno);
  ASSERT_EQ(::rename(C("f1").c_str(), C("renamed").c_str()), 0) << std::strerror(errno);
  ASSERT_EQ(::mknod(C("fifo").c_str(), S_IFIFO | 0644, 0), 0) << std::strerror(errno);
  int drop = ::open("/proc/sys/vm/drop_caches", O_WRONLY);
  ASSERT_GE(drop, 0) << std::strerror(errno);
  EXPECT_EQ(::write(drop, "2", 1), 1) << std::strerror(errno);
  ::close(drop);
  for (const char* name : {"created", "dir", "symlink", "hardlink", "renamed", "fifo", "listed"}) {
    EXPECT_EQ(::lstat(C(name).c_str(), &st), 0) << name << ": " << std::strerror(errno);
  }
  EXPECT_NE(::lstat(C("f1").c_str(), &st), 0);

  // A lock taken on C drops its listings: a name A made just before shows at once (a
  // program that coordinates through locks, such as sqlite looking for a hot journal).
  ASSERT_TRUE(fresh_listing());
  ASSERT_TRUE(WriteFile(A("journal"), "z"));
  int lk = ::open(C("f0").c_str(), O_RDWR);
  ASSERT_GE(lk, 0) << std::strerror(errno);
  struct flock fl = {};
  fl.l_type = F_WRLCK;
  fl.l_whence = SEEK_SET;
  ASSERT_EQ(::fcntl(lk, F_SETLKW, &fl), 0) << std::strerror(errno);
  EXPECT_EQ(::stat(C("journal").c_str(), &st), 0) << std::strerror(errno);
  fl.l_type = F_UNLCK;
  EXPECT_EQ(::fcntl(lk, F_SETLK, &fl), 0);
  ::close(lk);

  // A's new name shows on C once C, missing on in the directory, lists it again past half
  // the listing's life (1.5 s): well before the listing itself runs out (3 s).
  ASSERT_TRUE(fresh_listing());
  ASSERT_TRUE(WriteFile(A("from_a"), "y"));
  auto start = std::chrono::steady_clock::now();
  while (::stat(C("from_a").c_str(), &st) != 0 &&
         std::chrono::steady_clock::now() - start < std::chrono::seconds(6)) {
    miss_on(C, 1);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(::stat(C("from_a").c_str(), &st), 0);
  EXPECT_LT(secs, 2.0) << "another mount's new name waited for the listing to run out";
}

// B learns of files from listings (readdirplus and lookup read-ahead) while A rewrites some of
// them, then opens and reads each for the first time: B's opens fetch the chunks its listings
// named beside the inode reads (Impl::PrefetchAtOpen), which for a rewritten file is an older
// version. Every read must return the bytes of the version A closed last (close-to-open), not
// the listing's; rewrites keep or change the size, and some cross one chunk.
TEST_F(MultiMountTest, ColdReadsFollowTheOpensLayoutNotTheListings) {
  std::mt19937_64 rng(20261127);
  auto content = [&](size_t size) {
    std::string s(size, '\0');
    for (auto& c : s) c = static_cast<char>('a' + rng() % 26);
    return s;
  };
  for (int round = 0; round < 3; ++round) {
    const std::string dir = "r" + std::to_string(round);
    ASSERT_EQ(::mkdir(A(dir).c_str(), 0755), 0) << std::strerror(errno);
    std::vector<std::string> latest(48);
    for (size_t i = 0; i < latest.size(); ++i) {
      latest[i] = content(1 + rng() % (192 * 1024));
      ASSERT_TRUE(WriteFile(A(dir + "/f" + std::to_string(i)), latest[i])) << i;
    }
    // B lists the directory (readdirplus) and looks every name up (lookup read-ahead).
    EXPECT_EQ(List(B(dir)).size(), latest.size());
    struct stat st;
    for (size_t i = 0; i < latest.size(); ++i) {
      ASSERT_EQ(::stat(B(dir + "/f" + std::to_string(i)).c_str(), &st), 0) << i;
    }
    for (size_t i = 0; i < latest.size(); ++i) {
      switch (rng() % 4) {
        case 0:  // same size, new bytes
          latest[i] = content(latest[i].size());
          break;
        case 1:  // another size, possibly past one chunk
          latest[i] = content(1 + rng() % (kMiB + kMiB / 2));
          break;
        default:  // unchanged: the prefetched chunk is the one read
          continue;
      }
      ASSERT_TRUE(WriteFile(A(dir + "/f" + std::to_string(i)), latest[i])) << i;
    }
    for (size_t i = 0; i < latest.size(); ++i) {
      EXPECT_TRUE(Same(ReadFile(B(dir + "/f" + std::to_string(i))), latest[i]))
          << "round " << round << " file " << i;
    }
  }
}

// Bytes [off, off + n) of `path` (short if the file ends first), or "<error>".
std::string ReadRange(const std::string& path, uint64_t off, size_t n) {
  int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) return "<" + std::string(std::strerror(errno)) + ">";
  std::string out(n, '\0');
  size_t got = 0;
  while (got < n) {
    ssize_t r = ::pread(fd, &out[got], n - got, static_cast<off_t>(off + got));
    if (r < 0) {
      out = "<" + std::string(std::strerror(errno)) + ">";
      break;
    }
    if (r == 0) {
      out.resize(got);
      break;
    }
    got += static_cast<size_t>(r);
  }
  ::close(fd);
  return out;
}

bool WriteAt(const std::string& path, uint64_t off, const std::string& data, int flags = 0) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | flags, 0644);
  if (fd < 0) return false;
  bool ok = ::pwrite(fd, data.data(), data.size(), static_cast<off_t>(off)) ==
            static_cast<ssize_t>(data.size());
  return ::close(fd) == 0 && ok;
}

std::string Pattern(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>('a' + rng() % 26);
  return s;
}

constexpr uint64_t kGiB = 1ull << 30;  // one layout page with 1 MiB chunks

// fsync and close while another thread keeps writing the same file through the same mount:
// writes that land while a flush waits for its uploads are published by a later flush, and
// the flush itself succeeds (it failed with EIO, "chunk upload failed", when a write changed
// a slot whose upload it was waiting for). Every byte reads back on the other mount.
TEST_F(MultiMountTest, FsyncWhileAnotherThreadWritesTheSameFile) {
  const size_t block = 4096, span = 3 * kMiB;
  int wfd = ::open(A("busy").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  int sfd = ::open(A("busy").c_str(), O_WRONLY);
  ASSERT_GE(wfd, 0);
  ASSERT_GE(sfd, 0);
  std::string want(span, '\0');
  std::atomic<bool> stop{false};
  int write_error = 0;
  std::thread writer([&] {
    uint64_t n = 0;
    while (!stop) {
      size_t off = (n * block) % span;
      std::string data = Pattern(block, n++);
      if (::pwrite(wfd, data.data(), block, static_cast<off_t>(off)) !=
          static_cast<ssize_t>(block)) {
        write_error = errno;
        return;
      }
      want.replace(off, block, data);
    }
  });
  int fsyncs = 0, failures = 0, first_error = 0;
  auto until = std::chrono::steady_clock::now() + std::chrono::seconds(4);
  while (std::chrono::steady_clock::now() < until) {
    // fsync (the kernel holds the file's lock, so no write lands meanwhile) and the close of
    // another descriptor (FLUSH: writes do land meanwhile), in turn.
    int other = fsyncs % 2 ? ::open(A("busy").c_str(), O_WRONLY) : -1;
    if (fsyncs % 2 ? ::close(other) != 0 : ::fsync(sfd) != 0) {
      if (failures++ == 0) first_error = errno;
    }
    ++fsyncs;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  stop = true;
  writer.join();
  EXPECT_EQ(write_error, 0) << std::strerror(write_error);
  EXPECT_EQ(failures, 0) << "of " << fsyncs << " fsyncs; first: " << std::strerror(first_error);
  EXPECT_GT(fsyncs, 20);
  EXPECT_EQ(::close(wfd), 0) << std::strerror(errno);
  EXPECT_EQ(::close(sfd), 0) << std::strerror(errno);
  EXPECT_TRUE(Same(ReadFile(B("busy")), want));
}

// A file's slots past the first 1024 live in layout pages (chunks the inode names): a sparse
// file of 1 TiB costs four pages, not a million-slot record (which took the mount minutes to
// publish, and past ~28 GiB of data could not be published at all). Blocks in the inline
// slots, in pages 1 and 2, across the border of pages 2 and 3, and at 1 TiB: all read back on
// the other mount (close-to-open), with zeros between; each mount changes bytes in a page the
// other wrote, and both survive; SEEK_DATA skips the holes; past the largest size: EFBIG.
TEST_F(MultiMountTest, LargeSparseFilesKeepTheirLayoutInPages) {
  const std::vector<std::pair<uint64_t, std::string>> blocks = {
      {100, Pattern(65536, 1)},
      {kGiB + 5, Pattern(65536, 2)},
      {2 * kGiB + 7 * kMiB, Pattern(2 * kMiB, 3)},
      {3 * kGiB - 10, Pattern(65536, 4)},
      {1ull << 40, Pattern(65536, 5)},
  };
  auto started = std::chrono::steady_clock::now();
  int fd = ::open(A("sparse").c_str(), O_RDWR | O_CREAT | O_TRUNC, 0644);
  ASSERT_GE(fd, 0) << std::strerror(errno);
  for (const auto& [off, data] : blocks) {
    ASSERT_EQ(::pwrite(fd, data.data(), data.size(), static_cast<off_t>(off)),
              static_cast<ssize_t>(data.size()))
        << off << ": " << std::strerror(errno);
  }
  ASSERT_EQ(::fsync(fd), 0) << std::strerror(errno);
  ASSERT_EQ(::close(fd), 0) << std::strerror(errno);
  double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  EXPECT_LT(took, 20.0) << "writing and publishing a sparse 1 TiB file";
  struct stat st;
  ASSERT_EQ(::stat(B("sparse").c_str(), &st), 0);
  EXPECT_EQ(static_cast<uint64_t>(st.st_size), (1ull << 40) + 65536);
  EXPECT_LT(static_cast<uint64_t>(st.st_blocks) * 512, 16 * kMiB);  // holes take no space
  EXPECT_GE(static_cast<uint64_t>(st.st_blocks) * 512, 2 * kMiB);
  for (const auto& [off, data] : blocks) {
    EXPECT_TRUE(Same(ReadRange(B("sparse"), off, data.size()), data)) << "at " << off;
  }
  for (uint64_t hole : {uint64_t{70000}, kGiB - 8192, 2 * kGiB, 3 * kGiB + 65536, 512 * kGiB}) {
    EXPECT_TRUE(Same(ReadRange(B("sparse"), hole, 4096), std::string(4096, '\0'))) << hole;
  }
  // Each mount changes bytes in a page the other wrote.
  ASSERT_TRUE(WriteAt(B("sparse"), kGiB + 1005, "written by b"));
  ASSERT_TRUE(WriteAt(A("sparse"), 2 * kGiB + 8 * kMiB, "written by a"));
  std::string want1 = blocks[1].second, want2 = blocks[2].second;
  want1.replace(1000, 12, "written by b");
  want2.replace(kMiB, 12, "written by a");
  for (auto* m : {a_, b_}) {
    std::string path = m->path(name_ + "/sparse");
    EXPECT_TRUE(Same(ReadRange(path, kGiB + 5, want1.size()), want1)) << m->dir();
    EXPECT_TRUE(Same(ReadRange(path, 2 * kGiB + 7 * kMiB, want2.size()), want2)) << m->dir();
    EXPECT_TRUE(Same(ReadRange(path, (1ull << 40), 65536), blocks[4].second)) << m->dir();
  }
  fd = ::open(B("sparse").c_str(), O_RDONLY);
  ASSERT_GE(fd, 0);
  off_t data = ::lseek(fd, static_cast<off_t>(2 * kGiB + 9 * kMiB), SEEK_DATA);
  EXPECT_GE(data, static_cast<off_t>(2 * kGiB + 9 * kMiB));
  EXPECT_LE(data, static_cast<off_t>(3 * kGiB - 10));
  data = ::lseek(fd, static_cast<off_t>(3 * kGiB + 65536), SEEK_DATA);
  EXPECT_EQ(data, static_cast<off_t>(1ull << 40));
  ::close(fd);
  // The largest file with 1 MiB chunks: 1024 inline slots and 8192 pages of 1024.
  const uint64_t max = 8193 * kGiB;
  fd = ::open(A("sparse").c_str(), O_WRONLY);
  ASSERT_GE(fd, 0);
  EXPECT_EQ(::pwrite(fd, "x", 1, static_cast<off_t>(max)), -1);
  EXPECT_EQ(errno, EFBIG);
  EXPECT_EQ(::ftruncate(fd, static_cast<off_t>(max + 1)), -1);
  EXPECT_EQ(errno, EFBIG);
  EXPECT_EQ(::pwrite(fd, "x", 1, static_cast<off_t>(max - 1)), 1) << std::strerror(errno);
  EXPECT_EQ(::close(fd), 0) << std::strerror(errno);
  ASSERT_EQ(::stat(B("sparse").c_str(), &st), 0);
  EXPECT_EQ(static_cast<uint64_t>(st.st_size), max);
  EXPECT_EQ(ReadRange(B("sparse"), max - 1, 10), "x");
}

// Writes block k (4096 bytes of Pattern(4096, k)) at k GiB + k for k = 1..pages, one block in
// each of `pages` layout pages (1 MiB chunks), and closes the file.
::testing::AssertionResult WriteBlockInEveryPage(const std::string& path, int pages) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT, 0644);
  if (fd < 0) return ::testing::AssertionFailure() << path << ": " << std::strerror(errno);
  for (int k = 1; k <= pages; ++k) {
    std::string block = Pattern(4096, static_cast<uint64_t>(k));
    if (::pwrite(fd, block.data(), block.size(), static_cast<off_t>(k * kGiB + k)) != 4096) {
      ::close(fd);
      return ::testing::AssertionFailure() << "block " << k << ": " << std::strerror(errno);
    }
  }
  if (::close(fd) != 0) return ::testing::AssertionFailure() << "close: " << std::strerror(errno);
  return ::testing::AssertionSuccess();
}

// SEEK_DATA and SEEK_HOLE walk a file of 600 layout pages (more than a mount keeps decoded at
// once), fetching each page as they reach it: every block is found, once.
TEST_F(MultiMountTest, SeekingThroughMoreLayoutPagesThanTheMountKeeps) {
  const int pages = 600;
  ASSERT_TRUE(WriteBlockInEveryPage(A("many"), pages));
  int fd = ::open(B("many").c_str(), O_RDONLY);
  ASSERT_GE(fd, 0);
  std::vector<std::pair<off_t, off_t>> regions;
  for (off_t pos = 0;;) {
    off_t data = ::lseek(fd, pos, SEEK_DATA);
    if (data < 0) {
      EXPECT_EQ(errno, ENXIO) << std::strerror(errno);
      break;
    }
    off_t hole = ::lseek(fd, data, SEEK_HOLE);
    ASSERT_GT(hole, data) << std::strerror(errno);
    regions.emplace_back(data, hole);
    pos = hole;
  }
  ::close(fd);
  ASSERT_EQ(regions.size(), static_cast<size_t>(pages));
  for (int k = 1; k <= pages; ++k) {
    EXPECT_EQ(regions[k - 1].first, static_cast<off_t>(k * kGiB)) << k;
    EXPECT_EQ(regions[k - 1].second, static_cast<off_t>(k * kGiB + k + 4096)) << k;
  }
  EXPECT_TRUE(Same(ReadRange(B("many"), 377 * kGiB + 377, 4096), Pattern(4096, 377)));
}

// A punch over a file of 600 layout pages (more than a mount keeps decoded at once) finishes,
// one page at a time, and leaves only the bytes before it: on the other mount every block is
// gone but the first's head, and the size stays.
TEST_F(MultiMountTest, PunchingThroughMoreLayoutPagesThanTheMountKeeps) {
  const int pages = 600;
  ASSERT_TRUE(WriteBlockInEveryPage(A("many"), pages));
  int fd = ::open(A("many").c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  const off_t size = static_cast<off_t>(pages * kGiB + pages + 4096);
  const off_t from = static_cast<off_t>(kGiB + 1 + 100);
  ASSERT_EQ(::fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, from, size - from), 0)
      << std::strerror(errno);
  ASSERT_EQ(::close(fd), 0) << std::strerror(errno);
  struct stat st;
  ASSERT_EQ(::stat(B("many").c_str(), &st), 0);
  EXPECT_EQ(st.st_size, size);
  EXPECT_TRUE(Same(ReadRange(B("many"), kGiB + 1, 100), Pattern(4096, 1).substr(0, 100)));
  EXPECT_TRUE(Same(ReadRange(B("many"), kGiB + 101, 4000), std::string(4000, '\0')));
  EXPECT_TRUE(Same(ReadRange(B("many"), 377 * kGiB + 377, 4096), std::string(4096, '\0')));
  fd = ::open(B("many").c_str(), O_RDONLY);
  ASSERT_GE(fd, 0);
  EXPECT_EQ(::lseek(fd, static_cast<off_t>(2 * kGiB), SEEK_DATA), -1);
  EXPECT_EQ(errno, ENXIO);
  ::close(fd);
}

// A punch this mount has not published yet, when another mount changed those chunks first: the
// publish rebases it as it rebases a write, zeroing just the punched bytes over the other
// mount's (they came first), and a punch over chunks another mount meanwhile cut off does not
// bring them back: the file keeps the size the other mount left (a KEEP_SIZE punch never grows
// a file).
TEST_F(MultiMountTest, APunchPublishedAfterAnotherMountsChangesZeroesOnlyItsRange) {
  const int punch = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;
  std::string data = Pattern(3 * kMiB, 77);
  ASSERT_TRUE(WriteFile(A("p"), data));
  int fa = ::open(A("p").c_str(), O_RDWR);
  ASSERT_GE(fa, 0);
  ASSERT_EQ(::fallocate(fa, punch, kMiB, kMiB), 0) << std::strerror(errno);  // a whole chunk
  ASSERT_EQ(::fallocate(fa, punch, 2 * kMiB + 10, 20), 0) << std::strerror(errno);
  ASSERT_TRUE(WriteAt(B("p"), kMiB + 100, "BBBB"));
  ASSERT_TRUE(WriteAt(B("p"), 2 * kMiB + 500, "CCCC"));
  ASSERT_EQ(::close(fa), 0) << std::strerror(errno);
  std::string want = data;
  std::memset(&want[kMiB], 0, kMiB);
  std::memset(&want[2 * kMiB + 10], 0, 20);
  want.replace(2 * kMiB + 500, 4, "CCCC");
  EXPECT_TRUE(Same(ReadFile(B("p")), want));
  EXPECT_TRUE(Same(ReadFile(A("p")), want));

  fa = ::open(A("p").c_str(), O_RDWR);
  ASSERT_GE(fa, 0);
  // From byte 10: the first chunk is zeroed in part, the others whole.
  ASSERT_EQ(::fallocate(fa, punch, 10, 3 * kMiB), 0) << std::strerror(errno);
  ASSERT_EQ(::truncate(B("p").c_str(), 0), 0) << std::strerror(errno);
  ASSERT_EQ(::close(fa), 0) << std::strerror(errno);
  struct stat st;
  ASSERT_EQ(::stat(B("p").c_str(), &st), 0);
  EXPECT_EQ(st.st_size, 0);
  EXPECT_TRUE(Same(ReadFile(B("p")), ""));
}

// A dense file over several layout pages: 64 KiB chunks (a page is 64 MiB) and a mount that
// may hold only 16 MiB unpublished, so writing 200 MiB publishes a dozen times midway, each
// building its last page on the one published before. Read back whole on a second mount,
// changed there across a page border, and read again on the first.
TEST(LayoutPages, DenseFileOverSeveralPagesWithSmallChunks) {
  QUORUMFS_REQUIRE_FUSE();
  TestClusterOptions options;
  options.chunk_size = 64 * 1024;
  TestCluster cluster(options);
  TestMountOptions small_dirty;
  small_dirty.extra_opts = {"max_dirty=16M"};
  TestMount a(cluster.cluster_file(), cluster.dir() + "/mnt-a", small_dirty);
  TestMount b(cluster.cluster_file(), cluster.dir() + "/mnt-b");
  ASSERT_TRUE(a.ok() && b.ok());
  const size_t mibs = 200, tail = 333;
  int fd = ::open(a.path("dense").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  ASSERT_GE(fd, 0) << std::strerror(errno);
  for (size_t i = 0; i < mibs; ++i) {
    std::string data = Pattern(kMiB, 1000 + i);
    ASSERT_EQ(::write(fd, data.data(), data.size()), static_cast<ssize_t>(data.size()))
        << i << ": " << std::strerror(errno);
  }
  ASSERT_EQ(::write(fd, "end", 3), 3);
  std::string rest(tail - 3, 'z');
  ASSERT_EQ(::write(fd, rest.data(), rest.size()), static_cast<ssize_t>(rest.size()));
  ASSERT_EQ(::close(fd), 0) << std::strerror(errno);
  struct stat st;
  ASSERT_EQ(::stat(b.path("dense").c_str(), &st), 0);
  EXPECT_EQ(static_cast<uint64_t>(st.st_size), mibs * kMiB + tail);
  for (size_t i = 0; i < mibs; ++i) {
    ASSERT_TRUE(Same(ReadRange(b.path("dense"), i * kMiB, kMiB), Pattern(kMiB, 1000 + i)))
        << "MiB " << i;
  }
  EXPECT_EQ(ReadRange(b.path("dense"), mibs * kMiB, tail), "end" + rest);
  // 128 MiB is the border of pages 1 and 2.
  const std::string across = "across the border of two layout pages";
  ASSERT_TRUE(WriteAt(b.path("dense"), 128 * kMiB - 10, across));
  std::string want = Pattern(kMiB, 1000 + 127).substr(kMiB - 10) + Pattern(kMiB, 1000 + 128);
  want.replace(0, across.size(), across);
  EXPECT_TRUE(Same(ReadRange(a.path("dense"), 128 * kMiB - 10, want.size()), want));
  EXPECT_TRUE(Same(ReadRange(a.path("dense"), 199 * kMiB, kMiB), Pattern(kMiB, 1199)));
}

// Two mounts write interleaved 64 KiB blocks of the same slots of one layout page: each
// publish that finds the page changed rebuilds its slots from the other's bytes.
TEST_F(MultiMountTest, ConcurrentWritersOfOneLayoutPage) {
  const size_t block = 64 * 1024, blocks = 64;  // 4 MiB
  const uint64_t base = 2 * kGiB + 3 * kMiB;
  ASSERT_TRUE(WriteAt(A("paged"), base + blocks * block, "end"));
  EXPECT_EQ(ReadRange(B("paged"), base + blocks * block, 3), "end");
  int fa = ::open(A("paged").c_str(), O_WRONLY);
  int fb = ::open(B("paged").c_str(), O_WRONLY);
  ASSERT_GE(fa, 0);
  ASSERT_GE(fb, 0);
  std::string want = RaceInterleavedWriters(fa, fb, base, block, blocks, true) + "end";
  for (auto* m : {a_, b_}) {
    EXPECT_TRUE(Same(ReadRange(m->path(name_ + "/paged"), base, want.size()), want)) << m->dir();
  }
}

// A truncation into a layout page clips it without rewriting it: bytes past the new size read
// as zeros after the file grows again (on both mounts), and a page rebuilt later from the
// clipped one keeps them zeros.
TEST_F(MultiMountTest, TruncationIntoALayoutPageStaysTruncated) {
  const uint64_t base = kGiB + 3 * kMiB;
  ASSERT_TRUE(WriteAt(A("cut"), base, Fill(4 * kMiB, 'x')));
  ASSERT_EQ(::truncate(A("cut").c_str(), static_cast<off_t>(base + kMiB + 100)), 0);
  ASSERT_EQ(::truncate(A("cut").c_str(), static_cast<off_t>(base + 8 * kMiB)), 0);
  std::string want = Fill(kMiB + 100, 'x') + std::string(7 * kMiB - 100, '\0');
  for (auto* m : {a_, b_}) {
    EXPECT_TRUE(Same(ReadRange(m->path(name_ + "/cut"), base, 8 * kMiB), want)) << m->dir();
  }
  ASSERT_TRUE(WriteAt(B("cut"), base + 6 * kMiB, "y"));
  want[6 * kMiB] = 'y';
  for (auto* m : {a_, b_}) {
    EXPECT_TRUE(Same(ReadRange(m->path(name_ + "/cut"), base, 8 * kMiB), want)) << m->dir();
  }
  // O_TRUNC and a rewrite past the first page: nothing of the old pages shows.
  ASSERT_TRUE(WriteAt(A("cut"), base + 2 * kMiB, "z", O_TRUNC));
  std::string after = std::string(2 * kMiB, '\0') + "z";
  EXPECT_TRUE(Same(ReadRange(B("cut"), base, 8 * kMiB), after));
}

}  // namespace
}  // namespace testing
}  // namespace quorumfs
