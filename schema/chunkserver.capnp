# The chunkserver protocol: the only way anything talks to a quorumfs node.
#
# Conventions for every method:
#  - `epoch` is the cluster epoch the caller's cluster file names. A server whose own epoch
#    differs answers with `error.code = epochMismatch` and a message naming both epochs, and
#    does nothing else, so clients with different member lists never form disjoint quorums.
#  - Expected failures come back in `error` (code `ok` means success). A Cap'n Proto exception
#    means the transport failed (connection lost, message over the size limit, garbled bytes).
#  - Sizes are bytes; times are nanoseconds since the Unix epoch (UTC) unless stated.
#  - Message limit: both ends read messages up to 17 MiB (16 MiB chunk + 1 MiB headers);
#    a larger message is refused by the reader with "Message is too large" and the
#    connection is closed; the server keeps serving everyone else.
@0xe3762b115973ddd5;

$import "/capnp/c++.capnp".namespace("quorumfs::rpc");

enum ErrorCode {
  ok @0;
  invalidArgument @1;   # malformed request: bad key, bad size, unknown field value
  epochMismatch @2;     # request epoch != server epoch; message names both
  hashMismatch @3;      # putChunk bytes do not hash to the id
  noSpace @4;           # disk full (ENOSPC) or quota; nothing partial is left behind
  ioError @5;           # local disk error
  notFound @6;          # chunk or record absent
  tooLarge @7;          # chunk over 16 MiB, key over 512 bytes, page over 4096 entries
  corruption @8;        # stored bytes fail their hash (chunk quarantined) or a bad row
  shuttingDown @9;      # SIGTERM received: no new work accepted
}

struct Error {
  code @0 :ErrorCode;
  message @1 :Text;     # one line, for humans; empty when code is ok
}

struct Ballot {
  counter @0 :UInt64;   # 0 with proposer 0 is "no ballot"; 0 with a proposer id is the
                        # one skip-prepare write of a fresh inode (DESIGN.md, "Metadata").
                        # At most 2^62 - 1 in a request (an accept's at most 2^62 - 2:
                        # it promises the next one), invalidArgument otherwise, so that
                        # no promise can wrap around to 0.
  proposer @1 :UInt64;  # random 64-bit id drawn at every proposer process start
}

struct RecordState {
  key @0 :Data;         # record key (DESIGN.md, "Record keys"); at most 512 bytes
  promised @1 :Ballot;  # highest ballot promised (the range floor if the row is absent)
  accepted @2 :Ballot;  # ballot of `value`; no ballot if nothing accepted
  hasValue @3 :Bool;
  value @4 :Data;       # the accepted value (a record envelope); at most 1 MiB
}

struct ChunkInfo {
  id @0 :Data;          # 32-byte SHA-256 of the chunk bytes
  size @1 :UInt64;      # bytes
  lastPut @2 :Int64;    # ns since epoch of the last put (create or refresh); GC compares it
  hint @3 :Text;        # node id this replica stands in for (sloppy quorum), empty if home
}

struct NodeStats {
  nodeId @0 :Text;
  incarnation @1 :Text;   # 32 hex digits created with the data dir; a new one = wiped disk
  epoch @2 :UInt64;       # epoch of the server's cluster file
  capacity @3 :UInt64;    # bytes of the data dir's file system
  used @4 :UInt64;        # bytes used on that file system
  available @5 :UInt64;   # bytes new chunks may still take: free space less --reserve
  chunkCount @6 :UInt64;
  chunkBytes @7 :UInt64;
  recordCount @8 :UInt64;
  version @9 :Text;       # software version
  voting @10 :Bool;       # false while started with --rejoin and not yet refilled
  uptimeNs @11 :Int64;
}

interface Chunkserver {
  # Stores a chunk. The server hashes `data` and refuses a mismatch (hashMismatch); writes a
  # temp file, fsyncs, renames into chunks/ab/cd/<hex> and replies once durable. A chunk
  # already stored is not rewritten; its last-put time is refreshed durably. `hint` names the
  # home node when this server stands in for it (sloppy quorum); empty otherwise.
  # Limits: data 1 byte .. 16 MiB (tooLarge / invalidArgument). Disk full: noSpace.
  putChunk @0 (epoch :UInt64, id :Data, data :Data, hint :Text) -> (error :Error);

  # Returns the stored bytes without hashing them (the client verifies). notFound if absent;
  # corruption if the disk cannot read them (EIO): the client then reports the replica.
  getChunk @1 (epoch :UInt64, id :Data) -> (error :Error, data :Data);

  # Which of `ids` are stored here: `present[i]` answers `ids[i]`. At most 65536 ids.
  hasChunks @2 (epoch :UInt64, ids :List(Data)) -> (error :Error, present :List(Bool));

