// InodeAllocator: hands out inode numbers from blocks of 2^kInoBlockBits taken from the
// allocator record A/0 with one CAS per block (DESIGN.md, "Metadata"), so every number has
// exactly one creator: the precondition for the skip-prepare first write of I/<ino>.
// Block 0 is reserved (inode 1 is the root directory). Loop thread only.
#pragma once

#include <kj/async.h>

#include <cstdint>

#include "common/proposer.h"

namespace quorumfs {

class InodeAllocator {
 public:
  explicit InodeAllocator(Proposer& proposer) : proposer_(proposer) {}

  // A fresh inode number never handed out before, by any process.
  kj::Promise<Result<uint64_t>> Allocate();

  // Takes a whole block (for callers that hand numbers out themselves). Returns its number.
  // An UnknownOutcome is retried (up to 10 times): a block taken twice only wastes numbers.
  kj::Promise<Result<uint64_t>> AllocateBlock(int attempt = 0);

 private:
  Proposer& proposer_;
  uint64_t next_ = 0;  // next number to hand out in the current block
  uint64_t end_ = 0;   // one past the current block
};

}  // namespace quorumfs
