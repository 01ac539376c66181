// Bad input from the network is refused with a clear error and never crashes a server or
// corrupts stored state; after each case the server still serves.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <kj/async-io.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <random>

#include "common/chunk_id.h"
#include "common/record_key.h"
#include "common/rpc_cluster.h"
#include "common/rpc_connection.h"
#include "schema/chunkserver.capnp.h"
#include "tests/test_cluster.h"

namespace quorumfs {
namespace {

using testing::TestCluster;

class BadInputTest : public ::testing::Test {
 protected:
  BadInputTest() : io_holder_(new kj::AsyncIoContext(kj::setupAsyncIo())), io_(*io_holder_) {}
  ~BadInputTest() override { conns_.clear(); }

  rpc::Chunkserver::Client Connect(int node, capnp::ReaderOptions options = RpcReaderOptions()) {
    auto addr = io_.provider->getNetwork()
                    .parseAddress("127.0.0.1:" + std::to_string(cluster_.port(node)))
                    .wait(io_.waitScope);
    auto stream = addr->connect().wait(io_.waitScope);
    conns_.push_back(kj::heap<RpcConnection>(kj::mv(stream), options));
    return conns_.back()->Bootstrap().castAs<rpc::Chunkserver>();
  }

  // The server answers a stats call on a fresh connection.
  void ExpectServing(int node) {
    auto c = Connect(node);
    auto r = c.statsRequest().send().wait(io_.waitScope);
    EXPECT_EQ(std::string(r.getStats().getNodeId().cStr()), cluster_.node_id(node));
  }

  void RawSend(int node, const std::string& bytes) {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(cluster_.port(node)));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    ASSERT_EQ(::write(fd, bytes.data(), bytes.size()), static_cast<ssize_t>(bytes.size()));
    ::shutdown(fd, SHUT_WR);
    char buf[256];
    while (::read(fd, buf, sizeof(buf)) > 0) {
    }
    ::close(fd);
  }

