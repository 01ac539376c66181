// AcceptorCore: the CASPaxos acceptor rules, free of disks, sockets and clocks so that the
// chunkserver and the deterministic simulator run the same code. Each call reads state
// through AcceptorStorage and returns the reply plus the write that must be durable before
// the reply is sent (an acceptor that answers first can choose two values after a crash).
//
// Rules (DESIGN.md, "Metadata" and "Removing keys"):
//  - An absent key is treated as promised at its range's ballot floor; a ballot must be
//    strictly above the floor to be promised or accepted there, so a delayed message from
//    before a deletion can never resurrect the key.
//  - prepare(b): promise iff b > promised; reply with the accepted ballot and value.
//  - accept(b, v): accept iff b >= promised (b > floor if absent); accepted = b and
//    promised = b.Next(): the accept doubles as the prepare of the same proposer's next ballot
//    (CASPaxos's piggybacked prepare), so that proposer's next change of the key can skip its
//    prepare round (Proposer, "one-round changes"). A ballot with counter 0 (skip-prepare
//    create) is refused where a value is already held.
//  - readAccepted: report state, change nothing.
//  - deleteRecord(key, b, p, fence): delete iff the row still holds accepted ballot b and
//    promised ballot p (what GC's scan saw: nothing reached the row since), raising the floor
//    to at least fence and the row's ballots in the same batch. GC passes as fence the highest
//    promise its scan saw on any replica: a proposer promised on one replica before that
//    replica's delete can then not accept on another replica after its delete (without the
//    fence, it would bring the removed value back; tests/sim/gc_sim.h).
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/ballot.h"
#include "common/record.h"
#include "common/status.h"

namespace quorumfs {

class AcceptorStorage {
 public:
  virtual ~AcceptorStorage() = default;
  // The row of `key`, nullopt if absent. Must reflect every write returned by an earlier
  // AcceptorCore call, durable or not yet durable.
  virtual Result<std::optional<AcceptorState>> LoadRecord(const std::string& key) = 0;
  // The ballot floor of a range (none if never raised).
  virtual Result<Ballot> LoadFloor(const std::string& range) = 0;
};

// One atomic batch: rows to put (value) or delete (nullopt), floors to raise.
struct AcceptorWrite {
  std::vector<std::pair<std::string, std::optional<AcceptorState>>> rows;
  std::vector<std::pair<std::string, Ballot>> floors;
  bool empty() const { return rows.empty() && floors.empty(); }
};

// `voting` is set by the transport, not the core: false when the answering node runs with
// --rejoin and has not been refilled, so its reply must not count towards a quorum.
struct PrepareReply {
  bool voting = true;
  bool promised = false;  // false: conflict; `promised_ballot` is the higher promise
  Ballot promised_ballot;
  Ballot accepted_ballot;
  std::optional<std::string> value;
};

struct AcceptReply {
  bool voting = true;
  bool accepted = false;  // false: conflict; `promised_ballot` is the higher promise
  Ballot promised_ballot;
  // The ballot of the value this row holds after the request (zero: none). A refusal with
  // accepted_ballot below the request's ballot proves the row never accepted that ballot
  // (accepted ballots only rise); one at or above it does not: a duplicate of an accept
  // the row took, and then replaced by a higher ballot's value, is refused too.
  Ballot accepted_ballot;
};

struct ReadAcceptedReply {
  bool voting = true;
  Ballot promised_ballot;
  Ballot accepted_ballot;
  std::optional<std::string> value;
};

struct DeleteRecordReply {
  bool deleted = false;  // false: absent, or accepted ballot differs (`accepted_ballot`)
  Ballot accepted_ballot;
};

template <typename Reply>
struct AcceptorResult {
  Reply reply;
  AcceptorWrite write;  // durable before the reply is sent
};

class AcceptorCore {
 public:
  // REQUIRES (all): `key` passed ValidateRecordKey.
  static Result<AcceptorResult<PrepareReply>> Prepare(AcceptorStorage& storage,
                                                      const std::string& key, Ballot ballot);
  static Result<AcceptorResult<AcceptReply>> Accept(AcceptorStorage& storage,
                                                    const std::string& key, Ballot ballot,
                                                    std::string value);
  static Result<ReadAcceptedReply> ReadAccepted(AcceptorStorage& storage, const std::string& key);
  static Result<AcceptorResult<DeleteRecordReply>> DeleteRecord(AcceptorStorage& storage,
                                                                const std::string& key,
                                                                Ballot accepted_ballot,
                                                                Ballot promised_ballot,
                                                                Ballot fence);

  // Knob for the simulator's negative control only: accept ballots equal to the floor.
  static bool& UnsafeIgnoreFloorForTesting();
  // Knob for the simulator's negative control only: an accept promises only its own ballot,
  // not the next one (one-round changes then lose updates).
  static bool& UnsafeNoNextPromiseForTesting();
};

}  // namespace quorumfs
