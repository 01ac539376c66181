#include "common/acceptor.h"

#include "common/record_key.h"

namespace quorumfs {
namespace {

struct Loaded {
  std::optional<AcceptorState> row;
  Ballot floor;
  // The ballot a request must beat (prepare) or reach (accept).
  Ballot Promised() const { return row ? row->promised : floor; }
};

Status CheckBallot(const Ballot& b, const char* what) {
  if (b.InRange()) return Status::Ok();
  return InvalidArgument(std::string(what) + " ballot " + b.ToString() +
                         " has a counter of 2^62 or more");
}

Result<Loaded> Load(AcceptorStorage& storage, const std::string& key) {
  Loaded l;
  QFS_ASSIGN_OR_RETURN(l.row, storage.LoadRecord(key));
  QFS_ASSIGN_OR_RETURN(l.floor, storage.LoadFloor(FloorRangeOf(key)));
  return l;
}

}  // namespace

bool& AcceptorCore::UnsafeIgnoreFloorForTesting() {
  static bool ignore = false;
  return ignore;
}

bool& AcceptorCore::UnsafeNoNextPromiseForTesting() {
  static bool no_next = false;
  return no_next;
}

Result<AcceptorResult<PrepareReply>> AcceptorCore::Prepare(AcceptorStorage& storage,
                                                           const std::string& key, Ballot ballot) {
  QFS_RETURN_IF_ERROR(CheckBallot(ballot, "prepare"));
  QFS_ASSIGN_OR_RETURN(Loaded l, Load(storage, key));
  AcceptorResult<PrepareReply> r;
  if (!(ballot > l.Promised())) {
    r.reply.promised = false;
    r.reply.promised_ballot = l.Promised();
    if (l.row) r.reply.accepted_ballot = l.row->accepted;
    return r;
  }
  AcceptorState next = l.row.value_or(AcceptorState{});
  next.promised = ballot;
  r.reply.promised = true;
  r.reply.promised_ballot = ballot;
  r.reply.accepted_ballot = next.accepted;
  r.reply.value = next.value;
  r.write.rows.emplace_back(key, std::move(next));
  return r;
}

Result<AcceptorResult<AcceptReply>> AcceptorCore::Accept(AcceptorStorage& storage,
                                                         const std::string& key, Ballot ballot,
                                                         std::string value) {
  // Its successor is promised with it: that one must be in range too.
  QFS_RETURN_IF_ERROR(CheckBallot(ballot, "accept"));
  QFS_RETURN_IF_ERROR(CheckBallot(ballot.Next(), "accept's next"));
  QFS_ASSIGN_OR_RETURN(Loaded l, Load(storage, key));
  AcceptorResult<AcceptReply> r;
  // A duplicate of the accept this row holds (a message delivered twice): already done. The
  // row is written again, unchanged, so the reply waits until the first write is durable.
  if (l.row && l.row->value && ballot == l.row->accepted && *l.row->value == value) {
    r.reply.accepted = true;
    r.reply.promised_ballot = l.row->promised;
    r.reply.accepted_ballot = l.row->accepted;
    r.write.rows.emplace_back(key, *l.row);
    return r;
  }
  bool ok;
  if (l.row) {
    ok = ballot >= l.row->promised;
    // A counter-0 ballot is the one skip-prepare write of a fresh key; it never replaces a
    // value (it would, if a second process wrongly believed it created the key).
    if (ballot.counter == 0 && l.row->value && l.row->accepted != ballot) ok = false;
  } else {
    ok = UnsafeIgnoreFloorForTesting() ? ballot >= l.floor : ballot > l.floor;
  }
  if (!ok) {
    r.reply.accepted = false;
    r.reply.promised_ballot = l.Promised();
    if (l.row) r.reply.accepted_ballot = l.row->accepted;
    return r;
  }
  AcceptorState next;
  next.promised = UnsafeNoNextPromiseForTesting() ? ballot : ballot.Next();
  next.accepted = ballot;
  next.value = std::move(value);
  r.reply.accepted = true;
  r.reply.promised_ballot = next.promised;
  r.reply.accepted_ballot = ballot;
  r.write.rows.emplace_back(key, std::move(next));
  return r;
}

Result<ReadAcceptedReply> AcceptorCore::ReadAccepted(AcceptorStorage& storage,
                                                     const std::string& key) {
  QFS_ASSIGN_OR_RETURN(Loaded l, Load(storage, key));
  ReadAcceptedReply r;
  r.promised_ballot = l.Promised();
  if (l.row) {
    r.accepted_ballot = l.row->accepted;
    r.value = l.row->value;
  }
  return r;
}

Result<AcceptorResult<DeleteRecordReply>> AcceptorCore::DeleteRecord(AcceptorStorage& storage,
                                                                     const std::string& key,
                                                                     Ballot accepted_ballot,
                                                                     Ballot promised_ballot,
                                                                     Ballot fence) {
  QFS_RETURN_IF_ERROR(CheckBallot(accepted_ballot, "accepted"));
  QFS_RETURN_IF_ERROR(CheckBallot(promised_ballot, "promised"));
  QFS_RETURN_IF_ERROR(CheckBallot(fence, "fence"));
  QFS_ASSIGN_OR_RETURN(Loaded l, Load(storage, key));
  AcceptorResult<DeleteRecordReply> r;
  if (!l.row || l.row->accepted != accepted_ballot || l.row->promised != promised_ballot) {
    r.reply.deleted = false;
    if (l.row) r.reply.accepted_ballot = l.row->accepted;
    return r;
  }
  Ballot floor = MaxBallot(MaxBallot(l.floor, fence), MaxBallot(l.row->promised, l.row->accepted));
  r.reply.deleted = true;
  r.reply.accepted_ballot = accepted_ballot;
  r.write.rows.emplace_back(key, std::nullopt);
  r.write.floors.emplace_back(FloorRangeOf(key), floor);
  return r;
}

}  // namespace quorumfs
