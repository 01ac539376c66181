// Unit tests of the CASPaxos acceptor rules (common/acceptor.h; DESIGN.md, "Metadata" and
// "Removing keys"): prepare, accept, readAccepted, deleteRecord and the per-range ballot floors.
#include "common/acceptor.h"

#include <gtest/gtest.h>

#include <map>
#include <optional>
#include <string>

#include "common/ballot.h"
#include "common/record.h"
#include "common/record_key.h"

namespace quorumfs {
namespace {

// Rows and floors in memory; a test applies (or drops) each returned write explicitly.
class MemStorage : public AcceptorStorage {
 public:
  Result<std::optional<AcceptorState>> LoadRecord(const std::string& key) override {
    ++loads;
    auto it = rows.find(key);
    if (it == rows.end()) return std::optional<AcceptorState>();
    return std::optional<AcceptorState>(it->second);
  }
  Result<Ballot> LoadFloor(const std::string& range) override {
    auto it = floors.find(range);
    return it == floors.end() ? Ballot{} : it->second;
  }
  void Apply(const AcceptorWrite& w) {
    for (const auto& [key, row] : w.rows) {
      if (row) {
        rows[key] = *row;
      } else {
        rows.erase(key);
      }
    }
    for (const auto& [range, floor] : w.floors) floors[range] = MaxBallot(floors[range], floor);
  }

  std::map<std::string, AcceptorState> rows;
  std::map<std::string, Ballot> floors;
  int loads = 0;
};

Ballot B(uint64_t counter, uint64_t proposer) { return Ballot{counter, proposer}; }

class AcceptorTest : public ::testing::Test {
 protected:
  PrepareReply Prepare(const std::string& key, Ballot b) {
    auto r = AcceptorCore::Prepare(storage_, key, b);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    storage_.Apply(r->write);
    return r->reply;
  }
  AcceptReply Accept(const std::string& key, Ballot b, const std::string& value) {
    auto r = AcceptorCore::Accept(storage_, key, b, value);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    storage_.Apply(r->write);
    return r->reply;
  }
  ReadAcceptedReply Read(const std::string& key) {
    auto r = AcceptorCore::ReadAccepted(storage_, key);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return *r;
  }
  // deleteRecord as GC sends it: with the promise its scan saw (by default the row's current
  // one) and a fence (by default none).
  DeleteRecordReply Delete(const std::string& key, Ballot accepted, AcceptorWrite* write,
                           std::optional<Ballot> promised = std::nullopt, Ballot fence = {}) {
    if (!promised) {
      auto row = storage_.rows.find(key);
      promised = row != storage_.rows.end() ? row->second.promised : Ballot{};
    }
    auto r = AcceptorCore::DeleteRecord(storage_, key, accepted, *promised, fence);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    *write = r->write;
    storage_.Apply(r->write);
    return r->reply;
  }

  MemStorage storage_;
  const std::string key_ = InodeKey(42);
};

TEST_F(AcceptorTest, PrepareOnAbsentKeyPromisesAndPersistsThePromise) {
  auto r = AcceptorCore::Prepare(storage_, key_, B(1, 7));
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->reply.promised);
  EXPECT_EQ(r->reply.promised_ballot, B(1, 7));
  EXPECT_TRUE(r->reply.accepted_ballot.IsNone());
  EXPECT_FALSE(r->reply.value.has_value());
  // The promise is in the write that must be durable before the reply goes out.
  ASSERT_EQ(r->write.rows.size(), 1u);
  EXPECT_EQ(r->write.rows[0].first, key_);
  ASSERT_TRUE(r->write.rows[0].second.has_value());
  EXPECT_EQ(r->write.rows[0].second->promised, B(1, 7));
  EXPECT_TRUE(r->write.rows[0].second->accepted.IsNone());
  EXPECT_TRUE(r->write.floors.empty());
}

TEST_F(AcceptorTest, PrepareNeedsAStrictlyHigherBallot) {
  EXPECT_TRUE(Prepare(key_, B(5, 2)).promised);
  for (Ballot b : {B(5, 2), B(5, 1), B(4, 9), B(0, 100)}) {
    auto r = AcceptorCore::Prepare(storage_, key_, b);
    ASSERT_TRUE(r.ok());
    EXPECT_FALSE(r->reply.promised) << b.ToString();
    EXPECT_EQ(r->reply.promised_ballot, B(5, 2)) << b.ToString();
    EXPECT_TRUE(r->write.empty()) << "a refused prepare writes nothing";
  }
  EXPECT_TRUE(Prepare(key_, B(5, 3)).promised);
  EXPECT_TRUE(Prepare(key_, B(6, 0)).promised);
  EXPECT_EQ(storage_.rows[key_].promised, B(6, 0));
}

TEST_F(AcceptorTest, PrepareOfNoneBallotIsRefused) {
  auto r = AcceptorCore::Prepare(storage_, key_, Ballot{});
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r->reply.promised);
  EXPECT_TRUE(r->write.empty());
}

