// quorumfs-chunkserver: one node of a quorumfs cluster. Stores chunks and metadata records
// for the keys rendezvous placement gives it, and answers the RPCs in
// schema/chunkserver.capnp. See README.md for usage.
#include <fcntl.h>
#include <kj/async-io.h>
#include <kj/async-unix.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <random>
#include <sstream>

#include "chunkserver/chunk_store.h"
#include "chunkserver/record_store.h"
#include "chunkserver/service.h"
#include "common/cluster_config.h"
#include "common/memory.h"
#include "common/rpc_connection.h"
#include "common/worker_pool.h"

namespace quorumfs {
namespace {

[[noreturn]] void Die(const std::string& message) {
  std::fprintf(stderr, "quorumfs-chunkserver: %s\n", message.c_str());
  std::fflush(stderr);
  std::_Exit(2);
}

std::string RandomHex(size_t bytes) {
  std::random_device rd;
  std::string out;
  static const char* kHex = "0123456789abcdef";
  for (size_t i = 0; i < bytes; ++i) {
    unsigned v = rd() & 0xff;
    out.push_back(kHex[v >> 4]);
    out.push_back(kHex[v & 15]);
  }
  return out;
}

// Writes `content` to `path` atomically and durably.
bool WriteFileDurably(const std::string& path, const std::string& content) {
  std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return false;
  bool ok = ::write(fd, content.data(), content.size()) == static_cast<ssize_t>(content.size()) &&
            ::fsync(fd) == 0;
  ::close(fd);
  return ok && ::rename(tmp.c_str(), path.c_str()) == 0;
}

// Makes the names in directory `dir` durable (a name created there before the fsync).
void SyncDirOrDie(const std::string& dir) {
  Status s = SyncDirectory(dir);
  if (!s.ok()) Die("cannot sync directory " + dir + ": " + s.message());
}

// Takes an exclusive lock on <dir>/LOCK for the life of the process.
void LockDataDir(const std::string& dir) {
  std::string path = dir + "/LOCK";
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) Die("cannot open " + path + ": " + std::strerror(errno));
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    char buf[32] = {0};
    ssize_t n = ::pread(fd, buf, sizeof(buf) - 1, 0);
    std::string holder = n > 0 ? std::string(buf, static_cast<size_t>(n)) : "?";
    while (!holder.empty() && (holder.back() == '\n' || holder.back() == ' ')) holder.pop_back();
    Die("data dir " + dir + " is in use by another process (pid " + holder + ")");
  }
  std::string pid = std::to_string(::getpid()) + "\n";
  if (::ftruncate(fd, 0) != 0 || ::pwrite(fd, pid.data(), pid.size(), 0) < 0) {
    Die("cannot write " + path + ": " + std::strerror(errno));
  }
  // fd stays open (and locked) until exit.
}

std::string LoadOrCreateIncarnation(const std::string& dir) {
  std::string path = dir + "/INCARNATION";
  std::ifstream in(path);
  std::string value;
  if (in >> value && value.size() == 32) return value;
  value = RandomHex(16);
  if (!WriteFileDurably(path, value + "\n"))
    Die("cannot write " + path + ": " + std::strerror(errno));
  return value;
}

