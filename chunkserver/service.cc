#include "chunkserver/service.h"

#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>

#include "common/gc_rules.h"
#include "common/record.h"
#include "common/record_key.h"

namespace quorumfs {
namespace {

constexpr uint32_t kMaxPage = 4096;
constexpr size_t kMaxIdsPerCall = 65536;
constexpr size_t kMaxBatchReplyBytes = 8 * 1024 * 1024;  // readAcceptedBatch, scanRecords pages
constexpr int64_t kMaxMarkAheadNs = 60LL * 1000000000;   // deleteChunk's mark start

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

rpc::ErrorCode CodeOf(StatusCode code) {
  switch (code) {
    case StatusCode::kOk:
      return rpc::ErrorCode::OK;
    case StatusCode::kEpochMismatch:
      return rpc::ErrorCode::EPOCH_MISMATCH;
    case StatusCode::kNoSpace:
      return rpc::ErrorCode::NO_SPACE;
    case StatusCode::kNotFound:
      return rpc::ErrorCode::NOT_FOUND;
    case StatusCode::kTooLarge:
      return rpc::ErrorCode::TOO_LARGE;
    case StatusCode::kCorruption:
      return rpc::ErrorCode::CORRUPTION;
    case StatusCode::kUnavailable:
      return rpc::ErrorCode::SHUTTING_DOWN;
    case StatusCode::kInvalidArgument:
    case StatusCode::kNameTooLong:
      return rpc::ErrorCode::INVALID_ARGUMENT;
    default:
      return rpc::ErrorCode::IO_ERROR;
  }
}

Ballot ReadBallot(rpc::Ballot::Reader b) { return Ballot{b.getCounter(), b.getProposer()}; }

void WriteBallot(rpc::Ballot::Builder out, const Ballot& b) {
  out.setCounter(b.counter);
  out.setProposer(b.proposer);
}

std::string ToString(capnp::Data::Reader d) {
  return std::string(reinterpret_cast<const char*>(d.begin()), d.size());
}

capnp::Data::Reader AsData(const std::string& s) {
  return capnp::Data::Reader(reinterpret_cast<const kj::byte*>(s.data()), s.size());
}

Result<ChunkId> ReadChunkId(capnp::Data::Reader d) {
  return ChunkId::FromBytes(d.begin(), d.size());
}

Status ReadKey(capnp::Data::Reader d, std::string* key) {
  if (d.size() > kMaxRecordKeySize) {
    return Status(StatusCode::kTooLarge, "record key of " + std::to_string(d.size()) + " bytes");
  }
  *key = ToString(d);
  return ValidateRecordKey(*key);
}

}  // namespace

void SetError(rpc::Error::Builder error, const Status& status) {
  error.setCode(CodeOf(status.code()));
  if (!status.ok()) error.setMessage(status.ToString());
}

ChunkserverService::ChunkserverService(ServiceOptions options,
                                       std::shared_ptr<const ClusterConfig> config,
                                       ChunkStore& chunks, RecordStore& records, WorkerPool& pool,
                                       ServiceState& state)
    : options_(std::move(options)),
      config_(std::move(config)),
      chunks_(chunks),
      records_(records),
      pool_(pool),
      state_(state),
      started_ns_(NowNs()) {}

Status ChunkserverService::Admit(uint64_t epoch) const {
  if (state_.shutting_down) {
    return Status(StatusCode::kUnavailable, "node " + options_.node_id + " is shutting down");
  }
  if (epoch != config_->epoch) {
    return Status(StatusCode::kEpochMismatch, "request epoch " + std::to_string(epoch) +
                                                  " but node " + options_.node_id +
                                                  " is at epoch " + std::to_string(config_->epoch));
  }
  return Status::Ok();
}

kj::Promise<void> ChunkserverService::Track(kj::Promise<void> work) {
  ++state_.in_flight;
  return work.attach(kj::defer([this] { --state_.in_flight; }));
}

kj::Promise<void> ChunkserverService::putChunk(PutChunkContext context) {
  auto params = context.getParams();
  Status admit = Admit(params.getEpoch());
  if (!admit.ok()) {
    SetError(context.getResults().initError(), admit);
    return kj::READY_NOW;
  }
  auto id = ReadChunkId(params.getId());
  auto data = params.getData();
  Status bad;
  if (!id.ok())
    bad = id.status();
  else if (data.size() == 0)
    bad = InvalidArgument("empty chunk");
  else if (data.size() > ChunkStore::kMaxChunkBytes)
    bad = Status(StatusCode::kTooLarge,
                 "chunk of " + std::to_string(data.size()) + " bytes (max 16 MiB)");
  if (!bad.ok()) {
    SetError(context.getResults().initError(), bad);
    return kj::READY_NOW;
  }
  std::string hint = params.getHint();
  ChunkId cid = *id;
  // Copied: if the caller disconnects the call is cancelled and its message freed while the
  // worker may still be hashing. Into a pooled, page-aligned buffer: warm memory, and the disk
  // thread writes it with O_DIRECT as it is.
  auto bytes = ChunkBuffer::Take(data.size());
  std::memcpy(bytes->data(), data.begin(), data.size());
  // The request's copy is no longer needed: at most one copy of each chunk in flight.
  context.releaseParams();
  return Track(pool_
                   .Run<Status>([this, cid, bytes, hint]() {
                     return chunks_.Put(cid, bytes->data(), bytes->size(), hint);
                   })
                   .then([context](Status s) mutable {
                     if (!s.ok() && s.message().rfind("hash mismatch", 0) == 0) {
                       auto e = context.getResults().initError();
                       e.setCode(rpc::ErrorCode::HASH_MISMATCH);
                       e.setMessage(s.ToString());
                       return;
                     }
                     SetError(context.getResults().initError(), s);
                   }));
}

kj::Promise<void> ChunkserverService::getChunk(GetChunkContext context) {
  auto params = context.getParams();
  Status admit = Admit(params.getEpoch());
  auto id = ReadChunkId(params.getId());
  if (admit.ok() && !id.ok()) admit = id.status();
  if (!admit.ok()) {
    SetError(context.getResults().initError(), admit);
    return kj::READY_NOW;
  }
  ChunkId cid = *id;
  return Track(
      pool_.Run<Result<std::shared_ptr<ChunkBuffer>>>([this, cid]() { return chunks_.Read(cid); })
          .then([context](Result<std::shared_ptr<ChunkBuffer>> r) mutable {
            auto results = context.getResults();
            if (!r.ok()) {
              SetError(results.initError(), r.status());
              return;
            }
            SetError(results.initError(), Status::Ok());
            const ChunkBuffer& b = **r;
            results.setData(
                capnp::Data::Reader(reinterpret_cast<const kj::byte*>(b.data()), b.size()));
          }));
}

kj::Promise<void> ChunkserverService::hasChunks(HasChunksContext context) {
  auto params = context.getParams();
  Status admit = Admit(params.getEpoch());
  auto ids = params.getIds();
  if (admit.ok() && ids.size() > kMaxIdsPerCall) {
    admit = Status(StatusCode::kTooLarge, "more than 65536 ids");
  }
  std::vector<ChunkId> parsed;
  for (auto d : ids) {
    if (!admit.ok()) break;
    auto id = ReadChunkId(d);
    if (!id.ok())
      admit = id.status();
    else
      parsed.push_back(*id);
  }
  if (!admit.ok()) {
    SetError(context.getResults().initError(), admit);
    return kj::READY_NOW;
  }
  return Track(pool_
                   .Run<std::vector<bool>>([this, parsed]() {
                     std::vector<bool> out;
                     for (const auto& id : parsed) out.push_back(chunks_.Has(id));
                     return out;
                   })
                   .then([context](std::vector<bool> present) mutable {
                     auto results = context.getResults();
                     SetError(results.initError(), Status::Ok());
                     auto list = results.initPresent(present.size());
                     for (size_t i = 0; i < present.size(); ++i) list.set(i, present[i]);
                   }));
}

kj::Promise<void> ChunkserverService::listChunks(ListChunksContext context) {
  auto params = context.getParams();
  Status admit = Admit(params.getEpoch());
  uint32_t limit = params.getLimit();
  if (admit.ok() && (limit == 0 || limit > kMaxPage)) {
    admit = InvalidArgument("limit must be 1..4096");
  }
  std::optional<ChunkId> after;
  if (admit.ok() && params.getAfter().size() > 0) {
    auto id = ReadChunkId(params.getAfter());
    if (!id.ok())
      admit = id.status();
    else
      after = *id;
  }
  if (!admit.ok()) {
    SetError(context.getResults().initError(), admit);
    return kj::READY_NOW;
  }
  return Track(
      pool_
          .Run<Result<std::vector<StoredChunk>>>(
              [this, after, limit]() { return chunks_.List(after ? &*after : nullptr, limit); })
          .then([context, limit](Result<std::vector<StoredChunk>> r) mutable {
            auto results = context.getResults();
            if (!r.ok()) {
              SetError(results.initError(), r.status());
              return;
            }
            SetError(results.initError(), Status::Ok());
            auto list = results.initChunks(r->size());
            for (size_t i = 0; i < r->size(); ++i) {
              const auto& c = (*r)[i];
              auto b = list[i];
              b.setId(capnp::Data::Reader(c.id.bytes().data(), ChunkId::kSize));
              b.setSize(c.size);
              b.setLastPut(c.last_put_ns);
              b.setHint(c.hint);
            }
            if (r->size() == limit) {
              results.setNext(capnp::Data::Reader(r->back().id.bytes().data(), ChunkId::kSize));
            }
          }));
}

kj::Promise<void> ChunkserverService::deleteChunk(DeleteChunkContext context) {
  auto params = context.getParams();
  Status admit = Admit(params.getEpoch());
  auto id = ReadChunkId(params.getId());
  if (admit.ok() && !id.ok()) admit = id.status();
  if (admit.ok() && params.getGraceNs() < 0) admit = InvalidArgument("negative grace");
  // The cutoff is the caller's mark start minus the grace. A mark start from a clock running
  // ahead (or a garbled one) moves the cutoff forward and would delete chunks put within the
  // grace, whose layouts may not be published yet: refused, with this node's view of the gap.
  const int64_t mark_start = params.getMarkStart();
  if (admit.ok() && mark_start <= 0) admit = InvalidArgument("mark start is not a time");
  if (admit.ok() && mark_start > NowNs() + kMaxMarkAheadNs) {
    admit = InvalidArgument("mark start is " + std::to_string((mark_start - NowNs()) / 1000000000) +
                            " s ahead of node " + options_.node_id +
                            "'s clock (at most 60 s allowed): check the clocks");
  }
  if (!admit.ok()) {
    SetError(context.getResults().initError(), admit);
    return kj::READY_NOW;
  }
  ChunkId cid = *id;
  int64_t cutoff = ChunkSweepCutoff(mark_start, params.getGraceNs());
  return Track(
      pool_.Run<Result<bool>>([this, cid, cutoff]() { return chunks_.DeleteIfOlder(cid, cutoff); })
          .then([context](Result<bool> r) mutable {
            auto results = context.getResults();
            SetError(results.initError(), r.status().ok() || r.ok() ? Status::Ok() : r.status());
            results.setDeleted(r.ok() && *r);
          }));
}

kj::Promise<void> ChunkserverService::reportCorrupt(ReportCorruptContext context) {
  auto params = context.getParams();
  Status admit = Admit(params.getEpoch());
  auto id = ReadChunkId(params.getId());
  if (admit.ok() && !id.ok()) admit = id.status();
  if (!admit.ok()) {
    SetError(context.getResults().initError(), admit);
    return kj::READY_NOW;
  }
  ChunkId cid = *id;
  return Track(pool_.Run<Result<bool>>([this, cid]() { return chunks_.VerifyOrQuarantine(cid); })
                   .then([context](Result<bool> r) mutable {
                     auto results = context.getResults();
                     SetError(results.initError(), r.ok() ? Status::Ok() : r.status());
                     results.setQuarantined(r.ok() && *r);
                   }));
}

kj::Promise<void> ChunkserverService::prepare(PrepareContext context) {
  auto params = context.getParams();
  Status admit = Admit(params.getEpoch());
  std::string key;
  if (admit.ok()) admit = ReadKey(params.getKey(), &key);
  if (!admit.ok()) {
    SetError(context.getResults().initError(), admit);
    return kj::READY_NOW;
  }
  auto r = AcceptorCore::Prepare(records_, key, ReadBallot(params.getBallot()));
  if (!r.ok()) {
    SetError(context.getResults().initError(), r.status());
    return kj::READY_NOW;
  }
  auto reply = std::move(r->reply);
  return Track(records_.Commit(std::move(r->write))
                   .then([this, context, reply = std::move(reply), key](Status s) mutable {
                     auto results = context.getResults();
                     SetError(results.initError(), s);
                     if (!s.ok()) return;
                     results.setVoting(options_.voting);
                     results.setPromised(reply.promised);
                     auto st = results.initState();
                     st.setKey(AsData(key));
                     WriteBallot(st.initPromised(), reply.promised_ballot);
                     WriteBallot(st.initAccepted(), reply.accepted_ballot);
                     st.setHasValue(reply.value.has_value());
                     if (reply.value) st.setValue(AsData(*reply.value));
                   }));
}

kj::Promise<void> ChunkserverService::accept(AcceptContext context) {
  auto params = context.getParams();
  Status admit = Admit(params.getEpoch());
  std::string key;
  if (admit.ok()) admit = ReadKey(params.getKey(), &key);
  if (admit.ok() && params.getValue().size() > kMaxRecordValue) {
    admit = Status(StatusCode::kTooLarge, "record value over 1 MiB");
  }
  if (!admit.ok()) {
    SetError(context.getResults().initError(), admit);
    return kj::READY_NOW;
  }
  auto r = AcceptorCore::Accept(records_, key, ReadBallot(params.getBallot()),
                                ToString(params.getValue()));
  if (!r.ok()) {
    SetError(context.getResults().initError(), r.status());
    return kj::READY_NOW;
  }
  auto reply = r->reply;
  return Track(records_.Commit(std::move(r->write)).then([this, context, reply](Status s) mutable {
    auto results = context.getResults();
    SetError(results.initError(), s);
    if (!s.ok()) return;
    results.setVoting(options_.voting);
    results.setAccepted(reply.accepted);
    WriteBallot(results.initPromised(), reply.promised_ballot);
    WriteBallot(results.initAcceptedBallot(), reply.accepted_ballot);
  }));
}

kj::Promise<void> ChunkserverService::readAccepted(ReadAcceptedContext context) {
  auto params = context.getParams();
  Status admit = Admit(params.getEpoch());
  std::string key;
  if (admit.ok()) admit = ReadKey(params.getKey(), &key);
  if (!admit.ok()) {
    SetError(context.getResults().initError(), admit);
    return kj::READY_NOW;
  }
  // Report only durable state: a fast read built on a write that a crash then loses would
  // return a value that was never chosen (the simulator's readAccepted control shows it).
  return Track(ReadDurable(key, 0).then([this, context, key](Result<ReadAcceptedReply> r) mutable {
    auto results = context.getResults();
    if (!r.ok()) {
      SetError(results.initError(), r.status());
      return;
    }
    SetError(results.initError(), Status::Ok());
    results.setVoting(options_.voting);
    auto st = results.initState();
    st.setKey(AsData(key));
    WriteBallot(st.initPromised(), r->promised_ballot);
    WriteBallot(st.initAccepted(), r->accepted_ballot);
    st.setHasValue(r->value.has_value());
    if (r->value) st.setValue(AsData(*r->value));
  }));
}

kj::Promise<void> ChunkserverService::readAcceptedBatch(ReadAcceptedBatchContext context) {
  auto params = context.getParams();
  Status admit = Admit(params.getEpoch());
  auto keys = std::make_shared<std::vector<std::string>>();
  if (admit.ok() && (params.getKeys().size() == 0 || params.getKeys().size() > kMaxPage)) {
    admit = InvalidArgument("readAcceptedBatch takes 1..4096 keys");
  }
  if (admit.ok()) {
    keys->reserve(params.getKeys().size());
    for (auto k : params.getKeys()) {
      std::string key;
      admit = ReadKey(k, &key);
      if (!admit.ok()) break;
      keys->push_back(std::move(key));
    }
  }
  if (!admit.ok()) {
    SetError(context.getResults().initError(), admit);
    return kj::READY_NOW;
  }
  kj::Vector<kj::Promise<Result<ReadAcceptedReply>>> reads(keys->size());
  for (const auto& key : *keys) reads.add(ReadDurable(key, 0));
  return Track(kj::joinPromises(reads.releaseAsArray())
                   .then([this, context, keys](kj::Array<Result<ReadAcceptedReply>> r) mutable {
                     auto results = context.getResults();
                     for (const auto& one : r) {
                       if (!one.ok()) {
                         SetError(results.initError(), one.status());
                         return;
                       }
                     }
                     SetError(results.initError(), Status::Ok());
                     results.setVoting(options_.voting);
                     // A prefix whose values fit in one message (at least one state).
                     size_t count = 0, bytes = 0;
                     while (count < r.size()) {
                       bytes +=
                           (*keys)[count].size() + (r[count]->value ? r[count]->value->size() : 0);
                       if (count > 0 && bytes > kMaxBatchReplyBytes) break;
                       ++count;
                     }
                     auto states = results.initStates(static_cast<unsigned>(count));
                     for (size_t i = 0; i < count; ++i) {
                       auto st = states[static_cast<unsigned>(i)];
                       st.setKey(AsData((*keys)[i]));
                       WriteBallot(st.initPromised(), r[i]->promised_ballot);
                       WriteBallot(st.initAccepted(), r[i]->accepted_ballot);
                       st.setHasValue(r[i]->value.has_value());
                       if (r[i]->value) st.setValue(AsData(*r[i]->value));
                     }
                   }));
}

kj::Promise<Result<ReadAcceptedReply>> ChunkserverService::ReadDurable(const std::string& key,
                                                                       int attempt) {
  if (!records_.HasPendingWrite(key)) return AcceptorCore::ReadAccepted(records_, key);
  if (attempt >= 4) {
    // Writes keep arriving; the reader falls back to the full protocol.
    return Result<ReadAcceptedReply>(Status(StatusCode::kUnavailable, "record busy"));
  }
  // Batches become durable in order, so after the barrier the pending write is synced.
  return records_.Barrier().then(
      [this, key, attempt](Status s) -> kj::Promise<Result<ReadAcceptedReply>> {
        if (!s.ok()) return Result<ReadAcceptedReply>(s);
        return ReadDurable(key, attempt + 1);
      });
}

kj::Promise<void> ChunkserverService::scanRecords(ScanRecordsContext context) {
  auto params = context.getParams();
  Status admit = Admit(params.getEpoch());
  uint32_t limit = params.getLimit();
  if (admit.ok() && (limit == 0 || limit > kMaxPage))
    admit = InvalidArgument("limit must be 1..4096");
  if (admit.ok() && (params.getPrefix().size() > kMaxRecordKeySize ||
                     params.getAfter().size() > kMaxRecordKeySize)) {
    admit = Status(StatusCode::kTooLarge, "prefix or cursor over 512 bytes");
  }
  auto results = context.getResults();
  results.setVoting(options_.voting);
  if (!admit.ok()) {
    SetError(results.initError(), admit);
    return kj::READY_NOW;
  }
  // A page's values stop at about 8 MiB (inode records reach ~40 KiB, any record 1 MiB: 4096
  // of them would not fit a message, and would be built in memory first).
  RecordScanOptions scan;
  scan.max_bytes = kMaxBatchReplyBytes;
  scan.keys_only = params.getKeysOnly();
  bool cut = false;
  auto rows =
      records_.Scan(ToString(params.getPrefix()), ToString(params.getAfter()), limit, scan, &cut);
  if (!rows.ok()) {
    SetError(results.initError(), rows.status());
    return kj::READY_NOW;
  }
  SetError(results.initError(), Status::Ok());
  auto list = results.initRecords(rows->size());
  for (size_t i = 0; i < rows->size(); ++i) {
    const auto& [key, state] = (*rows)[i];
    auto b = list[i];
    b.setKey(AsData(key));
    WriteBallot(b.initPromised(), state.promised);
    WriteBallot(b.initAccepted(), state.accepted);
    b.setHasValue(state.value.has_value());
    if (state.value && !scan.keys_only) b.setValue(AsData(*state.value));
  }
  if (rows->size() == limit || cut) results.setNext(AsData(rows->back().first));
  return kj::READY_NOW;
}

kj::Promise<void> ChunkserverService::deleteRecord(DeleteRecordContext context) {
  auto params = context.getParams();
  Status admit = Admit(params.getEpoch());
  std::string key;
  if (admit.ok()) admit = ReadKey(params.getKey(), &key);
  if (!admit.ok()) {
    SetError(context.getResults().initError(), admit);
    return kj::READY_NOW;
  }
  auto r =
      AcceptorCore::DeleteRecord(records_, key, ReadBallot(params.getBallot()),
                                 ReadBallot(params.getPromised()), ReadBallot(params.getFence()));
  if (!r.ok()) {
    SetError(context.getResults().initError(), r.status());
    return kj::READY_NOW;
  }
  bool deleted = r->reply.deleted;
  return Track(records_.Commit(std::move(r->write)).then([context, deleted](Status s) mutable {
    auto results = context.getResults();
    SetError(results.initError(), s);
    results.setDeleted(s.ok() && deleted);
  }));
}

kj::Promise<void> ChunkserverService::stats(StatsContext context) {
  auto s = context.getResults().initStats();
  s.setNodeId(options_.node_id);
  s.setIncarnation(options_.incarnation);
  s.setEpoch(config_->epoch);
  struct statvfs vfs;
  if (::statvfs(options_.data_dir.c_str(), &vfs) == 0) {
    s.setCapacity(static_cast<uint64_t>(vfs.f_blocks) * vfs.f_frsize);
    s.setUsed(static_cast<uint64_t>(vfs.f_blocks - vfs.f_bfree) * vfs.f_frsize);
    // What chunks may still take: the reserve is the metadata store's (df shows it as
    // used-up space, as ext4's root reserve).
    uint64_t avail = static_cast<uint64_t>(vfs.f_bavail) * vfs.f_frsize;
    s.setAvailable(avail > chunks_.reserve() ? avail - chunks_.reserve() : 0);
  }
  s.setChunkCount(chunks_.chunk_count());
  s.setChunkBytes(chunks_.chunk_bytes());
  s.setRecordCount(records_.record_count());
  s.setVersion(QUORUMFS_VERSION);
  s.setVoting(options_.voting);
  s.setUptimeNs(NowNs() - started_ns_);
  return kj::READY_NOW;
}

kj::Promise<void> ChunkserverService::finishRejoin(FinishRejoinContext context) {
  Status admit = Admit(context.getParams().getEpoch());
  if (admit.ok() && !options_.voting) {
    std::string marker = options_.data_dir + "/REJOINING";
    if (::unlink(marker.c_str()) != 0 && errno != ENOENT) {
      admit = IoError("remove " + marker + ": " + std::strerror(errno));
    } else {
      // Durable before this node votes and says so (a retry after a failed sync syncs again).
      Status synced = SyncDirectory(options_.data_dir);
      if (synced.ok()) {
        options_.voting = true;
      } else {
        admit = IoError("after removing REJOINING: " + synced.message());
      }
    }
  }
  SetError(context.getResults().initError(), admit);
  return kj::READY_NOW;
}

}  // namespace quorumfs