TEST_F(AcceptorTest, PrepareReportsTheAcceptedValue) {
  ASSERT_TRUE(Accept(key_, B(3, 1), "v3").accepted);
  auto reply = Prepare(key_, B(4, 2));
  EXPECT_TRUE(reply.promised);
  EXPECT_EQ(reply.accepted_ballot, B(3, 1));
  EXPECT_EQ(reply.value, std::optional<std::string>("v3"));
  // The promise keeps the accepted value.
  EXPECT_EQ(storage_.rows[key_].promised, B(4, 2));
  EXPECT_EQ(storage_.rows[key_].accepted, B(3, 1));
  EXPECT_EQ(storage_.rows[key_].value, std::optional<std::string>("v3"));
  // A refused prepare reports the accepted ballot too.
  auto refused = Prepare(key_, B(2, 2));
  EXPECT_FALSE(refused.promised);
  EXPECT_EQ(refused.promised_ballot, B(4, 2));
  EXPECT_EQ(refused.accepted_ballot, B(3, 1));
}

TEST_F(AcceptorTest, AcceptNeedsABallotAtLeastThePromise) {
  ASSERT_TRUE(Prepare(key_, B(5, 2)).promised);
  auto low = AcceptorCore::Accept(storage_, key_, B(5, 1), "low");
  ASSERT_TRUE(low.ok());
  EXPECT_FALSE(low->reply.accepted);
  EXPECT_EQ(low->reply.promised_ballot, B(5, 2));
  EXPECT_TRUE(low->write.empty());

  auto equal = Accept(key_, B(5, 2), "equal");
  EXPECT_TRUE(equal.accepted);
  // The accept doubles as the prepare of the proposer's next ballot (one-round changes).
  EXPECT_EQ(equal.promised_ballot, B(6, 2));
  EXPECT_EQ(storage_.rows[key_].promised, B(6, 2));
  EXPECT_EQ(storage_.rows[key_].accepted, B(5, 2));
  EXPECT_EQ(storage_.rows[key_].value, std::optional<std::string>("equal"));

  // Ballots between the accepted one and its successor can no longer be promised.
  auto between = Prepare(key_, B(5, 9));
  EXPECT_FALSE(between.promised);
  EXPECT_EQ(between.promised_ballot, B(6, 2));
  // A higher ballot is accepted without a prepare, and raises the promise with it.
  EXPECT_TRUE(Accept(key_, B(7, 1), "higher").accepted);
  EXPECT_EQ(storage_.rows[key_].promised, B(8, 1));
  EXPECT_EQ(storage_.rows[key_].accepted, B(7, 1));
  EXPECT_FALSE(Accept(key_, B(6, 9), "stale").accepted);
  EXPECT_EQ(storage_.rows[key_].value, std::optional<std::string>("higher"));
}

TEST_F(AcceptorTest, AcceptIsIdempotent) {
  EXPECT_TRUE(Accept(key_, B(2, 1), "v").accepted);
  auto dup = AcceptorCore::Accept(storage_, key_, B(2, 1), "v");  // a duplicated message
  ASSERT_TRUE(dup.ok());
  EXPECT_TRUE(dup->reply.accepted);
  // The unchanged row is written again: the reply must wait for the first write's sync.
  ASSERT_EQ(dup->write.rows.size(), 1u);
  EXPECT_EQ(dup->write.rows[0].second->accepted, B(2, 1));
  EXPECT_EQ(storage_.rows[key_].accepted, B(2, 1));
  EXPECT_EQ(storage_.rows[key_].promised, B(3, 1));
  // The same ballot with another value is no duplicate: refused (promise is past it).
  EXPECT_FALSE(Accept(key_, B(2, 1), "other").accepted);
  EXPECT_EQ(storage_.rows[key_].value, std::optional<std::string>("v"));
}

