#include "common/inode_allocator.h"

#include "common/record_key.h"

namespace quorumfs {

kj::Promise<Result<uint64_t>> InodeAllocator::AllocateBlock(int attempt) {
  // The record holds the next block to hand out; absent means block 1 (block 0 is reserved).
  return proposer_
      .Change(AllocatorKey(0),
              [](const std::optional<std::string>& current) {
                uint64_t next = 1;
                if (current && current->size() == 8) next = DecodeU64(*current);
                return Decision::Write(EncodeU64(next + 1));
              })
      .then([this, attempt](Result<RecordValue>&& r) -> kj::Promise<Result<uint64_t>> {
        // An unknown outcome (a busy allocator record) is safe to retry: if the earlier write
        // was chosen, the block it took is simply never used.
        if (!r.ok() && r.status().code() == StatusCode::kUnknownOutcome && attempt < 10) {
          return AllocateBlock(attempt + 1);
        }
        if (!r.ok()) return Result<uint64_t>(r.status());
        if (!r->payload || r->payload->size() != 8) {
          return Result<uint64_t>(
              Status(StatusCode::kCorruption, "allocator record A/0 is malformed"));
        }
        return Result<uint64_t>(DecodeU64(*r->payload) - 1);
      });
}

kj::Promise<Result<uint64_t>> InodeAllocator::Allocate() {
  if (next_ < end_) return Result<uint64_t>(next_++);
  return AllocateBlock().then([this](Result<uint64_t>&& block) -> kj::Promise<Result<uint64_t>> {
    if (!block.ok()) return Result<uint64_t>(block.status());
    // Another Allocate() may have refilled meanwhile; either block is ours to use.
    if (next_ >= end_) {
      next_ = *block << kInoBlockBits;
      end_ = next_ + (uint64_t{1} << kInoBlockBits);
    }
    return Allocate();
  });
}

}  // namespace quorumfs
