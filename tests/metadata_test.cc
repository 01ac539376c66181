// The namespace's record payloads (common/metadata.h): round trips, the per-client memory of
// applied batches, rename marks, records written by older formats, and malformed bytes refused.
#include "common/metadata.h"

#include <gtest/gtest.h>

#include <string>

namespace quorumfs {
namespace {

Inode SomeDirectory() {
  Inode d;
  d.ino = 1025;
  d.type = FileType::kDirectory;
  d.mode = 0755;
  d.nlink = 3;
  d.entry_count = 7;
  d.mtime_ns = 1'700'000'000'000'000'000;
  d.parents.push_back(BackPointer{kRootIno, "d"});
  return d;
}

TEST(MetadataTest, InodeWithAppliedBatchesRoundTrips) {
  Inode d = SomeDirectory();
  d.NoteApplied(11, 101, 4);
  d.NoteApplied(12, 102, 4);
  MetaRecord rec;
  rec.body = d;
  auto back = MetaRecord::Decode(rec.Encode());
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  const Inode* in = back->inode();
  ASSERT_NE(in, nullptr);
  EXPECT_EQ(in->entry_count, 7u);
  EXPECT_EQ(in->parents, d.parents);
  EXPECT_EQ(in->applied, d.applied);
  EXPECT_EQ(in->AppliedTag(11), 101u);
  EXPECT_EQ(in->AppliedTag(12), 102u);
  EXPECT_EQ(in->AppliedTag(13), 0u);
  EXPECT_EQ(in->applied_evictions, 0u);
  EXPECT_TRUE(in->rename_marks.empty());
}

TEST(MetadataTest, RenameMarksRoundTrip) {
  Inode d = SomeDirectory();
  d.rename_marks.push_back(RenameMark{77, -1, 1'700'000'000'000'000'001});
  d.rename_marks.push_back(RenameMark{78, 1, 1'700'000'000'000'000'002});
  MetaRecord rec;
  rec.body = d;
  rec.intent = Intent{99, d};
  auto back = MetaRecord::Decode(rec.Encode());
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  ASSERT_NE(back->inode(), nullptr);
  EXPECT_EQ(back->inode()->rename_marks, d.rename_marks);
  EXPECT_EQ(back->inode()->entry_count, 7u);
  ASSERT_TRUE(back->intent.has_value());
  ASSERT_NE(std::get_if<Inode>(&back->intent->value), nullptr);
  EXPECT_EQ(std::get<Inode>(back->intent->value).rename_marks, d.rename_marks);
}

TEST(MetadataTest, TransactionWithMarkedDirectoriesRoundTrips) {
  Txn t;
  t.id = 5;
  t.state = TxnState::kCommitted;
  t.created_ns = 10;
  t.deadline_ns = 20;
  t.participants = {"D/a", "I/b"};
  t.marked_dirs = {1025, 1026};
  MetaRecord rec;
  rec.body = t;
  auto back = MetaRecord::Decode(rec.Encode());
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  ASSERT_NE(back->txn(), nullptr);
  EXPECT_EQ(back->txn()->participants, t.participants);
  EXPECT_EQ(back->txn()->marked_dirs, t.marked_dirs);
  EXPECT_EQ(back->txn()->state, TxnState::kCommitted);
}

TEST(MetadataTest, NoteAppliedKeepsOneEntryPerClientAndDropsTheLeastRecent) {
  Inode d = SomeDirectory();
  d.NoteApplied(1, 10, 3);
  d.NoteApplied(2, 20, 3);
  d.NoteApplied(1, 11, 3);  // client 1 again: its entry moves to the end, replaced
  ASSERT_EQ(d.applied.size(), 2u);
  EXPECT_EQ(d.applied[0], (AppliedBatch{2, 20}));
  EXPECT_EQ(d.applied[1], (AppliedBatch{1, 11}));
  d.NoteApplied(3, 30, 3);
  EXPECT_EQ(d.applied_evictions, 0u);
  d.NoteApplied(4, 40, 3);  // a fourth client: client 2, the least recent, is dropped
  ASSERT_EQ(d.applied.size(), 3u);
  EXPECT_EQ(d.AppliedTag(2), 0u);
  EXPECT_EQ(d.AppliedTag(1), 11u);
  EXPECT_EQ(d.applied_evictions, 1u);
  d.NoteApplied(5, 50, 1);  // a smaller bound drops all but the newest
  ASSERT_EQ(d.applied.size(), 1u);
  EXPECT_EQ(d.AppliedTag(5), 50u);
  EXPECT_EQ(d.applied_evictions, 4u);
}

// A record written by format 2 (a list of recent operation ids where format 3 has the applied
// batches) still reads, with the ids dropped: the retry it served belonged to a process that
// no longer runs. So does one of format 3 (no rename marks) and one of format 4 (no layout
// pages).
TEST(MetadataTest, ReadsAnInodeOfFormatsTwoThreeAndFour) {
  MetaRecord rec;
  rec.body = SomeDirectory();
  std::string v5 = rec.Encode();
  ASSERT_EQ(v5[0], '\x05');
  // Format 5 ends an inode with no layout pages (0); then no intent (0).
  ASSERT_EQ(v5.substr(v5.size() - 2), std::string("\x00\x00", 2));
  std::string v4 = v5.substr(0, v5.size() - 2) + std::string("\x00", 1);
  v4[0] = '\x04';
  auto back4 = MetaRecord::Decode(v4);
  ASSERT_TRUE(back4.ok()) << back4.status().ToString();
  ASSERT_NE(back4->inode(), nullptr);
  EXPECT_EQ(back4->inode()->entry_count, 7u);
  // Format 4 ends an inode with: no applied batches (0), no evictions (0), no rename marks (0);
  // then no intent (0).
  ASSERT_EQ(v4.substr(v4.size() - 4), std::string("\x00\x00\x00\x00", 4));
  std::string v3 = v4.substr(0, v4.size() - 4) + std::string("\x00\x00\x00", 3);
  v3[0] = '\x03';
  auto back3 = MetaRecord::Decode(v3);
  ASSERT_TRUE(back3.ok()) << back3.status().ToString();
  ASSERT_NE(back3->inode(), nullptr);
  EXPECT_EQ(back3->inode()->entry_count, 7u);
  EXPECT_TRUE(back3->inode()->rename_marks.empty());
  std::string v2 = v3.substr(0, v3.size() - 3) + std::string("\x02\x05\x07\x00", 4);
  v2[0] = '\x02';
  auto back = MetaRecord::Decode(v2);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  ASSERT_NE(back->inode(), nullptr);
  EXPECT_EQ(back->inode()->entry_count, 7u);
  EXPECT_TRUE(back->inode()->applied.empty());
  // Read as format 3, the same bytes are malformed (a trailing byte is left over).
  v2[0] = '\x03';
  EXPECT_FALSE(MetaRecord::Decode(v2).ok());
  // A rename mark's direction byte other than 0 or 1 is refused.
  Inode marked = SomeDirectory();
  marked.rename_marks.push_back(RenameMark{5, 1, 6});
  MetaRecord m;
  m.body = marked;
  std::string bytes = m.Encode();
  // ... mark: txn 5, direction 1, time 6 (one byte each as varints); no pages; no intent.
  ASSERT_EQ(bytes.substr(bytes.size() - 5), std::string("\x05\x01\x0c\x00\x00", 5));
  bytes[bytes.size() - 4] = '\x02';
  EXPECT_FALSE(MetaRecord::Decode(bytes).ok());
}

// Layout pages: their entries round-trip in the inode; a page's bytes name their inode, page
// and chunk size, and bytes of any other page, or garbled ones, are refused.
TEST(MetadataTest, LayoutPagesRoundTripAndForeignOrGarbledPagesAreRefused) {
  Inode f;
  f.ino = 42;
  f.type = FileType::kRegular;
  f.chunk_size = 1 << 20;
  f.size = 3ull << 40;
  f.slots = {Slot{ChunkId::Of("a"), 100}};
  f.SetPage(PageRef{7, ChunkId::Of("p7"), kSlotsPerPage << 20, 5});
  f.SetPage(PageRef{2, ChunkId::Of("p2"), 12345, 12345});
  f.SetPage(PageRef{9, ChunkId(), 0, 0});  // all holes: no entry
  ASSERT_EQ(f.pages.size(), 2u);
  EXPECT_EQ(f.pages[0].index, 2u);
  EXPECT_EQ(f.FindPage(7)->id, ChunkId::Of("p7"));
  EXPECT_EQ(f.FindPage(3), nullptr);
  MetaRecord rec;
  rec.body = f;
  auto back = MetaRecord::Decode(rec.Encode());
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  ASSERT_NE(back->inode(), nullptr);
  EXPECT_EQ(back->inode()->pages, f.pages);
  f.SetPage(PageRef{2, ChunkId(), 0, 0});
  EXPECT_EQ(f.pages.size(), 1u);
  EXPECT_TRUE(f.SlotIsInline(kSlotsPerPage - 1));
  EXPECT_FALSE(f.SlotIsInline(kSlotsPerPage));
  // A layout written inline whole before pages existed stays inline whole.
  Inode legacy;
  legacy.slots.resize(kSlotsPerPage + 5);
  EXPECT_TRUE(legacy.SlotIsInline(5 * kSlotsPerPage));

  std::vector<Slot> page = {Slot{}, Slot{ChunkId::Of("x"), 4096}, Slot{}};
  std::string bytes = EncodeLayoutPage(42, 7, 1 << 20, page);
  auto slots = DecodeLayoutPage(bytes, 42, 7, 1 << 20);
  ASSERT_TRUE(slots.ok()) << slots.status().ToString();
  ASSERT_EQ(slots->size(), 3u);
  EXPECT_EQ((*slots)[1], page[1]);
  EXPECT_EQ(DecodeLayoutPage(bytes, 43, 7, 1 << 20).status().code(), StatusCode::kCorruption);
  EXPECT_EQ(DecodeLayoutPage(bytes, 42, 8, 1 << 20).status().code(), StatusCode::kCorruption);
  EXPECT_EQ(DecodeLayoutPage(bytes, 42, 7, 1 << 16).status().code(), StatusCode::kCorruption);
  EXPECT_FALSE(DecodeLayoutPage(bytes.substr(0, bytes.size() - 1), 42, 7, 1 << 20).ok());
  EXPECT_FALSE(DecodeLayoutPage(bytes + "x", 42, 7, 1 << 20).ok());
  EXPECT_FALSE(DecodeLayoutPage("hello", 42, 7, 1 << 20).ok());
  // A slot longer than the chunk size is refused.
  std::string long_slot = EncodeLayoutPage(42, 7, 1 << 20, {Slot{ChunkId::Of("y"), (1 << 20) + 1}});
  EXPECT_FALSE(DecodeLayoutPage(long_slot, 42, 7, 1 << 20).ok());
  // Clipping: bytes from `live` on read as zeros.
  EXPECT_EQ(ClippedPageSlot(page, 1, (1 << 20) + 100, 1 << 20).length, 100u);
  EXPECT_TRUE(ClippedPageSlot(page, 1, 1 << 20, 1 << 20).hole());
  EXPECT_EQ(ClippedPageSlot(page, 1, 4 << 20, 1 << 20), page[1]);
  EXPECT_TRUE(ClippedPageSlot(page, 9, 4 << 20, 1 << 20).hole());
  EXPECT_EQ(MaxFileSize(1 << 20), (1ull << 30) * (kMaxLayoutPages + 1));
}

TEST(MetadataTest, MalformedBytesAreRefused) {
  Inode d = SomeDirectory();
  d.NoteApplied(11, 101, 4);
  d.rename_marks.push_back(RenameMark{42, -1, 1234});
  MetaRecord rec;
  rec.body = d;
  rec.intent = Intent{99, SomeDirectory()};
  const std::string good = rec.Encode();
  ASSERT_TRUE(MetaRecord::Decode(good).ok());
  for (size_t cut = 0; cut < good.size(); ++cut) {
    auto r = MetaRecord::Decode(good.substr(0, cut));
    EXPECT_FALSE(r.ok()) << "cut at " << cut;
    if (!r.ok()) {
      EXPECT_EQ(r.status().code(), StatusCode::kCorruption);
    }
  }
  EXPECT_FALSE(MetaRecord::Decode(good + "x").ok());
  std::string future = good;
  future[0] = '\x06';
  EXPECT_FALSE(MetaRecord::Decode(future).ok());
  std::string zero = good;
  zero[0] = '\x00';
  EXPECT_FALSE(MetaRecord::Decode(zero).ok());
}

}  // namespace
}  // namespace quorumfs