// A garbled or hostile ballot near 2^64 would make the row's next promise wrap to counter 0
// (below every ballot), so a delayed accept at a low ballot could replace a chosen value.
// Acceptors refuse counters of 2^62 and more, in every request, and keep nothing of them.
TEST_F(AcceptorTest, BallotsNearTheCounterLimitAreRefused) {
  ASSERT_TRUE(Accept(key_, B(5, 1), "chosen").accepted);
  const AcceptorState before = storage_.rows[key_];
  for (uint64_t counter : {UINT64_MAX, Ballot::kMaxCounter}) {
    auto accept = AcceptorCore::Accept(storage_, key_, B(counter, 2), "hostile");
    EXPECT_EQ(accept.status().code(), StatusCode::kInvalidArgument) << counter;
    auto prepare = AcceptorCore::Prepare(storage_, key_, B(counter, 2));
    EXPECT_EQ(prepare.status().code(), StatusCode::kInvalidArgument) << counter;
    auto del = AcceptorCore::DeleteRecord(storage_, key_, B(5, 1), before.promised, B(counter, 2));
    EXPECT_EQ(del.status().code(), StatusCode::kInvalidArgument) << counter;
  }
  EXPECT_EQ(storage_.rows[key_].promised, before.promised);
  EXPECT_EQ(storage_.rows[key_].accepted, before.accepted);
  EXPECT_EQ(storage_.rows[key_].value, before.value);
  // The row still refuses a delayed accept below its promise, and the largest counter in range
  // still works.
  EXPECT_FALSE(Accept(key_, B(4, 3), "delayed").accepted);
  // An accept promises its ballot's successor, which must be in range too.
  EXPECT_EQ(
      AcceptorCore::Accept(storage_, key_, B(Ballot::kMaxCounter - 1, 2), "x").status().code(),
      StatusCode::kInvalidArgument);
  EXPECT_TRUE(Accept(key_, B(Ballot::kMaxCounter - 2, 2), "top").accepted);
  EXPECT_EQ(storage_.rows[key_].promised, B(Ballot::kMaxCounter - 1, 2));
  // Every ballot stored stays in range, so a later delete can name the row's own ballots.
  AcceptorWrite write;
  EXPECT_TRUE(Delete(key_, B(Ballot::kMaxCounter - 2, 2), &write).deleted);
}

TEST_F(AcceptorTest, ReadAcceptedChangesNothing) {
  auto absent = Read(key_);
  EXPECT_TRUE(absent.promised_ballot.IsNone());
  EXPECT_TRUE(absent.accepted_ballot.IsNone());
  EXPECT_FALSE(absent.value.has_value());
  EXPECT_TRUE(storage_.rows.empty());

  ASSERT_TRUE(Accept(key_, B(2, 1), "v").accepted);
  ASSERT_TRUE(Prepare(key_, B(4, 1)).promised);
  AcceptorState before = storage_.rows[key_];
  auto r = Read(key_);
  EXPECT_EQ(r.promised_ballot, B(4, 1));
  EXPECT_EQ(r.accepted_ballot, B(2, 1));
  EXPECT_EQ(r.value, std::optional<std::string>("v"));
  EXPECT_EQ(storage_.rows[key_], before);
}

TEST_F(AcceptorTest, AbsentKeyIsPromisedAtItsRangeFloor) {
  storage_.floors[FloorRangeOf(key_)] = B(5, 1);
  auto read = Read(key_);
  EXPECT_EQ(read.promised_ballot, B(5, 1));
  EXPECT_TRUE(read.accepted_ballot.IsNone());

  for (Ballot b : {B(5, 1), B(4, 9), B(0, 3)}) {
    auto r = AcceptorCore::Prepare(storage_, key_, b);
    ASSERT_TRUE(r.ok());
    EXPECT_FALSE(r->reply.promised) << b.ToString();
    EXPECT_EQ(r->reply.promised_ballot, B(5, 1));
    EXPECT_TRUE(r->write.empty());
  }
  EXPECT_TRUE(Prepare(key_, B(5, 2)).promised);
}

