// LocalCluster: three quorumfs-chunkservers in a directory, for the benchmarks. Stops them
// (SIGTERM) when destroyed.
#pragma once

#include <fcntl.h>
#include <kj/async.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "common/cluster_client.h"

namespace quorumfs {

class LocalCluster {
 public:
  LocalCluster(const std::string& bin, const std::string& dir) : dir_(dir) {
    std::string conf = "epoch = 1\nreplicas = 3\nwrite_quorum = 2\nread_quorum = 2\n";
    for (int i = 0; i < 3; ++i) {
      int port = 20000 + static_cast<int>(::getpid() % 20000) + i;
      conf += "node " + std::string(1, 'a' + i) + " 127.0.0.1:" + std::to_string(port) + "\n";
    }
    cluster_file_ = dir + "/cluster.conf";
    std::ofstream(cluster_file_) << conf;
    for (int i = 0; i < 3; ++i) {
      std::string id(1, 'a' + i);
      pid_t pid = ::fork();
      if (pid == 0) {
        int fd = ::open((dir + "/" + id + ".log").c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
        ::dup2(fd, 2);
        ::execl(bin.c_str(), bin.c_str(), "--id", id.c_str(), "--data", (dir + "/" + id).c_str(),
                "--cluster", cluster_file_.c_str(), nullptr);
        ::_exit(127);
      }
      pids_.push_back(pid);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
  ~LocalCluster() {
    for (pid_t p : pids_) ::kill(p, SIGTERM);
    for (pid_t p : pids_) ::waitpid(p, nullptr, 0);
  }
  const std::string& cluster_file() const { return cluster_file_; }

 private:
  std::string dir_, cluster_file_;
  std::vector<pid_t> pids_;
};

// Median, min and max of a measurement's runs.
struct Stat {
  double median, min, max;
};

inline Stat Summarize(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return Stat{v[v.size() / 2], v.front(), v.back()};
}

using Clock = std::chrono::steady_clock;
inline double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

// Runs `count` operations with `window` in flight on the client loop; returns seconds and
// fills per-operation latencies (seconds).
inline double Pipeline(ClusterClient& client, int count, int window,
                       std::function<kj::Promise<bool>(int)> op, std::vector<double>* latencies) {
  auto t0 = Clock::now();
  bool ok = client.RunSync<bool>([&]() -> kj::Promise<bool> {
    struct State {
      int next = 0, done = 0;
      bool failed = false;
    };
    auto st = std::make_shared<State>();
    auto paf = kj::newPromiseAndFulfiller<bool>();
    auto fulfiller = std::make_shared<kj::Own<kj::PromiseFulfiller<bool>>>(kj::mv(paf.fulfiller));
    auto launch = std::make_shared<std::function<void()>>();
    *launch = [st, count, op, latencies, fulfiller,
               launch_weak = std::weak_ptr<std::function<void()>>(launch)]() {
      int i = st->next++;
      auto start = Clock::now();
      op(i)
          .then([st, count, latencies, fulfiller, start, launch_weak](bool ok) {
            if (latencies) latencies->push_back(Seconds(Clock::now() - start));
            if (!ok) st->failed = true;
            ++st->done;
            if (st->done == count) {
              (*fulfiller)->fulfill(!st->failed);
            } else if (st->next < count) {
              if (auto l = launch_weak.lock()) (*l)();
            }
          })
          .detach([](kj::Exception&& e) {
            std::fprintf(stderr, "bench op failed: %s\n", e.getDescription().cStr());
          });
    };
    for (int i = 0; i < window && i < count; ++i) (*launch)();
    return paf.promise.attach(kj::heap<std::shared_ptr<std::function<void()>>>(launch));
  });
  if (!ok) std::fprintf(stderr, "some operations failed\n");
  return Seconds(Clock::now() - t0);
}

}  // namespace quorumfs