// TCP keepalive on a client's connection: a client that vanished without closing (its host
// crashed or lost power, or a network cut it off for good) would otherwise leave a connection
// that nothing ever closes, holding a descriptor and its Cap'n Proto state for as long as this
// server runs (an idle connection sends nothing, so it never times out). After `idle` seconds
// without a byte the kernel probes, 3 times `idle / 3` seconds apart (at least 1 s), and then
// drops it. No TCP_USER_TIMEOUT: it would override this timing and also drop a live client that
// stops reading for that long; a reply never acknowledged ends at the retransmission limit.
void KeepAlive(kj::AsyncIoStream& stream, int idle) {
  if (idle <= 0) return;
  int one = 1, interval = std::max(1, idle / 3), count = 3;
  KJ_IF_MAYBE (e, kj::runCatchingExceptions([&]() {
                 stream.setsockopt(SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
                 stream.setsockopt(IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
                 stream.setsockopt(IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof(interval));
                 stream.setsockopt(IPPROTO_TCP, TCP_KEEPCNT, &count, sizeof(count));
               })) {
    static bool said = false;  // once: every connection would say the same
    if (!said) {
      said = true;
      std::fprintf(stderr, "quorumfs-chunkserver: cannot set TCP keepalive: %s\n",
                   e->getDescription().cStr());
    }
  }
}

// Accepts connections until the listener is dropped.
class Server {
 public:
  Server(capnp::Capability::Client bootstrap, int keepalive)
      : bootstrap_(kj::mv(bootstrap)), keepalive_(keepalive), tasks_(handler_) {}

  kj::Promise<void> Listen(kj::ConnectionReceiver& listener) {
    return listener.accept().then([this, &listener](kj::Own<kj::AsyncIoStream>&& stream) {
      KeepAlive(*stream, keepalive_);
      auto conn = kj::heap<RpcConnection>(kj::mv(stream), bootstrap_);
      auto done = conn->OnDisconnect();
      tasks_.add(done.attach(kj::mv(conn)));
      return Listen(listener);
    });
  }

 private:
  struct ErrorHandler : public kj::TaskSet::ErrorHandler {
    // A broken or garbled connection only ends that connection.
    void taskFailed(kj::Exception&& e) override {
      if (e.getType() != kj::Exception::Type::DISCONNECTED) {
        std::fprintf(stderr, "quorumfs-chunkserver: connection closed: %s\n",
                     e.getDescription().cStr());
      }
    }
  };
  capnp::Capability::Client bootstrap_;
  int keepalive_;  // seconds; 0: off
  ErrorHandler handler_;
  kj::TaskSet tasks_;
};

int Run(int argc, char** argv) {
  CLI::App app{"quorumfs-chunkserver: one node of a quorumfs cluster"};
  std::string id, listen, data, cluster_path = "/etc/quorumfs/cluster.conf";
  bool rejoin = false;
  int disk_threads = 4;
  bool buffered_chunks = false;
  uint64_t reserve = 256ull << 20;
  int64_t inline_sync_us = RecordStoreOptions{}.inline_sync_below.count();
  int keepalive = 60;
  app.add_option("--id", id, "this node's id in the cluster file")->required();
  app.add_option("--listen", listen,
                 "address to listen on, host:port (default: the node's address)");
  app.add_option("--data", data, "data directory (created if missing)")->required();
  app.add_option("--cluster", cluster_path, "cluster file")->capture_default_str();
  app.add_flag("--rejoin", rejoin,
               "this node lost its data: serve, but do not vote until fsck --repair refills it");
  app.add_option("--disk-threads", disk_threads, "threads for chunk I/O")->check(CLI::Range(1, 64));
  app.add_flag("--buffered-chunks", buffered_chunks,
               "write chunk files through the page cache instead of with O_DIRECT (fresh "
               "chunks stay cached for reads; every byte costs a kernel copy)");
  app.add_option("--reserve", reserve,
                 "free space chunk puts leave on the data disk for the metadata store, so that "
                 "unlinks and other metadata changes still work when data has filled it "
                 "(e.g. 256MiB, 1GiB, 0)")
      ->transform(CLI::AsSizeValue(false))
      ->capture_default_str();
  app.add_option("--inline-sync-below", inline_sync_us,
                 "microseconds: while the metadata store's last sync took less, the RPC thread "
                 "syncs a batch of record writes itself instead of waking the sync thread (fewer "
                 "thread wake-ups; 0: always the sync thread)")
      ->check(CLI::Range(int64_t{0}, int64_t{1000000}))
      ->capture_default_str();
  app.add_option("--keepalive", keepalive,
                 "seconds: a client connection silent this long is probed (TCP keepalive, 3 "
                 "probes a third of this apart) and dropped if its host is gone; 0: off")
      ->check(CLI::Range(0, 32767))  // the kernel's limit for TCP_KEEPIDLE
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  // Before any thread starts (the disk and sync threads), so every thread has them blocked and
  // the event loop alone receives them.
  kj::UnixEventPort::captureSignal(SIGTERM);
  kj::UnixEventPort::captureSignal(SIGINT);
  ::signal(SIGPIPE, SIG_IGN);

  auto config = ClusterConfig::Load(cluster_path);
  if (!config.ok()) Die(config.status().message());
  const NodeInfo* self = config->FindNode(id);
  if (!self) Die("node id '" + id + "' is not in " + cluster_path);
  if (listen.empty()) listen = self->address;

  if (::mkdir(data.c_str(), 0755) == 0) {
    // The data dir's own name, durable before this node promises anything from it.
    auto path = std::filesystem::path(data).lexically_normal();
    if (!path.has_filename()) path = path.parent_path();  // "dir/" names "dir"
    std::string parent = path.parent_path().string();
    SyncDirOrDie(parent.empty() ? "." : parent);
  } else if (errno != EEXIST) {
    Die("cannot create data dir " + data + ": " + std::strerror(errno));
  }
  LockDataDir(data);
  std::string incarnation = LoadOrCreateIncarnation(data);
  std::string rejoin_marker = data + "/REJOINING";
  if (rejoin && !WriteFileDurably(rejoin_marker, "1\n")) {
    Die("cannot write " + rejoin_marker + ": " + std::strerror(errno));
  }
  bool voting = ::access(rejoin_marker.c_str(), F_OK) != 0;

  // The event loop first, so that it outlives the stores (the record store holds a promise on
  // it) however Run ends.
  auto io = kj::setupAsyncIo();
  auto chunks = ChunkStore::Open(data, /*direct_io=*/!buffered_chunks);
  if (!chunks.ok()) Die(chunks.status().message());
  (*chunks)->set_reserve(reserve);
  if (std::optional<uint64_t> free = (*chunks)->FreeBytes(); free && *free < reserve) {
    std::fprintf(stderr,
                 "quorumfs-chunkserver: the data disk has %llu MiB free, less than --reserve "
                 "(%llu MiB): this node refuses new chunks until space is freed\n",
                 static_cast<unsigned long long>(*free >> 20),
                 static_cast<unsigned long long>(reserve >> 20));
  }
  RecordStoreOptions record_options;
  record_options.inline_sync_below = std::chrono::microseconds(inline_sync_us);
  auto records = RecordStore::Open(data + "/meta", record_options);
  if (!records.ok()) Die(records.status().message());
  // LevelDB syncs its files and meta/ itself, not meta/'s name here: without this a fresh node
  // could promise, crash, and come back with an empty meta/ that has forgotten its promises.
  SyncDirOrDie(data);
  // Destroyed (its queued work run) explicitly below, while the service its work refers to
  // still exists.
  auto pool = std::make_unique<WorkerPool>(disk_threads);

  kj::Own<kj::ConnectionReceiver> listener;
  KJ_IF_MAYBE (e, kj::runCatchingExceptions([&]() {
                 auto addr = io.provider->getNetwork().parseAddress(listen).wait(io.waitScope);
                 listener = addr->listen();
               })) {
    std::string why = e->getDescription().cStr();
    for (const char* known :
         {"Address already in use", "Cannot assign requested address", "Permission denied"}) {
      if (why.find(known) != std::string::npos) why = known;
    }
    Die("cannot listen on " + listen + ": " + why);
  }

  ServiceOptions options;
  options.node_id = id;
  options.data_dir = data;
  options.incarnation = incarnation;
  options.voting = voting;
  options.disk_threads = disk_threads;
  ServiceState state;
  auto shared_config = std::make_shared<const ClusterConfig>(std::move(config).value());
  capnp::Capability::Client bootstrap =
      kj::heap<ChunkserverService>(options, shared_config, **chunks, **records, *pool, state);
  std::fprintf(stderr, "quorumfs-chunkserver: node %s listening on %s (port %u), data %s%s\n",
               id.c_str(), listen.c_str(), listener->getPort(), data.c_str(),
               voting ? "" : ", rejoining (not voting)");
  std::fflush(stderr);
  // Tests read the actual port (--listen 127.0.0.1:0) from this file.
  WriteFileDurably(data + "/PORT", std::to_string(listener->getPort()) + "\n");

  {
    // (A unix-socket listener has no TCP to keep alive.)
    Server server(bootstrap, listen.rfind("unix:", 0) == 0 ? 0 : keepalive);
    auto serving = server.Listen(*listener);
    auto signal =
        io.unixEventPort.onSignal(SIGTERM).exclusiveJoin(io.unixEventPort.onSignal(SIGINT));
    signal.exclusiveJoin(serving.then([]() { return siginfo_t{}; })).wait(io.waitScope);
    // Stop accepting, refuse new requests, let in-flight ones finish (bounded).
    state.shutting_down = true;
    listener = nullptr;
    for (int i = 0; i < 1000 && state.in_flight > 0; ++i) {
      io.provider->getTimer().afterDelay(10 * kj::MILLISECONDS).wait(io.waitScope);
    }
  }
  // Work still queued after the drain (a slow disk) runs now, before the service goes.
  pool.reset();
  records->reset();  // waits for queued syncs, closes LevelDB
  std::fprintf(stderr, "quorumfs-chunkserver: node %s stopped\n", id.c_str());
  return 0;
}

}  // namespace
}  // namespace quorumfs

int main(int argc, char** argv) {
  quorumfs::KeepLargeBuffersInHeap();
  return quorumfs::Run(argc, argv);
}
