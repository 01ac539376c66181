// ChunkserverService: the Cap'n Proto server of one node (schema/chunkserver.capnp).
// All methods run on the RPC loop thread; disk work goes to the worker pool (chunks) or the
// record store (records: its sync thread, or the loop itself while syncs are fast; see
// chunkserver/record_store.h). The loop blocks on the disk for a record read that LevelDB does
// not have cached and for an inline sync; a sync that turns out slow sends the ones after it
// to the sync thread.
#pragma once

#include <kj/async.h>
#include <kj/timer.h>

#include <memory>
#include <string>

#include "chunkserver/chunk_store.h"
#include "chunkserver/record_store.h"
#include "common/cluster_config.h"
#include "common/worker_pool.h"
#include "schema/chunkserver.capnp.h"

namespace quorumfs {

struct ServiceOptions {
  std::string node_id;
  std::string data_dir;
  std::string incarnation;
  bool voting = true;  // false while --rejoin and not yet refilled
  int disk_threads = 4;
};

// State shared by the service and main(): in-flight count for a clean shutdown.
struct ServiceState {
  uint64_t in_flight = 0;
  bool shutting_down = false;
};

class ChunkserverService final : public rpc::Chunkserver::Server {
 public:
  ChunkserverService(ServiceOptions options, std::shared_ptr<const ClusterConfig> config,
                     ChunkStore& chunks, RecordStore& records, WorkerPool& pool,
                     ServiceState& state);

 protected:
  kj::Promise<void> putChunk(PutChunkContext context) override;
  kj::Promise<void> getChunk(GetChunkContext context) override;
  kj::Promise<void> hasChunks(HasChunksContext context) override;
  kj::Promise<void> listChunks(ListChunksContext context) override;
  kj::Promise<void> deleteChunk(DeleteChunkContext context) override;
  kj::Promise<void> reportCorrupt(ReportCorruptContext context) override;
  kj::Promise<void> prepare(PrepareContext context) override;
  kj::Promise<void> accept(AcceptContext context) override;
  kj::Promise<void> readAccepted(ReadAcceptedContext context) override;
  kj::Promise<void> readAcceptedBatch(ReadAcceptedBatchContext context) override;
  kj::Promise<void> scanRecords(ScanRecordsContext context) override;
  kj::Promise<void> deleteRecord(DeleteRecordContext context) override;
  kj::Promise<void> stats(StatsContext context) override;
  kj::Promise<void> finishRejoin(FinishRejoinContext context) override;

 private:
  // OK, or the error to return: epoch mismatch, shutting down.
  Status Admit(uint64_t epoch) const;
  kj::Promise<void> Track(kj::Promise<void> work);
  // The acceptor state of `key` once no write to it is waiting for its sync.
  kj::Promise<Result<ReadAcceptedReply>> ReadDurable(const std::string& key, int attempt);

  ServiceOptions options_;
  std::shared_ptr<const ClusterConfig> config_;
  ChunkStore& chunks_;
  RecordStore& records_;
  WorkerPool& pool_;
  ServiceState& state_;
  int64_t started_ns_;
};

// Fills an rpc::Error from a Status.
void SetError(rpc::Error::Builder error, const Status& status);

}  // namespace quorumfs