  # Lists chunks with id > `after` (empty: from the start) in id order, at most `limit`
  # (1..4096). `next` is the last id returned, empty when the listing is complete.
  listChunks @3 (epoch :UInt64, after :Data, limit :UInt32)
      -> (error :Error, chunks :List(ChunkInfo), next :Data);

  # GC sweep: deletes the chunk only if its last put is older than markStart - grace (both ns).
  # `deleted` false (with ok) when it was younger, or absent. invalidArgument for a negative
  # grace, a markStart <= 0, or a markStart more than 60 s ahead of this server's clock (a GC
  # client whose clock runs ahead would otherwise delete chunks put within the grace).
  deleteChunk @4 (epoch :UInt64, id :Data, markStart :Int64, graceNs :Int64)
      -> (error :Error, deleted :Bool);

  # A client saw bytes that do not match `id` (or a `corruption` error: the disk could not
  # read them). The server re-reads and re-hashes its replica; if it is bad or unreadable it
  # is moved to quarantine/ and `quarantined` is true.
  reportCorrupt @5 (epoch :UInt64, id :Data) -> (error :Error, quarantined :Bool);

  # CASPaxos phase 1. `promised` true: the ballot is promised (durably, before this reply)
  # and `state` carries the accepted ballot and value. false: `state.promised` is the higher
  # ballot already promised. `voting` false: this node runs with --rejoin, not yet refilled;
  # its answer must not count towards a quorum.
  prepare @6 (epoch :UInt64, key :Data, ballot :Ballot)
      -> (error :Error, promised :Bool, state :RecordState, voting :Bool);

  # CASPaxos phase 2. `accepted` true once the value is durable. false: `promised` is the
  # higher ballot already promised. Value at most 1 MiB. `acceptedBallot`: the ballot of the
  # value the row holds after the call (zero: none); a refusal with it below `ballot` proves
  # the row never took this accept (a refusal of a re-delivered accept the row took and then
  # replaced does not).
  accept @7 (epoch :UInt64, key :Data, ballot :Ballot, value :Data)
      -> (error :Error, accepted :Bool, promised :Ballot, voting :Bool, acceptedBallot :Ballot);

  # The no-promise read of DESIGN.md: the acceptor state, unchanged.
  readAccepted @8 (epoch :UInt64, key :Data)
      -> (error :Error, state :RecordState, voting :Bool);

  # Records whose key starts with `prefix` and is > `after`, in key order, at most `limit`
  # (1..4096), and after the first record at most about 8 MiB of keys and values. `next` is
  # the last key returned, empty when complete (a page cut by size has fewer than `limit`
  # records and a `next`). `keysOnly`: no value bytes are sent (`hasValue` still tells), so a
  # page is never cut by size (4096 keys of at most 512 bytes). `voting` is false on a server
  # started with --rejoin and not yet refilled: its rows may be missing, so a listing must not
  # count it towards a quorum.
  scanRecords @9 (epoch :UInt64, prefix :Data, after :Data, limit :UInt32, keysOnly :Bool)
      -> (error :Error, records :List(RecordState), next :Data, voting :Bool);

  # Removes a record (GC of tombstones, dead inodes, finished transactions): deletes the row
  # only if it still holds the accepted ballot `ballot` and the promised ballot `promised` that
  # the caller's scan saw (no prepare or accept reached it since), raising the key range's
  # ballot floor to at least `fence` (the highest promise the scan saw on any replica of the
  # key) and the row's own ballots, in the same batch. A missing `promised` matches no row.
  deleteRecord @10 (epoch :UInt64, key :Data, ballot :Ballot, promised :Ballot, fence :Ballot)
      -> (error :Error, deleted :Bool);

  # Health and capacity. Answered regardless of epoch (status tools need it to diagnose a
  # mismatch); `stats.epoch` tells the server's epoch.
  stats @11 () -> (stats :NodeStats);

  # Ends --rejoin mode once fsck has refilled this node: from then on it votes. Durable.
  finishRejoin @12 (epoch :UInt64) -> (error :Error);

  # readAccepted of many keys in one call (a directory listing, `ls -l`): `states[i]` is the
  # durable state of `keys[i]` (`hasValue` false and zero ballots for a key never written).
  # 1..4096 keys; any invalid key fails the whole call with InvalidArgument. When the values
  # would not fit in one reply (over 8 MiB in all) only the states of a prefix of `keys` are
  # returned, never fewer than one: the caller asks again for the rest.
  readAcceptedBatch @13 (epoch :UInt64, keys :List(Data))
      -> (error :Error, states :List(RecordState), voting :Bool);
}
