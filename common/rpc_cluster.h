// RpcCluster: the client's connections to every chunkserver, over Cap'n Proto. Lives on one kj
// event loop thread, which owns every connection; other threads reach it through that loop's
// kj::Executor (see ClusterClient).
//
// Connections are made on first use and re-made after a failure with exponential backoff.
// Every call has a deadline (call_timeout). A node whose connect failed, or whose connection
// answered nothing for a whole call_timeout (a network that drops packets silently, a host
// that lost power: TCP itself would wait many minutes), is marked down: calls to it fail at
// once with Unavailable while reconnects run in the background, so a dead node costs one
// timeout when it dies and none after, and never a hang.
#pragma once

#include <kj/async-io.h>
#include <kj/timer.h>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/chunk_transport.h"
#include "common/cluster_config.h"
#include "common/record_transport.h"
#include "common/rpc_connection.h"
#include "schema/chunkserver.capnp.h"

namespace quorumfs {

struct RpcClusterOptions {
  kj::Duration call_timeout = 5 * kj::SECONDS;
  kj::Duration connect_timeout = 1 * kj::SECONDS;
  kj::Duration reconnect_min = 20 * kj::MILLISECONDS;
  kj::Duration reconnect_max = 1 * kj::SECONDS;
  // Told (on the loop thread) when a node is marked down, when it is reachable again, and when
  // a connection that answered nothing is dropped; empty: nobody is told.
  std::function<void(const std::string&)> log;
};

struct NodeStatsInfo {
  std::string node_id, incarnation, version;
  uint64_t epoch = 0, capacity = 0, used = 0, available = 0;
  uint64_t chunk_count = 0, chunk_bytes = 0, record_count = 0;
  bool voting = true;
  int64_t uptime_ns = 0;
};

struct ScannedRecord {
  std::string key;
  Ballot promised, accepted;
  std::optional<std::string> value;
};

// One page of scanRecords.
struct ScanPage {
  std::vector<ScannedRecord> records;
  bool more = false;   // more keys follow
  bool voting = true;  // false: the node is rejoining, its rows may be missing
};

struct ListedChunk {
  ChunkId id;
  uint64_t size = 0;
  int64_t last_put_ns = 0;
  std::string hint;
};

class RpcCluster : public RecordTransport,
                   public ChunkTransport,
                   private kj::TaskSet::ErrorHandler {
 public:
  RpcCluster(kj::AsyncIoProvider& io, kj::Timer& timer, RpcClusterOptions options);
  ~RpcCluster() override;

  void SetConfig(std::shared_ptr<const ClusterConfig> config);
  const RpcClusterOptions& options() const { return options_; }

  // RecordTransport
  kj::Promise<Result<PrepareReply>> Prepare(const std::string& node, const std::string& key,
                                            Ballot ballot) override;
  kj::Promise<Result<AcceptReply>> Accept(const std::string& node, const std::string& key,
                                          Ballot ballot, const std::string& value) override;
  kj::Promise<Result<ReadAcceptedReply>> ReadAccepted(const std::string& node,
                                                      const std::string& key) override;
  kj::Promise<Result<std::vector<ReadAcceptedReply>>> ReadAcceptedBatch(
      const std::string& node, const std::vector<std::string>& keys) override;
  // ChunkTransport
  kj::Promise<Status> PutChunk(const std::string& node, const ChunkId& id,
                               std::shared_ptr<const std::string> data,
                               const std::string& hint) override;
  kj::Promise<Result<std::string>> GetChunk(const std::string& node, const ChunkId& id) override;
  kj::Promise<Result<bool>> ReportCorrupt(const std::string& node, const ChunkId& id) override;

  // Admin calls (fsck, status).
  kj::Promise<Result<NodeStatsInfo>> Stats(const std::string& node);
  kj::Promise<Result<std::vector<bool>>> HasChunks(const std::string& node,
                                                   const std::vector<ChunkId>& ids);
  // Returns the page and whether more follow.
  kj::Promise<Result<std::pair<std::vector<ListedChunk>, bool>>> ListChunks(
      const std::string& node, const std::optional<ChunkId>& after, uint32_t limit);
  kj::Promise<Result<bool>> DeleteChunk(const std::string& node, const ChunkId& id,
                                        int64_t mark_start_ns, int64_t grace_ns);
  // scanRecords: see schema/chunkserver.capnp. `keys_only`: records come without their values.
  kj::Promise<Result<ScanPage>> ScanRecords(const std::string& node, const std::string& prefix,
                                            const std::string& after, uint32_t limit,
                                            bool keys_only = false);
  // deleteRecord: see schema/chunkserver.capnp (accepted and promised ballots as scanned).
  kj::Promise<Result<bool>> DeleteRecord(const std::string& node, const std::string& key,
                                         Ballot ballot, Ballot promised, Ballot fence);
  kj::Promise<Status> FinishRejoin(const std::string& node);

  // Nodes with a connection open (for tests: a closed connection is let go).
  size_t OpenConnections() const;

 private:
  void taskFailed(kj::Exception&& e) override;
  // One readAcceptedBatch call: the states of a prefix of `keys` (see the schema).
  kj::Promise<Result<std::vector<ReadAcceptedReply>>> ReadAcceptedBatchOnce(
      const std::string& node, const std::vector<std::string>& keys);
  struct Node;
  Node& NodeFor(const std::string& id);
  kj::Promise<rpc::Chunkserver::Client> Connect(Node& node);
  void StartConnect(Node& node);  // a connect attempt, kept in node.connecting
  // Drops node's connection `generation` (if still its current one) a turn later; with
  // `mark_down`, the node counts as unreachable until a reconnect works.
  void DropLater(Node& node, uint64_t generation, std::string why, bool mark_down);
  // A new connection to `node`: used from now on (calls wait for its identity check), and
  // watched.
  void Connected(Node& node, kj::Own<RpcConnection> conn, rpc::Chunkserver::Client client);
  void Disconnect(Node& node, const std::string& why);
  void Log(const std::string& message);

  // Runs `fn(client)` against `node` with the call deadline; converts every exception into a
  // Status (and drops the connection if it broke).
  template <typename T, typename Fn>
  kj::Promise<Result<T>> Call(const std::string& node, Fn fn);
  // Call's body: one try that ends by `deadline`; `may_resend`: a call whose connection broke
  // after it was sent is sent once more on a new connection.
  template <typename T, typename Fn>
  kj::Promise<Result<T>> CallUntil(const std::string& node, std::shared_ptr<Fn> fn,
                                   kj::TimePoint deadline, bool may_resend);

  kj::AsyncIoProvider& io_;
  kj::Timer& timer_;
  RpcClusterOptions options_;
  std::shared_ptr<const ClusterConfig> config_;
  std::map<std::string, kj::Own<Node>> nodes_;
  // Disconnects deferred out of a connection's watch (destroyed first).
  std::unique_ptr<kj::TaskSet> tasks_ =
      std::make_unique<kj::TaskSet>(static_cast<kj::TaskSet::ErrorHandler&>(*this));
};

// Maps an rpc::Error to a Status (Ok when code is ok).
Status StatusFromRpc(rpc::Error::Reader error);

}  // namespace quorumfs
