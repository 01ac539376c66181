// WorkerPool: a few threads for CPU or blocking work (hashing, file I/O) so a kj event loop
// never stalls on it. Run() must be called on a thread that has a kj event loop; the returned
// promise resolves on that thread once the function has run on a worker.
#pragma once

#include <kj/async.h>

#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace quorumfs {

class WorkerPool {
 public:
  explicit WorkerPool(int threads);
  ~WorkerPool();  // finishes queued work, then joins
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  template <typename T>
  kj::Promise<T> Run(std::function<T()> fn) {
    auto paf = kj::newPromiseAndCrossThreadFulfiller<T>();
    auto fulfiller =
        std::make_shared<kj::Own<kj::CrossThreadPromiseFulfiller<T>>>(kj::mv(paf.fulfiller));
    Post([fn = std::move(fn), fulfiller]() { (*fulfiller)->fulfill(fn()); });
    return kj::mv(paf.promise);
  }

  // Runs `fn` on a worker with no result.
  void Post(std::function<void()> fn);

 private:
  void Loop();

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_;  // guarded by mu_
  bool stop_ = false;                        // guarded by mu_
  std::vector<std::thread> threads_;
};

}  // namespace quorumfs