TEST_F(AcceptorTest, AcceptAtTheFloorIsRefusedOnAnAbsentKey) {
  storage_.floors[FloorRangeOf(key_)] = B(5, 1);
  for (Ballot b : {B(5, 1), B(3, 3)}) {
    auto r = AcceptorCore::Accept(storage_, key_, b, "old");
    ASSERT_TRUE(r.ok());
    EXPECT_FALSE(r->reply.accepted) << b.ToString();
    EXPECT_EQ(r->reply.promised_ballot, B(5, 1));
    EXPECT_TRUE(r->write.empty());
  }
  EXPECT_TRUE(Accept(key_, B(5, 2), "new").accepted);
}

TEST_F(AcceptorTest, UnsafeKnobAcceptsAtTheFloor) {
  storage_.floors[FloorRangeOf(key_)] = B(5, 1);
  AcceptorCore::UnsafeIgnoreFloorForTesting() = true;
  auto r = AcceptorCore::Accept(storage_, key_, B(5, 1), "old");
  AcceptorCore::UnsafeIgnoreFloorForTesting() = false;
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->reply.accepted);
}

TEST_F(AcceptorTest, FloorsCoverWholeRanges) {
  // I/ keys share a floor per inode block; another block is not affected.
  const std::string same_block = InodeKey(43);
  const std::string other_block = InodeKey(42 + (uint64_t{1} << kInoBlockBits));
  ASSERT_EQ(FloorRangeOf(key_), FloorRangeOf(same_block));
  ASSERT_NE(FloorRangeOf(key_), FloorRangeOf(other_block));
  storage_.floors[FloorRangeOf(key_)] = B(9, 9);
  EXPECT_FALSE(Prepare(same_block, B(9, 9)).promised);
  EXPECT_TRUE(Prepare(other_block, B(1, 1)).promised);
}

TEST_F(AcceptorTest, ExistingRowIgnoresTheFloor) {
  // A row that exists carries its own promise; the floor only stands in for absent keys.
  ASSERT_TRUE(Accept(key_, B(2, 1), "v").accepted);
  storage_.floors[FloorRangeOf(key_)] = B(5, 1);
  EXPECT_TRUE(Accept(key_, B(3, 1), "w").accepted);
}

TEST_F(AcceptorTest, DeleteNeedsTheMatchingAcceptedBallot) {
  ASSERT_TRUE(Accept(key_, B(3, 1), "v").accepted);
  AcceptorWrite write;
  auto wrong = Delete(key_, B(2, 1), &write);
  EXPECT_FALSE(wrong.deleted);
  EXPECT_EQ(wrong.accepted_ballot, B(3, 1));
  EXPECT_TRUE(write.empty());
  EXPECT_TRUE(storage_.rows.count(key_));

  auto right = Delete(key_, B(3, 1), &write);
  EXPECT_TRUE(right.deleted);
  EXPECT_EQ(right.accepted_ballot, B(3, 1));
  EXPECT_FALSE(storage_.rows.count(key_));
  // The row goes and the floor rises in one batch.
  ASSERT_EQ(write.rows.size(), 1u);
  EXPECT_EQ(write.rows[0].first, key_);
  EXPECT_FALSE(write.rows[0].second.has_value());
  ASSERT_EQ(write.floors.size(), 1u);
  EXPECT_EQ(write.floors[0].first, FloorRangeOf(key_));
  EXPECT_EQ(write.floors[0].second, B(4, 1));  // the row's promise: its accept's successor
}

// GC's scan saw (accepted 3, promised 4); a prepare that reached the replica since moves the
// promise, and the delete must then leave the row alone: that proposer may have read the value
// here and would carry it to replicas already deleted.
TEST_F(AcceptorTest, DeleteNeedsThePromiseTheScanSaw) {
  ASSERT_TRUE(Accept(key_, B(3, 1), "tombstone").accepted);
  Ballot scanned_promise = storage_.rows[key_].promised;
  ASSERT_TRUE(Prepare(key_, B(9, 2)).promised);
  AcceptorWrite write;
  auto r = Delete(key_, B(3, 1), &write, scanned_promise);
  EXPECT_FALSE(r.deleted);
  EXPECT_TRUE(write.empty());
  EXPECT_TRUE(storage_.rows.count(key_));
}

