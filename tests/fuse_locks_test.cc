// File locks through real mounts of one cluster (README, "File locks"): fcntl record locks and
// flock seen by every mount, blocking locks that wait and can be interrupted, locks dropped by
// close, process exit and unmount, locks of a killed mount lapsing after its lease (and a live
// mount's not lapsing), data published at unlock and reread at lock, and sqlite3 on two mounts.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <pthread.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <future>
#include <string>
#include <thread>

#include "tests/test_cluster.h"
#include "tests/test_mount.h"

namespace quorumfs {
namespace testing {
namespace {

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// fcntl F_SETLK/F_SETLKW/F_GETLK on [start, start+len) (len 0: to the end). Returns 0 or errno.
int Lock(int fd, int cmd, short type, off_t start, off_t len, struct flock* out = nullptr) {
  struct flock fl;
  std::memset(&fl, 0, sizeof(fl));
  fl.l_type = type;
  fl.l_whence = SEEK_SET;
  fl.l_start = start;
  fl.l_len = len;
  int r = ::fcntl(fd, cmd, &fl);
  if (out) *out = fl;
  return r == 0 ? 0 : errno;
}

int Flock(int fd, int op) { return ::flock(fd, op) == 0 ? 0 : errno; }

int OpenRw(const std::string& path) { return ::open(path.c_str(), O_RDWR | O_CREAT, 0644); }

std::string ReadAll(int fd) {
  std::string out;
  char buf[4096];
  ssize_t n;
  off_t at = 0;
  while ((n = ::pread(fd, buf, sizeof(buf), at)) > 0) {
    out.append(buf, static_cast<size_t>(n));
    at += n;
  }
  return out;
}

std::pair<int, std::string> Sh(const std::string& cmd) {
  std::string out;
  FILE* p = ::popen((cmd + " 2>&1").c_str(), "r");
  if (!p) return {-1, "popen failed"};
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
  int st = ::pclose(p);
  return {WIFEXITED(st) ? WEXITSTATUS(st) : -1, out};
}

void NoteSignal(int) {}

// Forks a child that opens `path`, takes a lock with `lock(fd)` (0: granted) and then waits,
// descriptor open, to be killed. Returns its pid once the lock is held, or -1.
pid_t ChildHoldingLock(const std::string& path, int (*lock)(int fd)) {
  int ready[2];
  if (::pipe(ready) != 0) return -1;
  pid_t child = ::fork();
  if (child == 0) {
    int fd = OpenRw(path);
    char ok = fd >= 0 && lock(fd) == 0 ? 'y' : 'n';
    (void)!::write(ready[1], &ok, 1);
    ::pause();
    ::_exit(0);
  }
  ::close(ready[1]);
  char ok = 0;
  bool held = child > 0 && ::read(ready[0], &ok, 1) == 1 && ok == 'y';
  ::close(ready[0]);
  if (child > 0 && !held) {
    ::kill(child, SIGKILL);
    ::waitpid(child, nullptr, 0);
  }
  return held ? child : -1;
}

void KillChild(pid_t child) {
  ::kill(child, SIGKILL);
  ::waitpid(child, nullptr, 0);
}

class FileLocksTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    std::string why;
    if (!FuseAvailable(&why)) return;
    cluster_ = new TestCluster();
    // A short lease, so that every test also runs through several renewals.
    TestMountOptions o;
    o.extra_opts = {"lock_lease=2"};
    a_ = new TestMount(cluster_->cluster_file(), cluster_->dir() + "/mnt-a", o);
    b_ = new TestMount(cluster_->cluster_file(), cluster_->dir() + "/mnt-b", o);
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

TestCluster* FileLocksTest::cluster_ = nullptr;
TestMount* FileLocksTest::a_ = nullptr;
TestMount* FileLocksTest::b_ = nullptr;

TEST_F(FileLocksTest, RecordLocksConflictAcrossMounts) {
  int fa = OpenRw(A("f"));
  ASSERT_GE(fa, 0) << std::strerror(errno);
  int fb = OpenRw(B("f"));
  ASSERT_GE(fb, 0) << std::strerror(errno);
  ASSERT_EQ(Lock(fa, F_SETLK, F_WRLCK, 0, 100), 0);
  // B overlaps A's write lock: refused, and F_GETLK names A's lock (no pid: another mount's).
  EXPECT_EQ(Lock(fb, F_SETLK, F_WRLCK, 50, 10), EAGAIN);
  EXPECT_EQ(Lock(fb, F_SETLK, F_RDLCK, 99, 1), EAGAIN);
  struct flock got;
  ASSERT_EQ(Lock(fb, F_GETLK, F_WRLCK, 50, 10, &got), 0);
  EXPECT_EQ(got.l_type, F_WRLCK);
  EXPECT_EQ(got.l_start, 0);
  EXPECT_EQ(got.l_len, 100);
  EXPECT_EQ(got.l_pid, 0);
  // Next to it: granted. A then sees B's read lock to the end of the file.
  ASSERT_EQ(Lock(fb, F_SETLK, F_RDLCK, 100, 0), 0);
  ASSERT_EQ(Lock(fa, F_GETLK, F_WRLCK, 150, 10, &got), 0);
  EXPECT_EQ(got.l_type, F_RDLCK);
  EXPECT_EQ(got.l_start, 100);
  EXPECT_EQ(got.l_len, 0);
  // Readers share: A may read-lock there too, but not write.
  EXPECT_EQ(Lock(fa, F_SETLK, F_RDLCK, 200, 10), 0);
  EXPECT_EQ(Lock(fa, F_SETLK, F_WRLCK, 200, 10), EAGAIN);
  // A's own locks never block A: it turns its write lock into a read lock in place.
  EXPECT_EQ(Lock(fa, F_SETLK, F_RDLCK, 0, 100), 0);
  EXPECT_EQ(Lock(fb, F_SETLK, F_RDLCK, 50, 10), 0);
  EXPECT_EQ(Lock(fb, F_SETLK, F_WRLCK, 50, 10), EAGAIN);
  // Unlocked on A: B's write goes through; F_GETLK on A then reports B's write lock.
  ASSERT_EQ(Lock(fa, F_SETLK, F_UNLCK, 0, 0), 0);
  EXPECT_EQ(Lock(fb, F_SETLK, F_WRLCK, 0, 100), 0);
  ASSERT_EQ(Lock(fa, F_GETLK, F_RDLCK, 0, 1, &got), 0);
  EXPECT_EQ(got.l_type, F_WRLCK);
  // Still held after several lease renewals (2 s lease).
  std::this_thread::sleep_for(std::chrono::milliseconds(4500));
  EXPECT_EQ(Lock(fa, F_SETLK, F_RDLCK, 10, 1), EAGAIN);
  // Closing B's descriptor drops every POSIX lock B's process held on the file.
  ::close(fb);
  EXPECT_EQ(Lock(fa, F_SETLK, F_WRLCK, 0, 0), 0);
  ::close(fa);
}

TEST_F(FileLocksTest, FlockAcrossMountsConvertsAndEndsWithTheLastClose) {
  int fa = OpenRw(A("f"));
  ASSERT_GE(fa, 0);
  int fb = OpenRw(B("f"));
  ASSERT_GE(fb, 0);
  ASSERT_EQ(Flock(fa, LOCK_EX | LOCK_NB), 0);
  EXPECT_EQ(Flock(fb, LOCK_SH | LOCK_NB), EWOULDBLOCK);
  // flock and fcntl locks do not interact.
  EXPECT_EQ(Lock(fb, F_SETLK, F_WRLCK, 0, 0), 0);
  EXPECT_EQ(Lock(fb, F_SETLK, F_UNLCK, 0, 0), 0);
  // Downgraded to shared: B may share it, not take it exclusively.
  ASSERT_EQ(Flock(fa, LOCK_SH | LOCK_NB), 0);
  ASSERT_EQ(Flock(fb, LOCK_SH | LOCK_NB), 0);
  EXPECT_EQ(Flock(fa, LOCK_EX | LOCK_NB), EWOULDBLOCK);
  // A duplicate of B's descriptor shares its open file description: closing one keeps the lock.
  int fb2 = ::dup(fb);
  ::close(fb2);
  EXPECT_EQ(Flock(fa, LOCK_EX | LOCK_NB), EWOULDBLOCK);
  // The last close drops it. The kernel sends that release in the background after close()
  // returns (FUSE_RELEASE), so it takes a moment to arrive.
  ::close(fb);
  auto closed = Clock::now();
  int r = EWOULDBLOCK;
  while (r == EWOULDBLOCK && SecondsSince(closed) < 5) r = Flock(fa, LOCK_EX | LOCK_NB);
  EXPECT_EQ(r, 0);
  ASSERT_EQ(Flock(fa, LOCK_UN), 0);
  int fb3 = OpenRw(B("f"));
  EXPECT_EQ(Flock(fb3, LOCK_EX | LOCK_NB), 0);
  ::close(fb3);
  ::close(fa);
}

TEST_F(FileLocksTest, BlockingLockWaitsForTheHolderAndCanBeInterrupted) {
  int fa = OpenRw(A("f"));
  ASSERT_GE(fa, 0);
  ASSERT_EQ(Lock(fa, F_SETLK, F_WRLCK, 0, 0), 0);
  int fb = OpenRw(B("f"));
  ASSERT_GE(fb, 0);

  // A signal (no SA_RESTART) interrupts a waiting F_SETLKW with EINTR.
  struct sigaction sa, old;
  std::memset(&sa, 0, sizeof(sa));
  sa.sa_handler = NoteSignal;
  sigemptyset(&sa.sa_mask);
  ASSERT_EQ(::sigaction(SIGUSR2, &sa, &old), 0);
  std::promise<pthread_t> who;
  auto interrupted = std::async(std::launch::async, [&]() {
    who.set_value(::pthread_self());
    return Lock(fb, F_SETLKW, F_WRLCK, 0, 10);
  });
  pthread_t waiter = who.get_future().get();
  EXPECT_EQ(interrupted.wait_for(std::chrono::milliseconds(700)), std::future_status::timeout);
  auto sent = Clock::now();
  ::pthread_kill(waiter, SIGUSR2);
  ASSERT_EQ(interrupted.wait_for(std::chrono::seconds(5)), std::future_status::ready);
  EXPECT_EQ(interrupted.get(), EINTR);
  EXPECT_LT(SecondsSince(sent), 2.0);
  ::sigaction(SIGUSR2, &old, nullptr);

  // flock with LOCK_EX (blocking) and F_SETLKW both wait until A lets go.
  int fb_flock = OpenRw(B("f"));
  int fa_flock = OpenRw(A("f"));
  ASSERT_EQ(Flock(fa_flock, LOCK_EX), 0);
  auto flocked = std::async(std::launch::async, [&]() { return Flock(fb_flock, LOCK_EX); });
  auto waited = std::async(std::launch::async, [&]() { return Lock(fb, F_SETLKW, F_WRLCK, 5, 1); });
  EXPECT_EQ(waited.wait_for(std::chrono::milliseconds(1500)), std::future_status::timeout);
  EXPECT_EQ(flocked.wait_for(std::chrono::milliseconds(10)), std::future_status::timeout);
  auto released = Clock::now();
  ::close(fa);  // A's process closes the file: its POSIX locks go
  ASSERT_EQ(waited.wait_for(std::chrono::seconds(10)), std::future_status::ready);
  EXPECT_EQ(waited.get(), 0);
  EXPECT_LT(SecondsSince(released), 2.0);
  EXPECT_EQ(flocked.wait_for(std::chrono::milliseconds(300)), std::future_status::timeout);
  ASSERT_EQ(Flock(fa_flock, LOCK_UN), 0);
  ASSERT_EQ(flocked.wait_for(std::chrono::seconds(10)), std::future_status::ready);
  EXPECT_EQ(flocked.get(), 0);
  ::close(fa_flock);
  ::close(fb_flock);
  ::close(fb);
}

TEST_F(FileLocksTest, AProcessLocksGoWhenItExits) {
  pid_t child = ChildHoldingLock(A("f"), [](int fd) { return Lock(fd, F_SETLK, F_WRLCK, 0, 0); });
  ASSERT_GT(child, 0);
  int fb = OpenRw(B("f"));
  ASSERT_GE(fb, 0);
  EXPECT_EQ(Lock(fb, F_SETLK, F_RDLCK, 0, 1), EAGAIN);
  KillChild(child);
  // The kernel closes the dead process's descriptors; the close drops its locks at once (not
  // after the 2 s lease).
  EXPECT_EQ(Lock(fb, F_SETLK, F_WRLCK, 0, 0), 0);
  ::close(fb);
}

TEST_F(FileLocksTest, UnlockPublishesTheDataAndLockRereadsIt) {
  int fa = OpenRw(A("f"));
  ASSERT_GE(fa, 0);
  ASSERT_EQ(::pwrite(fa, "old-old-old", 11, 0), 11);
  ASSERT_EQ(::fsync(fa), 0);
  // B opens and reads the old bytes (its kernel now caches them).
  int fb = OpenRw(B("f"));
  ASSERT_GE(fb, 0);
  EXPECT_EQ(ReadAll(fb), "old-old-old");
  // A locks, writes and unlocks, with no close and no fsync: the unlock publishes.
  ASSERT_EQ(Lock(fa, F_SETLKW, F_WRLCK, 0, 0), 0);
  ASSERT_EQ(::pwrite(fa, "new-new-new-new", 15, 0), 15);
  ASSERT_EQ(Lock(fa, F_SETLK, F_UNLCK, 0, 0), 0);
  // B locks and reads through the same descriptor: A's bytes, not its cached ones.
  ASSERT_EQ(Lock(fb, F_SETLKW, F_RDLCK, 0, 0), 0);
  EXPECT_EQ(ReadAll(fb), "new-new-new-new");
  ASSERT_EQ(Lock(fb, F_SETLK, F_UNLCK, 0, 0), 0);
  // The same with flock.
  ASSERT_EQ(Flock(fa, LOCK_EX), 0);
  ASSERT_EQ(::pwrite(fa, "third", 5, 0), 5);
  ASSERT_EQ(Flock(fa, LOCK_UN), 0);
  ASSERT_EQ(Flock(fb, LOCK_SH), 0);
  EXPECT_EQ(ReadAll(fb), "thirdew-new-new");
  ASSERT_EQ(Flock(fb, LOCK_UN), 0);
  ::close(fa);
  ::close(fb);
}

TEST_F(FileLocksTest, ClosingAReadOnlyDescriptorPublishesWhatTheOtherWrote) {
  // The process writes through one descriptor and closes another (read-only) one: the close
  // drops its POSIX locks, so what it wrote must be published before they go.
  int fw = OpenRw(A("f"));
  ASSERT_GE(fw, 0);
  int fr = ::open(A("f").c_str(), O_RDONLY);
  ASSERT_GE(fr, 0);
  ASSERT_EQ(Lock(fw, F_SETLK, F_WRLCK, 0, 0), 0);
  ASSERT_EQ(::pwrite(fw, "under the lock", 14, 0), 14);
  int fb = OpenRw(B("f"));
  ASSERT_GE(fb, 0);
  EXPECT_EQ(Lock(fb, F_SETLK, F_RDLCK, 0, 0), EAGAIN);
  ::close(fr);
  ASSERT_EQ(Lock(fb, F_SETLK, F_RDLCK, 0, 0), 0);
  EXPECT_EQ(ReadAll(fb), "under the lock");
  ::close(fb);
  ::close(fw);
}

TEST_F(FileLocksTest, OpenFileDescriptionLocksConflictAndEndWithTheirFile) {
  // OFD locks (F_OFD_SETLK: QEMU, systemd) belong to the open file description. No FLUSH or
  // RELEASE names their owner; they go when the mount's last descriptor of the file closes.
  int fa = OpenRw(A("f"));
  ASSERT_GE(fa, 0);
  int fb = OpenRw(B("f"));
  ASSERT_GE(fb, 0);
  ASSERT_EQ(Lock(fa, F_OFD_SETLK, F_WRLCK, 0, 10), 0);
  EXPECT_EQ(Lock(fb, F_OFD_SETLK, F_WRLCK, 5, 1), EAGAIN);
  EXPECT_EQ(Lock(fb, F_SETLK, F_RDLCK, 9, 1), EAGAIN);  // and POSIX locks of other processes
  EXPECT_EQ(Lock(fb, F_OFD_SETLK, F_WRLCK, 10, 10), 0);
  // A second description on A is another owner, even in the same process.
  int fa2 = OpenRw(A("f"));
  ASSERT_GE(fa2, 0);
  EXPECT_EQ(Lock(fa2, F_OFD_SETLK, F_RDLCK, 0, 1), EAGAIN);
  ::close(fa2);
  ::close(fa);  // A's last descriptor of the file: its OFD lock goes (RELEASE comes after)
  auto closed = Clock::now();
  int r = EAGAIN;
  while (r == EAGAIN && SecondsSince(closed) < 5) r = Lock(fb, F_OFD_SETLK, F_WRLCK, 0, 10);
  EXPECT_EQ(r, 0);
  ::close(fb);
}

TEST_F(FileLocksTest, AKilledMountsLocksLapseAfterItsLeaseAndAnUnmountedOnesAtOnce) {
  // C holds a lock and dies without a word: its lock counts until the lease (2 s) and the
  // clock-skew bound (1 s) have passed since its last renewal, then B may take it.
  TestMountOptions o;
  o.extra_opts = {"lock_lease=2"};
  auto c = std::make_unique<TestMount>(cluster_->cluster_file(), cluster_->dir() + "/mnt-c", o);
  ASSERT_TRUE(c->ok());
  int fc = OpenRw(c->path(name_ + "/f"));
  ASSERT_GE(fc, 0) << std::strerror(errno);
  ASSERT_EQ(Lock(fc, F_SETLK, F_WRLCK, 0, 0), 0);
  int fb = OpenRw(B("f"));
  ASSERT_GE(fb, 0);
  EXPECT_EQ(Lock(fb, F_SETLK, F_WRLCK, 0, 0), EAGAIN);
  c->Kill();
  auto killed = Clock::now();
  EXPECT_EQ(Lock(fb, F_SETLK, F_WRLCK, 0, 0), EAGAIN);
  int r = EAGAIN;
  while (r == EAGAIN && SecondsSince(killed) < 20) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    r = Lock(fb, F_SETLK, F_WRLCK, 0, 0);
  }
  EXPECT_EQ(r, 0);
  double lapsed = SecondsSince(killed);
  EXPECT_GT(lapsed, 1.0);  // at least the skew bound past a renewal just before the kill
  EXPECT_LT(lapsed, 6.0);  // lease + skew + one renewal period, with slack
  ::close(fc);
  ::close(fb);
  c.reset();

