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
// no longer runs. So does one of format 3 (no rename marks).
TEST(MetadataTest, ReadsAnInodeOfFormatsTwoAndThree) {
  MetaRecord rec;
  rec.body = SomeDirectory();
  std::string v4 = rec.Encode();
  ASSERT_EQ(v4[0], '\x04');
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
  // ... mark: txn 5, direction 1, time 6 (one byte each as varints); then no intent.
  ASSERT_EQ(bytes.substr(bytes.size() - 4), std::string("\x05\x01\x0c\x00", 4));
  bytes[bytes.size() - 3] = '\x02';
  EXPECT_FALSE(MetaRecord::Decode(bytes).ok());
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
  future[0] = '\x05';
  EXPECT_FALSE(MetaRecord::Decode(future).ok());
  std::string zero = good;
  zero[0] = '\x00';
  EXPECT_FALSE(MetaRecord::Decode(zero).ok());
}

}  // namespace
}  // namespace quorumfs