// The floor rises to the fence (the highest promise seen on any replica), not only to this
// row's ballots: a proposer promised elsewhere at that ballot cannot accept here afterwards.
TEST_F(AcceptorTest, DeleteRaisesTheFloorToTheFence) {
  ASSERT_TRUE(Accept(key_, B(3, 1), "tombstone").accepted);
  AcceptorWrite write;
  ASSERT_TRUE(Delete(key_, B(3, 1), &write, std::nullopt, B(12, 5)).deleted);
  ASSERT_EQ(write.floors.size(), 1u);
  EXPECT_EQ(write.floors[0].second, B(12, 5));
  EXPECT_FALSE(Accept(key_, B(12, 5), "tombstone").accepted);
  EXPECT_FALSE(Prepare(key_, B(12, 5)).promised);
  EXPECT_TRUE(Prepare(key_, B(13, 1)).promised);
}

TEST_F(AcceptorTest, DeleteOfAnAbsentKeyDoesNothing) {
  AcceptorWrite write;
  auto r = Delete(key_, B(1, 1), &write);
  EXPECT_FALSE(r.deleted);
  EXPECT_TRUE(r.accepted_ballot.IsNone());
  EXPECT_TRUE(write.empty());
  // A row that only holds a promise has accepted nothing, so no ballot of a value matches.
  ASSERT_TRUE(Prepare(key_, B(4, 4)).promised);
  auto none = Delete(key_, B(3, 3), &write);
  EXPECT_FALSE(none.deleted);
  EXPECT_TRUE(write.empty());
}

TEST_F(AcceptorTest, DeleteRaisesTheFloorToThePromise) {
  ASSERT_TRUE(Accept(key_, B(3, 1), "v").accepted);
  ASSERT_TRUE(Prepare(key_, B(7, 2)).promised);  // promised above the accepted ballot
  AcceptorWrite write;
  ASSERT_TRUE(Delete(key_, B(3, 1), &write).deleted);
  ASSERT_EQ(write.floors.size(), 1u);
  EXPECT_EQ(write.floors[0].second, B(7, 2));
  EXPECT_EQ(storage_.floors[FloorRangeOf(key_)], B(7, 2));
}

TEST_F(AcceptorTest, DeleteNeverLowersTheFloor) {
  storage_.floors[FloorRangeOf(key_)] = B(1, 1);
  ASSERT_TRUE(Accept(key_, B(3, 1), "v").accepted);
  // Another key of the range was deleted meanwhile with a higher floor.
  storage_.floors[FloorRangeOf(key_)] = B(20, 1);
  AcceptorWrite write;
  ASSERT_TRUE(Delete(key_, B(3, 1), &write).deleted);
  ASSERT_EQ(write.floors.size(), 1u);
  EXPECT_EQ(write.floors[0].second, B(20, 1));
}

TEST_F(AcceptorTest, DeletedKeyIsNotResurrectedByDelayedMessages) {
  ASSERT_TRUE(Accept(key_, B(3, 1), "v").accepted);
  ASSERT_TRUE(Prepare(key_, B(7, 2)).promised);
  AcceptorWrite write;
  ASSERT_TRUE(Delete(key_, B(3, 1), &write).deleted);
  // Messages from before the deletion, arriving late, are all refused.
  EXPECT_FALSE(Prepare(key_, B(7, 2)).promised);
  EXPECT_FALSE(Prepare(key_, B(5, 5)).promised);
  EXPECT_FALSE(Accept(key_, B(3, 1), "v").accepted);
  EXPECT_FALSE(Accept(key_, B(7, 2), "w").accepted);
  EXPECT_FALSE(storage_.rows.count(key_));
  // A new change above the floor works.
  EXPECT_TRUE(Prepare(key_, B(8, 1)).promised);
  EXPECT_TRUE(Accept(key_, B(8, 1), "new").accepted);
}

TEST_F(AcceptorTest, SkipPrepareWriteOfAFreshKey) {
  const Ballot creator = B(0, 77);
  auto r = AcceptorCore::Accept(storage_, key_, creator, "fresh");
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->reply.accepted);
  storage_.Apply(r->write);
  EXPECT_EQ(storage_.rows[key_].accepted, creator);
  // The creator's duplicate is harmless; any real ballot supersedes it.
  EXPECT_TRUE(Accept(key_, creator, "fresh").accepted);
  // The accept promised the creator's next ballot (1, 77): a prepare must go above it.
  EXPECT_FALSE(Prepare(key_, B(1, 5)).promised);
  auto p = Prepare(key_, B(2, 5));
  EXPECT_TRUE(p.promised);
  EXPECT_EQ(p.accepted_ballot, creator);
  // A duplicate still reports the accept this row holds; another value is refused.
  EXPECT_TRUE(Accept(key_, creator, "fresh").accepted);
  EXPECT_FALSE(Accept(key_, creator, "other").accepted);
}

