#include "common/rpc_cluster.h"

#include <algorithm>

namespace quorumfs {

struct RpcCluster::Node {
  std::string id;
  std::string address;
  kj::Own<RpcConnection> conn;
  kj::Maybe<rpc::Chunkserver::Client> client;
  kj::Maybe<kj::ForkedPromise<void>> connecting;
  kj::Promise<void> watch = nullptr;
  // The server's own word that it is this node (its stats' node id), asked first on each new
  // connection; calls wait for it (identity_ok once it came). See Connected.
  kj::Maybe<kj::ForkedPromise<void>> verified;
  bool identity_ok = false;
  kj::TimePoint retry_at = kj::origin<kj::TimePoint>();
  int failures = 0;
  std::string last_error;
  // Believed unreachable: its last connect failed. Calls then fail at once instead of waiting
  // on a connect that may never complete; reconnects go on in the background, and the first
  // one that succeeds clears this. (A connection that answers nothing for a whole call_timeout
  // is dropped, see Call, and the next call's reconnect tells whether the node is there.)
  bool down = false;
  // Resets `connecting` once the attempt is over. It is a branch of its own: the attempt's
  // chain may not drop its own last reference (kj would free the promise while it runs).
  kj::Promise<void> connect_done = nullptr;
  uint64_t generation = 0;  // counts connections made, so a stale failure spares a new one
  uint64_t attempt = 0;     // counts connect attempts; an address change voids the one running
  kj::TimePoint last_reply = kj::origin<kj::TimePoint>();  // on the current connection
};

namespace {

StatusCode CodeFromRpc(rpc::ErrorCode code) {
  switch (code) {
    case rpc::ErrorCode::OK:
      return StatusCode::kOk;
    case rpc::ErrorCode::INVALID_ARGUMENT:
      return StatusCode::kInvalidArgument;
    case rpc::ErrorCode::EPOCH_MISMATCH:
      return StatusCode::kEpochMismatch;
    case rpc::ErrorCode::HASH_MISMATCH:
      return StatusCode::kInvalidArgument;
    case rpc::ErrorCode::NO_SPACE:
      return StatusCode::kNoSpace;
    case rpc::ErrorCode::IO_ERROR:
      return StatusCode::kIoError;
    case rpc::ErrorCode::NOT_FOUND:
      return StatusCode::kNotFound;
    case rpc::ErrorCode::TOO_LARGE:
      return StatusCode::kTooLarge;
    case rpc::ErrorCode::CORRUPTION:
      return StatusCode::kCorruption;
    case rpc::ErrorCode::SHUTTING_DOWN:
      return StatusCode::kUnavailable;
  }
  return StatusCode::kIoError;
}

Ballot FromRpc(rpc::Ballot::Reader b) { return Ballot{b.getCounter(), b.getProposer()}; }

void ToRpc(rpc::Ballot::Builder out, const Ballot& b) {
  out.setCounter(b.counter);
  out.setProposer(b.proposer);
}

capnp::Data::Reader AsData(const std::string& s) {
  return capnp::Data::Reader(reinterpret_cast<const kj::byte*>(s.data()), s.size());
}

capnp::Data::Reader AsData(const ChunkId& id) {
  return capnp::Data::Reader(id.bytes().data(), ChunkId::kSize);
}

std::string ToString(capnp::Data::Reader d) {
  return std::string(reinterpret_cast<const char*>(d.begin()), d.size());
}

}  // namespace

Status StatusFromRpc(rpc::Error::Reader error) {
  if (error.getCode() == rpc::ErrorCode::OK) return Status::Ok();
  std::string message = error.getMessage();
  if (message.empty()) message = "error from server";
  return Status(CodeFromRpc(error.getCode()), message);
}

RpcCluster::RpcCluster(kj::AsyncIoProvider& io, kj::Timer& timer, RpcClusterOptions options)
    : io_(io), timer_(timer), options_(options) {}

RpcCluster::~RpcCluster() = default;

void RpcCluster::SetConfig(std::shared_ptr<const ClusterConfig> config) {
  config_ = std::move(config);
  for (const auto& n : config_->nodes) {
    auto it = nodes_.find(n.id);
    if (it != nodes_.end() && it->second->address != n.address) {
      Node& node = *it->second;
      Disconnect(node, "address changed");
      node.address = n.address;
      // Whatever was learnt about the old address says nothing of the new one. An attempt on
      // the old address may live on in a waiting caller's branch: it no longer counts.
      ++node.attempt;
      node.connect_done = nullptr;
      node.connecting = nullptr;
      node.down = false;
      node.failures = 0;
      node.retry_at = kj::origin<kj::TimePoint>();
    }
  }
}

RpcCluster::Node& RpcCluster::NodeFor(const std::string& id) {
  auto it = nodes_.find(id);
  if (it != nodes_.end()) return *it->second;
  auto node = kj::heap<Node>();
  node->id = id;
  if (const NodeInfo* info = config_->FindNode(id)) node->address = info->address;
  Node& ref = *node;
  nodes_.emplace(id, kj::mv(node));
  return ref;
}

void RpcCluster::Log(const std::string& message) {
  if (options_.log) options_.log(message);
}

size_t RpcCluster::OpenConnections() const {
  size_t open = 0;
  for (const auto& [id, node] : nodes_) open += node->conn.get() != nullptr;
  return open;
}

void RpcCluster::taskFailed(kj::Exception&& e) {
  Log(std::string("connection bookkeeping failed: ") + e.getDescription().cStr());
}

void RpcCluster::Disconnect(Node& node, const std::string& why) {
  node.client = nullptr;
  node.verified = nullptr;
  node.identity_ok = false;
  node.watch = nullptr;
  node.conn = nullptr;
  node.last_error = why;
}

kj::Promise<rpc::Chunkserver::Client> RpcCluster::Connect(Node& node) {
  KJ_IF_MAYBE (c, node.client) {
    return *c;
  }
  if (node.down) {
    // Nobody waits for a node believed down: the call fails now, and a reconnect (when its
    // backoff has passed) runs in the background for the calls after it.
    if (node.connecting == nullptr && timer_.now() >= node.retry_at) StartConnect(node);
    return KJ_EXCEPTION(DISCONNECTED, "unreachable", node.last_error);
  }
  KJ_IF_MAYBE (p, node.connecting) {
    return p->addBranch().then([&node]() -> rpc::Chunkserver::Client {
      KJ_IF_MAYBE (c, node.client) {
        return *c;
      }
      KJ_FAIL_REQUIRE("unreachable", node.last_error) { break; }
      return capnp::Capability::Client(nullptr).castAs<rpc::Chunkserver>();
    });
  }
  if (node.address.empty()) {
    return KJ_EXCEPTION(DISCONNECTED, "node has no address in the cluster file", node.id);
  }
  if (timer_.now() < node.retry_at) {
    return KJ_EXCEPTION(DISCONNECTED, "unreachable (backing off)", node.last_error);
  }
  StartConnect(node);
  return Connect(node);
}

void RpcCluster::DropLater(Node& node, uint64_t generation, std::string why, bool mark_down) {
  Node* n = &node;
  // Not from inside the callback of a promise the node holds: kj throws from the firing
  // event's destructor, then uses it freed.
  tasks_->add(kj::evalLater([this, n, generation, why, mark_down]() {
    if (n->generation != generation || n->conn.get() == nullptr) return;
    Disconnect(*n, why);
    if (!mark_down) return;
    ++n->failures;
    n->down = true;
    auto backoff =
        std::min<int64_t>(options_.reconnect_max / kj::NANOSECONDS,
                          (options_.reconnect_min / kj::NANOSECONDS) << std::min(n->failures, 16));
    n->retry_at = timer_.now() + backoff * kj::NANOSECONDS;
  }));
}

void RpcCluster::Connected(Node& node, kj::Own<RpcConnection> conn,
                           rpc::Chunkserver::Client client) {
  Node* n = &node;
  auto identity = client.statsRequest().send();
  n->conn = kj::mv(conn);
  n->client = kj::mv(client);
  if (n->down) Log("node " + n->id + " (" + n->address + ") reachable again");
  n->failures = 0;
  n->down = false;
  ++n->generation;
  n->last_reply = timer_.now();
  // The watch drops the connection a turn later (DropLater), not from its own callback.
  uint64_t generation = n->generation;
  auto later = [this, n, generation](std::string why) {
    DropLater(*n, generation, why, /*mark_down=*/false);
  };
  n->watch = n->conn->OnDisconnect()
                 .then([later]() { later("connection closed"); },
                       [later](kj::Exception&& e) { later(e.getDescription().cStr()); })
                 .eagerlyEvaluate(nullptr);
  // The server must be the node this address names: two ids whose addresses reach one server
  // (a host name and its IP, two names of one host) would count its one copy twice towards a
  // quorum. Its stats name it. They are asked first, and calls on the connection wait for the
  // answer within their own deadlines (a frozen server holds them no longer than before); on a
  // mismatch the connection is dropped and the node marked unreachable.
  n->verified =
      kj::mv(identity)
          .then(
              [this, n, generation](capnp::Response<rpc::Chunkserver::StatsResults>&& r) {
                std::string answered = r.getStats().getNodeId();
                if (n->generation != generation) return;
                if (answered == n->id) {
                  n->identity_ok = true;
                  return;
                }
                std::string why = "the server at " + n->address + " is node '" + answered +
                                  "', not '" + n->id + "': check the cluster file";
                Log("node " + n->id + ": " + why);
                DropLater(*n, generation, why, /*mark_down=*/true);
                KJ_FAIL_REQUIRE("wrong node", why) { break; }
              },
              [this, n, generation](kj::Exception&& e) {
                // No answer to the check (the connection broke, or the call failed): the
                // connection is dropped, so calls waiting on it reconnect instead of
                // failing on it until TCP gives up.
                if (n->generation == generation)
                  DropLater(*n, generation, e.getDescription().cStr(), /*mark_down=*/true);
                kj::throwFatalException(kj::mv(e));
              })
          .fork();
}

void RpcCluster::StartConnect(Node& node) {
  Node* n = &node;
  uint64_t token = ++node.attempt;
  auto attempt = io_.getNetwork()
                     .parseAddress(node.address)
                     .then([](kj::Own<kj::NetworkAddress> addr) {
                       return addr->connect().attach(kj::mv(addr));
                     })
                     .then([this, n, token](kj::Own<kj::AsyncIoStream> stream) {
                       if (n->attempt != token) return;  // the address changed meanwhile
                       auto conn = kj::heap<RpcConnection>(kj::mv(stream));
                       auto client = conn->Bootstrap().castAs<rpc::Chunkserver>();
                       Connected(*n, kj::mv(conn), kj::mv(client));
                     });
  auto bounded = timer_.timeoutAfter(options_.connect_timeout, kj::mv(attempt))
                     .catch_([this, n, token](kj::Exception&& e) {
                       if (n->attempt != token) return;
                       ++n->failures;
                       auto backoff = std::min<int64_t>(options_.reconnect_max / kj::NANOSECONDS,
                                                        (options_.reconnect_min / kj::NANOSECONDS)
                                                            << std::min(n->failures, 16));
                       n->retry_at = timer_.now() + backoff * kj::NANOSECONDS;
                       n->last_error = e.getDescription().cStr();
                       if (!n->down) {
                         Log("node " + n->id + " (" + n->address + ") unreachable: " +
                             n->last_error + "; calls to it fail at once until a reconnect works");
                       }
                       n->down = true;
                     })
                     .fork();
  node.connect_done =
      bounded.addBranch().then([n]() { n->connecting = nullptr; }).eagerlyEvaluate(nullptr);
  node.connecting = kj::mv(bounded);
}

template <typename T, typename Fn>
kj::Promise<Result<T>> RpcCluster::Call(const std::string& node_id, Fn fn) {
  return CallUntil<T>(node_id, std::make_shared<Fn>(kj::mv(fn)),
                      timer_.now() + options_.call_timeout, /*may_resend=*/true);
}

template <typename T, typename Fn>
kj::Promise<Result<T>> RpcCluster::CallUntil(const std::string& node_id, std::shared_ptr<Fn> fn,
                                             kj::TimePoint deadline, bool may_resend) {
  Node& node = NodeFor(node_id);
  Node* n = &node;
  std::string id = node_id;
  kj::TimePoint start = timer_.now();
  auto sent_on = std::make_shared<uint64_t>(0);  // the connection the call went out on
  auto work =
      Connect(node)
          .then([fn, n, sent_on](rpc::Chunkserver::Client client) -> kj::Promise<Result<T>> {
            *sent_on = n->generation;
            if (!n->identity_ok) {
              KJ_IF_MAYBE (v, n->verified) {
                return v->addBranch().then([fn, client]() mutable { return (*fn)(client); });
              }
            }
            return (*fn)(client);
          })
          .then([this, n, sent_on](Result<T>&& r) {
            if (*sent_on == n->generation) n->last_reply = timer_.now();
            return kj::mv(r);
          });
  kj::Duration left = deadline > start ? deadline - start : 0 * kj::NANOSECONDS;
  return timer_.timeoutAfter(left, kj::mv(work))
      .catch_([this, n, id, start, sent_on, fn, deadline,
               may_resend](kj::Exception&& e) -> kj::Promise<Result<T>> {
        std::string desc = e.getDescription().cStr();
        if (e.getType() == kj::Exception::Type::OVERLOADED) {
          // Nothing heard on this connection since the call went out: the network (or the
          // host) may be gone silently, and TCP would keep the connection open for many
          // minutes. Drop it: the next call reconnects, and if that connect fails too the node
          // is down and later calls do not each wait out a timeout.
          // (Only after a whole call_timeout: a resend waits just what its call had left.)
          if (*sent_on != 0 && *sent_on == n->generation && n->client != nullptr &&
              n->last_reply < start && timer_.now() - start >= options_.call_timeout) {
            Disconnect(*n, "no reply within " +
                               std::to_string(options_.call_timeout / kj::MILLISECONDS) + " ms");
            Log("node " + id + ": " + n->last_error + "; connection dropped");
          }
          return Result<T>(Status(StatusCode::kTimedOut, "node " + id + ": " + desc));
        }
        if (e.getType() == kj::Exception::Type::DISCONNECTED && n->client != nullptr &&
            *sent_on == n->generation) {
          Disconnect(*n, desc);
        }
        // The connection broke under a call already sent: the server died, or this client
        // dropped the connection because another call on it went unanswered (a link that was
        // down) while this one had just been sent, often after the link was back. Send it once
        // more on a new connection, in the time left: a node that is back answers, a dead one
        // refuses the connect (and is marked down). Every call is safe to repeat: chunks are
        // content-addressed, and Paxos and the fenced deletes take duplicated messages. (When
        // the first copy was applied, the repeat may answer as if it had not been: a prepare is
        // refused for the proposer's own promise and retried with a higher ballot, a
        // deleteRecord or deleteChunk reports that nothing was deleted.)
        bool connection_gone = *sent_on != 0 && (n->client == nullptr || n->generation != *sent_on);
        if (connection_gone && may_resend && timer_.now() < deadline) {
          return CallUntil<T>(id, fn, deadline, /*may_resend=*/false);
        }
        return Result<T>(Status(StatusCode::kUnavailable, "node " + id + ": " + desc));
      });
}

kj::Promise<Result<PrepareReply>> RpcCluster::Prepare(const std::string& node,
                                                      const std::string& key, Ballot ballot) {
  uint64_t epoch = config_->epoch;
  return Call<PrepareReply>(node, [key, ballot, epoch](rpc::Chunkserver::Client& c) {
    auto req = c.prepareRequest();
    req.setEpoch(epoch);
    req.setKey(AsData(key));
    ToRpc(req.initBallot(), ballot);
    return req.send().then(
        [](capnp::Response<rpc::Chunkserver::PrepareResults>&& r) -> Result<PrepareReply> {
          Status s = StatusFromRpc(r.getError());
          if (!s.ok()) return s;
          PrepareReply reply;
          reply.voting = r.getVoting();
          reply.promised = r.getPromised();
          auto st = r.getState();
          reply.promised_ballot = FromRpc(st.getPromised());
          reply.accepted_ballot = FromRpc(st.getAccepted());
          if (st.getHasValue()) reply.value = ToString(st.getValue());
          return reply;
        });
  });
}

kj::Promise<Result<AcceptReply>> RpcCluster::Accept(const std::string& node, const std::string& key,
                                                    Ballot ballot, const std::string& value) {
  uint64_t epoch = config_->epoch;
  return Call<AcceptReply>(node, [key, ballot, value, epoch](rpc::Chunkserver::Client& c) {
    auto req = c.acceptRequest();
    req.setEpoch(epoch);
    req.setKey(AsData(key));
    ToRpc(req.initBallot(), ballot);
    req.setValue(AsData(value));
    return req.send().then(
        [](capnp::Response<rpc::Chunkserver::AcceptResults>&& r) -> Result<AcceptReply> {
          Status s = StatusFromRpc(r.getError());
          if (!s.ok()) return s;
          AcceptReply reply;
          reply.voting = r.getVoting();
          reply.accepted = r.getAccepted();
          reply.promised_ballot = FromRpc(r.getPromised());
          reply.accepted_ballot = FromRpc(r.getAcceptedBallot());
          return reply;
        });
  });
}

kj::Promise<Result<ReadAcceptedReply>> RpcCluster::ReadAccepted(const std::string& node,
                                                                const std::string& key) {
  uint64_t epoch = config_->epoch;
  return Call<ReadAcceptedReply>(node, [key, epoch](rpc::Chunkserver::Client& c) {
    auto req = c.readAcceptedRequest();
    req.setEpoch(epoch);
    req.setKey(AsData(key));
    return req.send().then([](capnp::Response<rpc::Chunkserver::ReadAcceptedResults>&& r)
                               -> Result<ReadAcceptedReply> {
      Status s = StatusFromRpc(r.getError());
      if (!s.ok()) return s;
      ReadAcceptedReply reply;
      reply.voting = r.getVoting();
      auto st = r.getState();
      reply.promised_ballot = FromRpc(st.getPromised());
      reply.accepted_ballot = FromRpc(st.getAccepted());
      if (st.getHasValue()) reply.value = ToString(st.getValue());
      return reply;
    });
  });
}

kj::Promise<Result<std::vector<ReadAcceptedReply>>> RpcCluster::ReadAcceptedBatch(
    const std::string& node, const std::vector<std::string>& keys) {
  // The server answers a prefix when the values would not fit in one message: ask again for
  // the rest until every key has its state.
  return ReadAcceptedBatchOnce(node, keys)
      .then([this, node, keys](Result<std::vector<ReadAcceptedReply>>&& first)
                -> kj::Promise<Result<std::vector<ReadAcceptedReply>>> {
        if (!first.ok() || first->size() == keys.size()) return kj::mv(first);
        std::vector<std::string> rest(keys.begin() + static_cast<long>(first->size()), keys.end());
        return ReadAcceptedBatch(node, rest)
            .then([got = std::move(first).value()](
                      Result<std::vector<ReadAcceptedReply>>&& more) mutable
                  -> Result<std::vector<ReadAcceptedReply>> {
              if (!more.ok()) return more.status();
              for (auto& r : *more) got.push_back(std::move(r));
              return got;
            });
      });
}

kj::Promise<Result<std::vector<ReadAcceptedReply>>> RpcCluster::ReadAcceptedBatchOnce(
    const std::string& node, const std::vector<std::string>& keys) {
  uint64_t epoch = config_->epoch;
  return Call<std::vector<ReadAcceptedReply>>(node, [keys, epoch](rpc::Chunkserver::Client& c) {
    auto req = c.readAcceptedBatchRequest();
    req.setEpoch(epoch);
    auto list = req.initKeys(static_cast<unsigned>(keys.size()));
    for (size_t i = 0; i < keys.size(); ++i) list.set(static_cast<unsigned>(i), AsData(keys[i]));
    size_t n = keys.size();
    return req.send().then([n](capnp::Response<rpc::Chunkserver::ReadAcceptedBatchResults>&& r)
                               -> Result<std::vector<ReadAcceptedReply>> {
      Status s = StatusFromRpc(r.getError());
      if (!s.ok()) return s;
      auto states = r.getStates();
      if (states.size() == 0 || states.size() > n) {
        return Status(StatusCode::kInternal, "readAcceptedBatch: " + std::to_string(states.size()) +
                                                 " states for " + std::to_string(n) + " keys");
      }
      std::vector<ReadAcceptedReply> out(states.size());
      for (size_t i = 0; i < out.size(); ++i) {
        auto st = states[static_cast<unsigned>(i)];
        out[i].voting = r.getVoting();
        out[i].promised_ballot = FromRpc(st.getPromised());
        out[i].accepted_ballot = FromRpc(st.getAccepted());
        if (st.getHasValue()) out[i].value = ToString(st.getValue());
      }
      return out;
    });
  });
}

kj::Promise<Status> RpcCluster::PutChunk(const std::string& node, const ChunkId& id,
                                         std::shared_ptr<const std::string> data,
                                         const std::string& hint) {
  uint64_t epoch = config_->epoch;
  return Call<bool>(
             node,
             [id, data, hint, epoch](rpc::Chunkserver::Client& c) {
               auto req = c.putChunkRequest(
                   capnp::MessageSize{data->size() / sizeof(capnp::word) + 64, 0});
               req.setEpoch(epoch);
               req.setId(AsData(id));
               req.setData(AsData(*data));
               req.setHint(hint);
               return req.send().then(
                   [](capnp::Response<rpc::Chunkserver::PutChunkResults>&& r) -> Result<bool> {
                     Status s = StatusFromRpc(r.getError());
                     if (!s.ok()) return s;
                     return true;
                   });
             })
      .then([](Result<bool>&& r) { return r.ok() ? Status::Ok() : r.status(); });
}

kj::Promise<Result<std::string>> RpcCluster::GetChunk(const std::string& node, const ChunkId& id) {
  uint64_t epoch = config_->epoch;
  return Call<std::string>(node, [id, epoch](rpc::Chunkserver::Client& c) {
    auto req = c.getChunkRequest();
    req.setEpoch(epoch);
    req.setId(AsData(id));
    return req.send().then(
        [](capnp::Response<rpc::Chunkserver::GetChunkResults>&& r) -> Result<std::string> {
          Status s = StatusFromRpc(r.getError());
          if (!s.ok()) return s;
          return ToString(r.getData());
        });
  });
}

kj::Promise<Result<bool>> RpcCluster::ReportCorrupt(const std::string& node, const ChunkId& id) {
  uint64_t epoch = config_->epoch;
  return Call<bool>(node, [id, epoch](rpc::Chunkserver::Client& c) {
    auto req = c.reportCorruptRequest();
    req.setEpoch(epoch);
    req.setId(AsData(id));
    return req.send().then(
        [](capnp::Response<rpc::Chunkserver::ReportCorruptResults>&& r) -> Result<bool> {
          Status s = StatusFromRpc(r.getError());
          if (!s.ok()) return s;
          return r.getQuarantined();
        });
  });
}

kj::Promise<Result<NodeStatsInfo>> RpcCluster::Stats(const std::string& node) {
  return Call<NodeStatsInfo>(node, [](rpc::Chunkserver::Client& c) {
    return c.statsRequest().send().then(
        [](capnp::Response<rpc::Chunkserver::StatsResults>&& r) -> Result<NodeStatsInfo> {
          auto s = r.getStats();
          NodeStatsInfo info;
          info.node_id = s.getNodeId();
          info.incarnation = s.getIncarnation();
          info.version = s.getVersion();
          info.epoch = s.getEpoch();
          info.capacity = s.getCapacity();
          info.used = s.getUsed();
          info.available = s.getAvailable();
          info.chunk_count = s.getChunkCount();
          info.chunk_bytes = s.getChunkBytes();
          info.record_count = s.getRecordCount();
          info.voting = s.getVoting();
          info.uptime_ns = s.getUptimeNs();
          return info;
        });
  });
}

kj::Promise<Result<std::vector<bool>>> RpcCluster::HasChunks(const std::string& node,
                                                             const std::vector<ChunkId>& ids) {
  uint64_t epoch = config_->epoch;
  return Call<std::vector<bool>>(node, [ids, epoch](rpc::Chunkserver::Client& c) {
    auto req = c.hasChunksRequest();
    req.setEpoch(epoch);
    auto list = req.initIds(ids.size());
    for (size_t i = 0; i < ids.size(); ++i) list.set(i, AsData(ids[i]));
    return req.send().then(
        [](capnp::Response<rpc::Chunkserver::HasChunksResults>&& r) -> Result<std::vector<bool>> {
          Status s = StatusFromRpc(r.getError());
          if (!s.ok()) return s;
          std::vector<bool> out;
          for (bool b : r.getPresent()) out.push_back(b);
          return out;
        });
  });
}

kj::Promise<Result<std::pair<std::vector<ListedChunk>, bool>>> RpcCluster::ListChunks(
    const std::string& node, const std::optional<ChunkId>& after, uint32_t limit) {
  uint64_t epoch = config_->epoch;
  using Page = std::pair<std::vector<ListedChunk>, bool>;
  return Call<Page>(node, [after, limit, epoch](rpc::Chunkserver::Client& c) {
    auto req = c.listChunksRequest();
    req.setEpoch(epoch);
    if (after) req.setAfter(AsData(*after));
    req.setLimit(limit);
    return req.send().then(
        [](capnp::Response<rpc::Chunkserver::ListChunksResults>&& r) -> Result<Page> {
          Status s = StatusFromRpc(r.getError());
          if (!s.ok()) return s;
          Page page;
          for (auto c : r.getChunks()) {
            auto id = ChunkId::FromBytes(c.getId().begin(), c.getId().size());
            if (!id.ok()) return id.status();
            page.first.push_back(ListedChunk{*id, c.getSize(), c.getLastPut(), c.getHint()});
          }
          page.second = r.getNext().size() > 0;
          return page;
        });
  });
}

kj::Promise<Result<bool>> RpcCluster::DeleteChunk(const std::string& node, const ChunkId& id,
                                                  int64_t mark_start_ns, int64_t grace_ns) {
  uint64_t epoch = config_->epoch;
  return Call<bool>(node, [id, mark_start_ns, grace_ns, epoch](rpc::Chunkserver::Client& c) {
    auto req = c.deleteChunkRequest();
    req.setEpoch(epoch);
    req.setId(AsData(id));
    req.setMarkStart(mark_start_ns);
    req.setGraceNs(grace_ns);
    return req.send().then(
        [](capnp::Response<rpc::Chunkserver::DeleteChunkResults>&& r) -> Result<bool> {
          Status s = StatusFromRpc(r.getError());
          if (!s.ok()) return s;
          return r.getDeleted();
        });
  });
}

kj::Promise<Result<ScanPage>> RpcCluster::ScanRecords(const std::string& node,
                                                      const std::string& prefix,
                                                      const std::string& after, uint32_t limit,
                                                      bool keys_only) {
  uint64_t epoch = config_->epoch;
  return Call<ScanPage>(
      node, [prefix, after, limit, keys_only, epoch](rpc::Chunkserver::Client& c) {
        auto req = c.scanRecordsRequest();
        req.setEpoch(epoch);
        req.setPrefix(AsData(prefix));
        req.setAfter(AsData(after));
        req.setLimit(limit);
        req.setKeysOnly(keys_only);
        return req.send().then(
            [](capnp::Response<rpc::Chunkserver::ScanRecordsResults>&& r) -> Result<ScanPage> {
              Status s = StatusFromRpc(r.getError());
              if (!s.ok()) return s;
              ScanPage page;
              for (auto rec : r.getRecords()) {
                ScannedRecord out;
                out.key = ToString(rec.getKey());
                out.promised = FromRpc(rec.getPromised());
                out.accepted = FromRpc(rec.getAccepted());
                if (rec.getHasValue()) out.value = ToString(rec.getValue());
                page.records.push_back(std::move(out));
              }
              page.more = r.getNext().size() > 0;
              page.voting = r.getVoting();
              return page;
            });
      });
}

kj::Promise<Result<bool>> RpcCluster::DeleteRecord(const std::string& node, const std::string& key,
                                                   Ballot ballot, Ballot promised, Ballot fence) {
  uint64_t epoch = config_->epoch;
  return Call<bool>(node, [key, ballot, promised, fence, epoch](rpc::Chunkserver::Client& c) {
    auto req = c.deleteRecordRequest();
    req.setEpoch(epoch);
    req.setKey(AsData(key));
    ToRpc(req.initBallot(), ballot);
    ToRpc(req.initPromised(), promised);
    ToRpc(req.initFence(), fence);
    return req.send().then(
        [](capnp::Response<rpc::Chunkserver::DeleteRecordResults>&& r) -> Result<bool> {
          Status s = StatusFromRpc(r.getError());
          if (!s.ok()) return s;
          return r.getDeleted();
        });
  });
}

kj::Promise<Status> RpcCluster::FinishRejoin(const std::string& node) {
  uint64_t epoch = config_->epoch;
  return Call<bool>(
             node,
             [epoch](rpc::Chunkserver::Client& c) {
               auto req = c.finishRejoinRequest();
               req.setEpoch(epoch);
               return req.send().then(
                   [](capnp::Response<rpc::Chunkserver::FinishRejoinResults>&& r) -> Result<bool> {
                     Status s = StatusFromRpc(r.getError());
                     if (!s.ok()) return s;
                     return true;
                   });
             })
      .then([](Result<bool>&& r) { return r.ok() ? Status::Ok() : r.status(); });
}

}  // namespace quorumfs