  TestCluster cluster_;
  // Held by pointer: kj's destructors are noexcept(false), gtest's fixture destructor is not.
  std::unique_ptr<kj::AsyncIoContext> io_holder_;
  kj::AsyncIoContext& io_;
  std::vector<kj::Own<RpcConnection>> conns_;
};

capnp::Data::Reader AsData(const std::string& s) {
  return capnp::Data::Reader(reinterpret_cast<const kj::byte*>(s.data()), s.size());
}

TEST_F(BadInputTest, WrongHashIsRefusedAndNothingStored) {
  auto c = Connect(0);
  std::string data = "the real bytes";
  ChunkId other = ChunkId::Of("different bytes");
  auto req = c.putChunkRequest();
  req.setEpoch(1);
  req.setId(capnp::Data::Reader(other.bytes().data(), 32));
  req.setData(AsData(data));
  auto r = req.send().wait(io_.waitScope);
  EXPECT_EQ(r.getError().getCode(), rpc::ErrorCode::HASH_MISMATCH);
  EXPECT_NE(std::string(r.getError().getMessage().cStr()).find("hash mismatch"), std::string::npos);
  auto get = c.getChunkRequest();
  get.setEpoch(1);
  get.setId(capnp::Data::Reader(other.bytes().data(), 32));
  EXPECT_EQ(get.send().wait(io_.waitScope).getError().getCode(), rpc::ErrorCode::NOT_FOUND);
  ExpectServing(0);
}

TEST_F(BadInputTest, MalformedChunkRequests) {
  auto c = Connect(0);
  {
    auto req = c.putChunkRequest();
    req.setEpoch(1);
    req.setId(AsData("short id"));
    req.setData(AsData("x"));
    EXPECT_EQ(req.send().wait(io_.waitScope).getError().getCode(),
              rpc::ErrorCode::INVALID_ARGUMENT);
  }
  {
    ChunkId empty = ChunkId::Of("");
    auto req = c.putChunkRequest();
    req.setEpoch(1);
    req.setId(capnp::Data::Reader(empty.bytes().data(), 32));
    EXPECT_EQ(req.send().wait(io_.waitScope).getError().getCode(),
              rpc::ErrorCode::INVALID_ARGUMENT);
  }
  {
    auto req = c.listChunksRequest();
    req.setEpoch(1);
    req.setLimit(0);
    EXPECT_EQ(req.send().wait(io_.waitScope).getError().getCode(),
              rpc::ErrorCode::INVALID_ARGUMENT);
  }
  ExpectServing(0);
}

TEST_F(BadInputTest, OversizedMessageIsRefusedAndServerKeepsServing) {
  std::string big(18 * 1024 * 1024, 'x');
  ChunkId id = ChunkId::Of(big);
  auto send_big = [&](rpc::Chunkserver::Client& c) -> std::string {
    auto req = c.putChunkRequest(capnp::MessageSize{big.size() / 8 + 64, 0});
    req.setEpoch(1);
    req.setId(capnp::Data::Reader(id.bytes().data(), 32));
    req.setData(AsData(big));
    auto result = kj::runCatchingExceptions([&]() { req.send().wait(io_.waitScope); });
    KJ_IF_MAYBE (e, result) {
      return e->getDescription().cStr();
    }
    return "";
  };
  // Our own client refuses to send it.
  auto normal = Connect(0);
  std::string why = send_big(normal);
  EXPECT_NE(why.find("larger than our single-message size limit"), std::string::npos) << why;
  // A client with a laxer limit sends it; the server refuses it and drops that connection.
  capnp::ReaderOptions lax;
  lax.traversalLimitInWords = 64 * 1024 * 1024 / 8;
  auto sloppy = Connect(0, lax);
  why = send_big(sloppy);
  EXPECT_FALSE(why.empty()) << "an 18 MiB message must be refused by the server";
  std::printf("server refused the 18 MiB message: %s\n", why.c_str());
  ExpectServing(0);
  // A 16 MiB chunk (the largest legal) is accepted.
  std::string max_chunk(16 * 1024 * 1024, 'y');
  ChunkId max_id = ChunkId::Of(max_chunk);
  auto c2 = Connect(0);
  auto ok = c2.putChunkRequest(capnp::MessageSize{max_chunk.size() / 8 + 64, 0});
  ok.setEpoch(1);
  ok.setId(capnp::Data::Reader(max_id.bytes().data(), 32));
  ok.setData(AsData(max_chunk));
  EXPECT_EQ(ok.send().wait(io_.waitScope).getError().getCode(), rpc::ErrorCode::OK);
}

TEST_F(BadInputTest, GarbledAndTruncatedBytesOnTheSocket) {
  std::mt19937_64 rng(7);
  std::string junk(64 * 1024, '\0');
  for (auto& ch : junk) ch = static_cast<char>(rng());
  RawSend(0, junk);
  ExpectServing(0);
  // A segment table announcing 1000 words, followed by 10 bytes and EOF.
  std::string truncated("\0\0\0\0\xe8\x03\0\0", 8);
  truncated += std::string(10, 'z');
  RawSend(0, truncated);
  ExpectServing(0);
  // A segment table announcing 2^29 segments.
  RawSend(0, std::string("\xff\xff\xff\x1f\0\0\0\0", 8));
  ExpectServing(0);
}

// A GC sweep's mark start from a clock that runs ahead would move the cutoff past chunks put
// within the grace: refused, and the chunk stays. A mark start of now deletes it.
TEST_F(BadInputTest, GcDeleteWithAMarkStartAheadOfTheServerIsRefused) {
  auto c = Connect(0);
  std::string data = "an unreferenced chunk";
  ChunkId id = ChunkId::Of(data);
  auto put = c.putChunkRequest();
  put.setEpoch(1);
  put.setId(capnp::Data::Reader(id.bytes().data(), 32));
  put.setData(AsData(data));
  ASSERT_EQ(put.send().wait(io_.waitScope).getError().getCode(), rpc::ErrorCode::OK);
  const int64_t now = std::chrono::duration_cast<std::chrono::nanoseconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count();
  auto del = [&](int64_t mark_start) {
    auto req = c.deleteChunkRequest();
    req.setEpoch(1);
    req.setId(capnp::Data::Reader(id.bytes().data(), 32));
    req.setMarkStart(mark_start);
    req.setGraceNs(0);
    return req.send().wait(io_.waitScope);
  };
  for (int64_t bad :
       {int64_t{now + 3600LL * 1000000000}, int64_t{INT64_MAX}, int64_t{0}, int64_t{INT64_MIN}}) {
    auto r = del(bad);
    EXPECT_EQ(r.getError().getCode(), rpc::ErrorCode::INVALID_ARGUMENT) << bad;
    EXPECT_FALSE(r.getDeleted()) << bad;
  }
  EXPECT_NE(std::string(del(now + 3600LL * 1000000000).getError().getMessage().cStr())
                .find("ahead of node"),
            std::string::npos);
  auto get = c.getChunkRequest();
  get.setEpoch(1);
  get.setId(capnp::Data::Reader(id.bytes().data(), 32));
  EXPECT_EQ(get.send().wait(io_.waitScope).getError().getCode(), rpc::ErrorCode::OK);
  auto ok = del(now + 1000000000);
  EXPECT_EQ(ok.getError().getCode(), rpc::ErrorCode::OK);
  EXPECT_TRUE(ok.getDeleted());
  ExpectServing(0);
}

// Ballot counters of 2^62 and more are refused (a promise of counter + 1 must never wrap to the
// skip-prepare counter 0), and nothing is stored.
TEST_F(BadInputTest, BallotsAtTheCounterLimitAreRefused) {
  auto c = Connect(0);
  for (uint64_t counter : {UINT64_MAX, uint64_t{1} << 62}) {
    auto acc = c.acceptRequest();
    acc.setEpoch(1);
    acc.setKey(AsData(InodeKey(7)));
    acc.initBallot().setCounter(counter);
    acc.setValue(AsData("v"));
    auto r = acc.send().wait(io_.waitScope);
    EXPECT_EQ(r.getError().getCode(), rpc::ErrorCode::INVALID_ARGUMENT) << counter;
    EXPECT_NE(std::string(r.getError().getMessage().cStr()).find("2^62"), std::string::npos);
    auto prep = c.prepareRequest();
    prep.setEpoch(1);
    prep.setKey(AsData(InodeKey(7)));
    prep.initBallot().setCounter(counter);
    EXPECT_EQ(prep.send().wait(io_.waitScope).getError().getCode(),
              rpc::ErrorCode::INVALID_ARGUMENT);
  }
  auto scan = c.scanRecordsRequest();
  scan.setEpoch(1);
  scan.setLimit(100);
  EXPECT_EQ(scan.send().wait(io_.waitScope).getRecords().size(), 0u);
  ExpectServing(0);
}

// A page of large records stops at about 8 MiB with a cursor (4096 of them would not fit a
// message, and the reader would drop the connection on every retry); paging on from the
// cursor returns every record once. Keys only: one page, no value bytes.
TEST_F(BadInputTest, ScanOfLargeRecordsPagesBySize) {
  auto c = Connect(0);
  const int kRecords = 24;
  std::string value(900 * 1024, 'v');
  for (int i = 0; i < kRecords; ++i) {
    auto acc = c.acceptRequest();
    acc.setEpoch(1);
    acc.setKey(AsData(InodeKey(100 + i)));
    acc.initBallot().setCounter(1);
    acc.setValue(AsData(value));
    ASSERT_EQ(acc.send().wait(io_.waitScope).getError().getCode(), rpc::ErrorCode::OK);
  }
  std::vector<std::string> keys;
  std::string after;
  int pages = 0;
  for (;;) {
    auto scan = c.scanRecordsRequest();
    scan.setEpoch(1);
    scan.setLimit(4096);
    scan.setAfter(AsData(after));
    auto r = scan.send().wait(io_.waitScope);
    ASSERT_EQ(r.getError().getCode(), rpc::ErrorCode::OK);
    ++pages;
    size_t bytes = 0;
    for (auto rec : r.getRecords()) {
      keys.emplace_back(reinterpret_cast<const char*>(rec.getKey().begin()), rec.getKey().size());
      EXPECT_EQ(rec.getValue().size(), value.size());
      bytes += rec.getValue().size();
    }
    EXPECT_LE(bytes, 8u * 1024 * 1024);
    if (r.getNext().size() == 0) break;
    after.assign(reinterpret_cast<const char*>(r.getNext().begin()), r.getNext().size());
    ASSERT_LT(pages, kRecords);
  }
  EXPECT_GE(pages, 3);
  ASSERT_EQ(keys.size(), static_cast<size_t>(kRecords));
  for (int i = 0; i < kRecords; ++i) EXPECT_EQ(keys[i], InodeKey(100 + i));

  auto scan = c.scanRecordsRequest();
  scan.setEpoch(1);
  scan.setLimit(4096);
  scan.setKeysOnly(true);
  auto r = scan.send().wait(io_.waitScope);
  ASSERT_EQ(r.getRecords().size(), static_cast<size_t>(kRecords));
  EXPECT_EQ(r.getNext().size(), 0u);
  for (auto rec : r.getRecords()) {
    EXPECT_TRUE(rec.getHasValue());
    EXPECT_EQ(rec.getValue().size(), 0u);
  }
  ExpectServing(0);
}

TEST_F(BadInputTest, UnknownRecordKeyPrefixAndOversizedValues) {
  auto c = Connect(0);
  for (std::string key : {std::string("Q/whatever"), std::string("I/short"), std::string(""),
                          std::string(600, 'D')}) {
    auto req = c.prepareRequest();
    req.setEpoch(1);
    req.setKey(AsData(key));
    req.initBallot().setCounter(1);
    auto r = req.send().wait(io_.waitScope);
    EXPECT_NE(r.getError().getCode(), rpc::ErrorCode::OK) << key;
  }
  {
    auto req = c.prepareRequest();
    req.setEpoch(1);
    req.setKey(AsData("Q/whatever"));
    auto r = req.send().wait(io_.waitScope);
    EXPECT_NE(std::string(r.getError().getMessage().cStr()).find("unknown record key prefix"),
              std::string::npos);
  }
  {
    auto req = c.acceptRequest();
    req.setEpoch(1);
    req.setKey(AsData(InodeKey(1)));
    req.initBallot().setCounter(1);
    std::string value(2 * 1024 * 1024, 'v');
    req.setValue(AsData(value));
    EXPECT_EQ(req.send().wait(io_.waitScope).getError().getCode(), rpc::ErrorCode::TOO_LARGE);
  }
  // Nothing was stored by the refused requests.
  auto scan = c.scanRecordsRequest();
  scan.setEpoch(1);
  scan.setLimit(100);
  auto rows = scan.send().wait(io_.waitScope);
  EXPECT_EQ(rows.getError().getCode(), rpc::ErrorCode::OK);
  EXPECT_EQ(rows.getRecords().size(), 0u);
  ExpectServing(0);
}

TEST_F(BadInputTest, MalformedBatchReads) {
  auto c = Connect(0);
  auto send = [&](std::vector<std::string> keys) {
    auto req = c.readAcceptedBatchRequest();
    req.setEpoch(1);
    auto list = req.initKeys(static_cast<unsigned>(keys.size()));
    for (size_t i = 0; i < keys.size(); ++i) list.set(static_cast<unsigned>(i), AsData(keys[i]));
    return req.send().wait(io_.waitScope);
  };
  {
    auto r = send({});
    EXPECT_EQ(r.getError().getCode(), rpc::ErrorCode::INVALID_ARGUMENT);
    EXPECT_NE(std::string(r.getError().getMessage().cStr()).find("1..4096"), std::string::npos);
  }
  EXPECT_EQ(send(std::vector<std::string>(4097, InodeKey(1))).getError().getCode(),
            rpc::ErrorCode::INVALID_ARGUMENT);
  // One bad key fails the call, naming the problem.
  {
    auto r = send({InodeKey(1), "Q/whatever"});
    EXPECT_EQ(r.getError().getCode(), rpc::ErrorCode::INVALID_ARGUMENT);
    EXPECT_NE(std::string(r.getError().getMessage().cStr()).find("unknown record key prefix"),
              std::string::npos);
  }
  {
    auto r = send({InodeKey(1), InodeKey(2)});
    EXPECT_EQ(r.getError().getCode(), rpc::ErrorCode::OK);
    ASSERT_EQ(r.getStates().size(), 2u);
    EXPECT_FALSE(r.getStates()[0].getHasValue());
  }
  ExpectServing(0);
}

TEST_F(BadInputTest, WrongEpochIsRefusedNamingBothEpochs) {
  auto c = Connect(0);
  auto req = c.readAcceptedRequest();
  req.setEpoch(5);
  req.setKey(AsData(InodeKey(1)));
  auto r = req.send().wait(io_.waitScope);
  EXPECT_EQ(r.getError().getCode(), rpc::ErrorCode::EPOCH_MISMATCH);
  std::string msg = r.getError().getMessage();
  EXPECT_NE(msg.find("epoch 5"), std::string::npos) << msg;
  EXPECT_NE(msg.find("epoch 1"), std::string::npos) << msg;
  ExpectServing(0);
}

}  // namespace
}  // namespace quorumfs