TEST_F(AcceptorTest, SkipPrepareWriteIsRefusedAfterAPrepare) {
  ASSERT_TRUE(Prepare(key_, B(1, 5)).promised);
  EXPECT_FALSE(Accept(key_, B(0, 77), "fresh").accepted);
}

TEST_F(AcceptorTest, SkipPrepareWriteIsRefusedOnceAFloorIsRaised) {
  // A retired inode block has a floor: ballot 0 can no longer write there.
  storage_.floors[FloorRangeOf(key_)] = B(1, 1);
  auto r = AcceptorCore::Accept(storage_, key_, B(0, 77), "fresh");
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r->reply.accepted);
  EXPECT_TRUE(r->write.empty());
  // Even a floor of ballot 0 from the same creator blocks a repeat of that write.
  storage_.floors[FloorRangeOf(key_)] = B(0, 77);
  EXPECT_FALSE(Accept(key_, B(0, 77), "again").accepted);
}

TEST_F(AcceptorTest, WritesCarryEncodableState) {
  ASSERT_TRUE(Accept(key_, B(2, 3), std::string("bin\0ary", 7)).accepted);
  const AcceptorState& row = storage_.rows[key_];
  auto decoded = AcceptorState::Decode(row.Encode());
  ASSERT_TRUE(decoded.ok());
  EXPECT_EQ(*decoded, row);
}

// The envelope a proposer writes: round trip, the birth id kept past the window of recent
// change ids, first-format records still read, malformed bytes refused.
TEST(RecordEnvelopeTest, KeepsItsBirthPastTheWindowAndReadsTheFirstFormat) {
  RecordEnvelope e;
  for (uint64_t id = 101; id < 101 + 40; ++id) e.Apply(id, "p" + std::to_string(id));
  EXPECT_EQ(e.version, 40u);
  EXPECT_EQ(e.birth, 101u);
  EXPECT_EQ(e.recent.size(), RecordEnvelope::kRecentChanges);
  EXPECT_FALSE(e.Contains(101));
  auto back = RecordEnvelope::Decode(e.Encode());
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->version, 40u);
  EXPECT_EQ(back->birth, 101u);
  EXPECT_EQ(back->recent, e.recent);
  EXPECT_EQ(back->payload, "p140");

  // First format: {1, version, n, ids, payload}; the birth is the oldest id while the window
  // still reaches version 1, unknown (0) after.
  auto v1 = [](uint64_t version, const std::vector<uint64_t>& ids) {
    std::string out(1, '\x01');
    out += EncodeU64(version);
    out.push_back(static_cast<char>(ids.size()));
    for (uint64_t id : ids) out += EncodeU64(id);
    return out + "payload";
  };
  auto young = RecordEnvelope::Decode(v1(2, {7, 8}));
  ASSERT_TRUE(young.ok());
  EXPECT_EQ(young->birth, 7u);
  EXPECT_EQ(young->payload, "payload");
  std::vector<uint64_t> window(RecordEnvelope::kRecentChanges, 9);
  auto old = RecordEnvelope::Decode(v1(50, window));
  ASSERT_TRUE(old.ok());
  EXPECT_EQ(old->birth, 0u);
  EXPECT_EQ(old->version, 50u);

  std::string good = e.Encode();
  EXPECT_FALSE(RecordEnvelope::Decode("").ok());
  EXPECT_FALSE(RecordEnvelope::Decode(good.substr(0, 17)).ok());  // cut inside the header
  EXPECT_FALSE(RecordEnvelope::Decode(good.substr(0, 30)).ok());  // cut inside the ids
  std::string bad_format = good;
  bad_format[0] = 9;
  EXPECT_FALSE(RecordEnvelope::Decode(bad_format).ok());
  EXPECT_FALSE(RecordEnvelope::Decode(v1(1, {7, 8})).ok());  // more ids than versions
}

}  // namespace
}  // namespace quorumfs