  // D has a long lease but is stopped cleanly: its locks go with it, not 30 s later.
  TestMountOptions longer;
  longer.extra_opts = {"lock_lease=30"};
  auto d =
      std::make_unique<TestMount>(cluster_->cluster_file(), cluster_->dir() + "/mnt-d", longer);
  ASSERT_TRUE(d->ok());
  {
    // The lock is taken by a child process, which stays alive holding it while D unmounts.
    pid_t child = ChildHoldingLock(d->path(name_ + "/g"),
                                   [](int fd) { return Flock(fd, LOCK_EX | LOCK_NB); });
    ASSERT_GT(child, 0);
    int fg = OpenRw(B("g"));
    ASSERT_GE(fg, 0);
    EXPECT_EQ(Flock(fg, LOCK_EX | LOCK_NB), EWOULDBLOCK);
    // Stopped (SIGTERM) while the child still holds the file open.
    ::kill(d->pid(), SIGTERM);
    EXPECT_TRUE(d->WaitCleanExit(20)) << d->Log();
    auto gone = Clock::now();
    EXPECT_EQ(Flock(fg, LOCK_EX | LOCK_NB), 0);
    EXPECT_LT(SecondsSince(gone), 5.0);
    KillChild(child);
    ::close(fg);
  }
  d->Stop();
}

// An unlock whose data cannot be published (no write quorum) fails and keeps the lock: gone,
// it would let another mount write under the lock, and these bytes, published at a later
// close, would undo that write. Once the cluster is back, the close publishes them and the
// lock goes; the next holder reads them.
TEST_F(FileLocksTest, AnUnlockThatCannotPublishKeepsTheLock) {
  TestMountOptions o;
  o.op_timeout = 2;
  o.extra_opts = {"lock_lease=30"};
  auto c = std::make_unique<TestMount>(cluster_->cluster_file(), cluster_->dir() + "/mnt-c", o);
  ASSERT_TRUE(c->ok());
  int fc = OpenRw(c->path(name_ + "/f"));
  ASSERT_GE(fc, 0) << std::strerror(errno);
  ASSERT_EQ(Lock(fc, F_SETLK, F_WRLCK, 0, 0), 0);
  ASSERT_EQ(::pwrite(fc, "under the lock", 14, 0), 14);
  {
    Frozen f1(cluster_->pid(1)), f2(cluster_->pid(2));
    ASSERT_TRUE(f1.ok() && f2.ok());
    EXPECT_NE(Lock(fc, F_SETLK, F_UNLCK, 0, 0), 0);
  }
  int fb = OpenRw(B("f"));
  ASSERT_GE(fb, 0) << std::strerror(errno);
  EXPECT_EQ(Lock(fb, F_SETLK, F_WRLCK, 0, 0), EAGAIN);
  EXPECT_EQ(::close(fc), 0) << std::strerror(errno);
  ASSERT_EQ(Lock(fb, F_SETLKW, F_WRLCK, 0, 0), 0);
  EXPECT_EQ(ReadAll(fb), "under the lock");
  ASSERT_EQ(Lock(fb, F_SETLK, F_UNLCK, 0, 0), 0);
  ::close(fb);
  c->Stop();
}

// The same for a close that drops a process's locks while another descriptor of the file stays
// open on the mount: the locks stay until the writes are published (the lock loop retries,
// every lock_lease / 3), not released at once with the writes left to a later flush. The
// servers' disks are full for chunks (less free than --reserve) but not for metadata, so the
// publish fails at once while lock changes still go through.
TEST_F(FileLocksTest, ACloseThatCannotPublishKeepsTheLocksUntilItDoes) {
  ASSERT_EQ(::geteuid(), 0u) << "this test mounts tmpfs file systems and needs root";
  TestClusterOptions co;
  co.start = false;
  co.server_args = {"--reserve", "8MiB"};
  TestCluster cluster(co);
  TmpfsDisks disks;
  ASSERT_NO_FATAL_FAILURE(StartOnTmpfs(cluster, "40m", &disks));
  TestMountOptions o;
  o.op_timeout = 3;
  o.extra_opts = {"lock_lease=6"};
  TestMount c(cluster.cluster_file(), cluster.dir() + "/mnt-c", o);
  TestMount b(cluster.cluster_file(), cluster.dir() + "/mnt-b", o);
  ASSERT_TRUE(c.ok() && b.ok());
  int keep = OpenRw(c.path("f"));
  int fc = OpenRw(c.path("f"));
  ASSERT_GE(keep, 0) << std::strerror(errno);
  ASSERT_GE(fc, 0) << std::strerror(errno);
  ASSERT_EQ(Lock(fc, F_SETLK, F_WRLCK, 0, 0), 0);
  ASSERT_EQ(::pwrite(fc, "under the lock", 14, 0), 14);
  // 4 MiB left on each disk: below the 8 MiB reserve, so every chunk put is refused.
  std::string ballast(36 << 20, 'b');
  for (int i = 0; i < 3; ++i) {
    int fd = ::open((cluster.data_dir(i) + "/ballast").c_str(), O_CREAT | O_WRONLY, 0644);
    ASSERT_GE(fd, 0) << std::strerror(errno);
    ASSERT_EQ(::write(fd, ballast.data(), ballast.size()), static_cast<ssize_t>(ballast.size()));
    ::close(fd);
  }
  EXPECT_NE(::close(fc), 0);
  int fb = OpenRw(b.path("f"));
  ASSERT_GE(fb, 0) << std::strerror(errno);
  EXPECT_EQ(Lock(fb, F_SETLK, F_WRLCK, 0, 0), EAGAIN);
  // The same process's next lock of the file publishes and releases first: it cannot either.
  EXPECT_EQ(Lock(keep, F_SETLK, F_RDLCK, 0, 0), ENOSPC);
  for (int i = 0; i < 3; ++i) ::unlink((cluster.data_dir(i) + "/ballast").c_str());
  auto waiting = Clock::now();
  ASSERT_EQ(Lock(fb, F_SETLKW, F_WRLCK, 0, 0), 0);
  EXPECT_LT(SecondsSince(waiting), 10.0);
  EXPECT_EQ(ReadAll(fb), "under the lock");
  ASSERT_EQ(Lock(fb, F_SETLK, F_UNLCK, 0, 0), 0);
  ::close(fb);
  EXPECT_EQ(::close(keep), 0) << std::strerror(errno);
}

TEST_F(FileLocksTest, SqliteOnTwoMountsLosesNoUpdate) {
  if (Sh("command -v sqlite3 >/dev/null").first != 0) {
    GTEST_SKIP() << "the sqlite3 command is not installed (scripts/packages.sh installs it)";
  }
  auto r = Sh("sqlite3 '" + A("db") + "' 'CREATE TABLE c (n INTEGER); INSERT INTO c VALUES (0);'");
  ASSERT_EQ(r.first, 0) << r.second;
  // Two writers, one per mount, each adding 1 twenty times in its own transactions: without
  // locks every mount sees, updates are lost (or the database breaks).
  constexpr int kEach = 20;
  auto loop = [&](const std::string& db) {
    return Sh("for i in $(seq " + std::to_string(kEach) + "); do sqlite3 -cmd '.timeout 30000' '" +
              db + "' 'BEGIN IMMEDIATE; UPDATE c SET n = n + 1; COMMIT;' || exit 1; done");
  };
  auto on_a = std::async(std::launch::async, [&]() { return loop(A("db")); });
  auto on_b = std::async(std::launch::async, [&]() { return loop(B("db")); });
  auto ra = on_a.get();
  auto rb = on_b.get();
  EXPECT_EQ(ra.first, 0) << ra.second;
  EXPECT_EQ(rb.first, 0) << rb.second;
  r = Sh("sqlite3 '" + B("db") + "' 'PRAGMA integrity_check; SELECT n FROM c;'");
  EXPECT_EQ(r.first, 0) << r.second;
  EXPECT_EQ(r.second, "ok\n" + std::to_string(2 * kEach) + "\n");
}

}  // namespace
}  // namespace testing
}  // namespace quorumfs
