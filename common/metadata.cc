#include "common/metadata.h"

#include <sys/stat.h>

#include <algorithm>
#include <string_view>

namespace quorumfs {
namespace {

// Format 1: body, intent. Format 2 adds, for an absent body, the time it became a tombstone.
constexpr uint8_t kFormatV1 = 1;
constexpr uint8_t kFormatV2 = 2;
// Format 3 replaces an inode's list of recent operation ids with its applied batches per
// client and their eviction count; formats 1 and 2 are read with the ids dropped.
constexpr uint8_t kFormatV3 = 3;
// Format 4 adds a directory's rename marks and a transaction's marked directories; formats
// 1-3 are read with none.
constexpr uint8_t kFormatV4 = 4;
// Format 5 adds a file's layout pages; formats 1-4 are read with none.
constexpr uint8_t kFormat = 5;

class Writer {
 public:
  void U8(uint8_t v) { out_.push_back(static_cast<char>(v)); }
  void Var(uint64_t v) {
    while (v >= 0x80) {
      out_.push_back(static_cast<char>(v | 0x80));
      v >>= 7;
    }
    out_.push_back(static_cast<char>(v));
  }
  void I64(int64_t v) { Var((static_cast<uint64_t>(v) << 1) ^ static_cast<uint64_t>(v >> 63)); }
  void Str(std::string_view s) {
    Var(s.size());
    out_.append(s);
  }
  std::string& out() { return out_; }

 private:
  std::string out_;
};

class Reader {
 public:
  explicit Reader(std::string_view in) : in_(in) {}
  bool U8(uint8_t* v) {
    if (pos_ >= in_.size()) return Fail();
    *v = static_cast<uint8_t>(in_[pos_++]);
    return true;
  }
  bool Var(uint64_t* v) {
    uint64_t r = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      uint8_t b;
      if (!U8(&b)) return false;
      r |= static_cast<uint64_t>(b & 0x7f) << shift;
      if (!(b & 0x80)) {
        *v = r;
        return true;
      }
    }
    return Fail();
  }
  template <typename T>
  bool VarAs(T* v, uint64_t max) {
    uint64_t r;
    if (!Var(&r) || r > max) return Fail();
    *v = static_cast<T>(r);
    return true;
  }
  bool I64(int64_t* v) {
    uint64_t r;
    if (!Var(&r)) return false;
    *v = static_cast<int64_t>((r >> 1) ^ (~(r & 1) + 1));
    return true;
  }
  bool Str(std::string* s, size_t max) {
    uint64_t n;
    if (!Var(&n) || n > max || n > in_.size() - pos_) return Fail();
    s->assign(in_.substr(pos_, n));
    pos_ += n;
    return true;
  }
  bool Count(size_t* n, size_t max) { return VarAs(n, max); }
  bool done() const { return ok_ && pos_ == in_.size(); }
  bool ok() const { return ok_; }

 private:
  bool Fail() {
    ok_ = false;
    return false;
  }
  std::string_view in_;
  size_t pos_ = 0;
  bool ok_ = true;
};

constexpr size_t kMaxList = 1 << 20;
constexpr size_t kMaxBytes = 1 << 20;

bool ReadChunkId(Reader& r, ChunkId* id) {
  char raw[ChunkId::kSize];
  for (auto& c : raw) {
    uint8_t b;
    if (!r.U8(&b)) return false;
    c = static_cast<char>(b);
  }
  auto parsed = ChunkId::FromBytes(raw, sizeof(raw));
  if (!parsed.ok()) return false;
  *id = *parsed;
  return true;
}

void WriteSlots(Writer& w, const std::vector<Slot>& slots) {
  w.Var(slots.size());
  for (const auto& s : slots) {
    if (s.hole()) {
      w.U8(0);
    } else {
      w.U8(1);
      w.out().append(s.id.view());
    }
    w.Var(s.length);
  }
}

bool ReadSlots(Reader& r, std::vector<Slot>* slots, size_t max_count, uint32_t max_length) {
  size_t n;
  if (!r.Count(&n, max_count)) return false;
  slots->resize(n);
  for (auto& s : *slots) {
    uint8_t has;
    if (!r.U8(&has) || has > 1) return false;
    if (has && !ReadChunkId(r, &s.id)) return false;
    if (!r.VarAs(&s.length, max_length)) return false;
  }
  return true;
}

void WriteBody(Writer& w, const RecordBody& body) {
  w.U8(static_cast<uint8_t>(body.index()));
  if (const Inode* i = std::get_if<Inode>(&body)) {
    w.Var(i->ino);
    w.U8(static_cast<uint8_t>(i->type));
    w.Var(i->mode);
    w.Var(i->uid);
    w.Var(i->gid);
    w.Var(i->size);
    w.Var(i->nlink);
    w.Var(i->rdev);
    w.I64(i->atime_ns);
    w.I64(i->mtime_ns);
    w.I64(i->ctime_ns);
    w.I64(i->btime_ns);
    w.Str(i->symlink_target);
    w.Var(i->chunk_size);
    WriteSlots(w, i->slots);
    w.Var(i->xattrs.size());
    for (const auto& x : i->xattrs) {
      w.Str(x.name);
      w.Str(x.value);
    }
    w.Var(i->parents.size());
    for (const auto& p : i->parents) {
      w.Var(p.parent);
      w.Str(p.name);
    }
    w.I64(i->birth_deadline_ns);
    w.U8(static_cast<uint8_t>(i->state));
    w.I64(i->lease_until_ns);
    w.Var(i->lease_holder);
    w.Var(i->entry_count);
    w.Var(i->applied.size());
    for (const auto& a : i->applied) {
      w.Var(a.client);
      w.Var(a.tag);
    }
    w.Var(i->applied_evictions);
    w.Var(i->rename_marks.size());
    for (const auto& m : i->rename_marks) {
      w.Var(m.txn);
      w.U8(m.delta < 0 ? 0 : 1);
      w.I64(m.time_ns);
    }
    w.Var(i->pages.size());
    for (const auto& p : i->pages) {
      w.Var(p.index);
      w.out().append(p.id.view());
      w.Var(p.live);
      w.Var(p.used);
    }
  } else if (const DirEntry* e = std::get_if<DirEntry>(&body)) {
    w.Var(e->ino);
    w.U8(static_cast<uint8_t>(e->type));
  } else if (const Txn* t = std::get_if<Txn>(&body)) {
    w.Var(t->id);
    w.U8(static_cast<uint8_t>(t->state));
    w.I64(t->created_ns);
    w.I64(t->deadline_ns);
    w.Var(t->participants.size());
    for (const auto& p : t->participants) w.Str(p);
    w.Var(t->marked_dirs.size());
    for (uint64_t d : t->marked_dirs) w.Var(d);
  } else if (const Lock* l = std::get_if<Lock>(&body)) {
    w.Var(l->holder_txn);
    w.I64(l->deadline_ns);
  } else if (const FileLocks* f = std::get_if<FileLocks>(&body)) {
    w.I64(f->changed_ns);
    w.Var(f->locks.size());
    for (const auto& k : f->locks) {
      w.Var(k.holder);
      w.Var(k.owner);
      w.Var(k.pid);
      w.U8(static_cast<uint8_t>(k.kind));
      w.U8(static_cast<uint8_t>(k.type));
      w.Var(k.start);
      w.Var(k.end);
      w.I64(k.expires_ns);
    }
  }
}

bool ReadType(Reader& r, FileType* t) {
  uint8_t v;
  if (!r.U8(&v) || v > static_cast<uint8_t>(FileType::kSocket)) return false;
  *t = static_cast<FileType>(v);
  return true;
}

bool ReadBody(Reader& r, RecordBody* body, uint8_t format) {
  uint8_t kind;
  if (!r.U8(&kind)) return false;
  switch (kind) {
    case 0:
      *body = std::monostate{};
      return true;
    case 1: {
      Inode i;
      size_t n;
      uint8_t state;
      if (!r.Var(&i.ino) || !ReadType(r, &i.type) || !r.VarAs(&i.mode, 07777) ||
          !r.VarAs(&i.uid, UINT32_MAX) || !r.VarAs(&i.gid, UINT32_MAX) || !r.Var(&i.size) ||
          !r.VarAs(&i.nlink, UINT32_MAX) || !r.Var(&i.rdev) || !r.I64(&i.atime_ns) ||
          !r.I64(&i.mtime_ns) || !r.I64(&i.ctime_ns) || !r.I64(&i.btime_ns) ||
          !r.Str(&i.symlink_target, kMaxSymlinkSize) || !r.VarAs(&i.chunk_size, 1u << 24) ||
          !ReadSlots(r, &i.slots, kMaxList, 1u << 24)) {
        return false;
      }
      if (!r.Count(&n, kMaxList)) return false;
      i.xattrs.resize(n);
      for (auto& x : i.xattrs) {
        if (!r.Str(&x.name, kMaxXattrNameSize) || !r.Str(&x.value, kMaxXattrValueSize))
          return false;
      }
      if (!r.Count(&n, kMaxList)) return false;
      i.parents.resize(n);
      for (auto& p : i.parents) {
        if (!r.Var(&p.parent) || !r.Str(&p.name, 255)) return false;
      }
      if (!r.I64(&i.birth_deadline_ns) || !r.U8(&state) || state > 2 || !r.I64(&i.lease_until_ns) ||
          !r.Var(&i.lease_holder) || !r.Var(&i.entry_count) || !r.Count(&n, kMaxList)) {
        return false;
      }
      i.state = static_cast<InodeState>(state);
      if (format < kFormatV3) {
        for (size_t k = 0; k < n; ++k) {  // operation ids of formats 1 and 2: no longer used
          uint64_t op;
          if (!r.Var(&op)) return false;
        }
      } else {
        i.applied.resize(n);
        for (auto& a : i.applied) {
          if (!r.Var(&a.client) || !r.Var(&a.tag)) return false;
        }
        if (!r.Var(&i.applied_evictions)) return false;
      }
      if (format >= kFormatV4) {
        if (!r.Count(&n, kMaxList)) return false;
        i.rename_marks.resize(n);
        for (auto& m : i.rename_marks) {
          uint8_t up;
          if (!r.Var(&m.txn) || !r.U8(&up) || up > 1 || !r.I64(&m.time_ns)) return false;
          m.delta = up ? 1 : -1;
        }
      }
      if (format >= kFormat) {
        if (!r.Count(&n, kMaxLayoutPages)) return false;
        i.pages.resize(n);
        uint64_t prev = 0;
        for (auto& p : i.pages) {
          if (!r.Var(&p.index) || p.index <= prev || !ReadChunkId(r, &p.id) || p.id.IsZero() ||
              !r.Var(&p.live) || !r.Var(&p.used)) {
            return false;
          }
          prev = p.index;
        }
        if (!i.pages.empty() && i.slots.size() > kSlotsPerPage) return false;
      }
      *body = std::move(i);
      return true;
    }
    case 2: {
      DirEntry e;
      if (!r.Var(&e.ino) || !ReadType(r, &e.type)) return false;
      *body = e;
      return true;
    }
    case 3: {
      Txn t;
      uint8_t state;
      size_t n;
      if (!r.Var(&t.id) || !r.U8(&state) || state > 2 || !r.I64(&t.created_ns) ||
          !r.I64(&t.deadline_ns) || !r.Count(&n, 64)) {
        return false;
      }
      t.state = static_cast<TxnState>(state);
      t.participants.resize(n);
      for (auto& p : t.participants) {
        if (!r.Str(&p, 512)) return false;
      }
      if (format >= kFormatV4) {
        if (!r.Count(&n, 64)) return false;
        t.marked_dirs.resize(n);
        for (auto& d : t.marked_dirs) {
          if (!r.Var(&d)) return false;
        }
      }
      *body = std::move(t);
      return true;
    }
    case 4: {
      Lock l;
      if (!r.Var(&l.holder_txn) || !r.I64(&l.deadline_ns)) return false;
      *body = l;
      return true;
    }
    case 5: {
      FileLocks f;
      size_t n;
      if (!r.I64(&f.changed_ns) || !r.Count(&n, kMaxFileLocks)) return false;
      f.locks.resize(n);
      for (auto& k : f.locks) {
        uint8_t kind, type;
        if (!r.Var(&k.holder) || !r.Var(&k.owner) || !r.VarAs(&k.pid, UINT32_MAX) || !r.U8(&kind) ||
            kind > 1 || !r.U8(&type) || type > 1 || !r.Var(&k.start) || !r.Var(&k.end) ||
            k.end < k.start || !r.I64(&k.expires_ns)) {
          return false;
        }
        k.kind = static_cast<LockKind>(kind);
        k.type = static_cast<LockType>(type);
      }
      *body = std::move(f);
      return true;
    }
    default:
      return false;
  }
}

}  // namespace

uint32_t ModeTypeBits(FileType type) {
  switch (type) {
    case FileType::kRegular:
      return S_IFREG;
    case FileType::kDirectory:
      return S_IFDIR;
    case FileType::kSymlink:
      return S_IFLNK;
    case FileType::kFifo:
      return S_IFIFO;
    case FileType::kCharDevice:
      return S_IFCHR;
    case FileType::kBlockDevice:
      return S_IFBLK;
    case FileType::kSocket:
      return S_IFSOCK;
    case FileType::kNone:
      return 0;
  }
  return 0;
}

FileType FileTypeFromMode(uint32_t mode) {
  switch (mode & S_IFMT) {
    case S_IFREG:
      return FileType::kRegular;
    case S_IFDIR:
      return FileType::kDirectory;
    case S_IFLNK:
      return FileType::kSymlink;
    case S_IFIFO:
      return FileType::kFifo;
    case S_IFCHR:
      return FileType::kCharDevice;
    case S_IFBLK:
      return FileType::kBlockDevice;
    case S_IFSOCK:
      return FileType::kSocket;
    default:
      return FileType::kNone;
  }
}

uint64_t Inode::AppliedTag(uint64_t client) const {
  for (const auto& a : applied) {
    if (a.client == client) return a.tag;
  }
  return 0;
}

const PageRef* Inode::FindPage(uint64_t index) const {
  auto it = std::lower_bound(pages.begin(), pages.end(), index,
                             [](const PageRef& p, uint64_t i) { return p.index < i; });
  return it != pages.end() && it->index == index ? &*it : nullptr;
}

void Inode::SetPage(const PageRef& ref) {
  auto it = std::lower_bound(pages.begin(), pages.end(), ref.index,
                             [](const PageRef& p, uint64_t i) { return p.index < i; });
  bool found = it != pages.end() && it->index == ref.index;
  if (ref.id.IsZero()) {
    if (found) pages.erase(it);
  } else if (found) {
    *it = ref;
  } else {
    pages.insert(it, ref);
  }
}

uint64_t MaxFileSize(uint32_t chunk_size) {
  return static_cast<uint64_t>(chunk_size) * kSlotsPerPage * (kMaxLayoutPages + 1);
}

namespace {
constexpr std::string_view kPageMagic = "QFSPAGE1";
}  // namespace

std::string EncodeLayoutPage(uint64_t ino, uint64_t index, uint32_t chunk_size,
                             const std::vector<Slot>& slots) {
  Writer w;
  w.out().append(kPageMagic);
  w.Var(ino);
  w.Var(index);
  w.Var(chunk_size);
  WriteSlots(w, slots);
  return std::move(w.out());
}

Result<std::vector<Slot>> DecodeLayoutPage(std::string_view bytes, uint64_t ino, uint64_t index,
                                           uint32_t chunk_size) {
  if (bytes.substr(0, kPageMagic.size()) != kPageMagic) {
    return Status(StatusCode::kCorruption, "not a layout page");
  }
  Reader r(bytes.substr(kPageMagic.size()));
  uint64_t got_ino, got_index, got_cs;
  std::vector<Slot> slots;
  if (!r.Var(&got_ino) || !r.Var(&got_index) || !r.Var(&got_cs) ||
      !ReadSlots(r, &slots, kSlotsPerPage, chunk_size) || !r.done()) {
    return Status(StatusCode::kCorruption, "malformed layout page");
  }
  if (got_ino != ino || got_index != index || got_cs != chunk_size) {
    return Status(StatusCode::kCorruption, "layout page of inode " + std::to_string(got_ino) +
                                               " page " + std::to_string(got_index) +
                                               ", expected inode " + std::to_string(ino) +
                                               " page " + std::to_string(index));
  }
  return slots;
}

Slot ClippedPageSlot(const std::vector<Slot>& page, uint64_t j, uint64_t live,
                     uint32_t chunk_size) {
  if (j >= page.size() || page[j].hole()) return Slot{};
  uint64_t start = j * chunk_size;
  if (start >= live) return Slot{};
  Slot s = page[j];
  if (s.length > live - start) s.length = static_cast<uint32_t>(live - start);
  return s;
}

void Inode::NoteApplied(uint64_t client, uint64_t tag, size_t max_clients) {
  applied.erase(std::remove_if(applied.begin(), applied.end(),
                               [client](const AppliedBatch& a) { return a.client == client; }),
                applied.end());
  applied.push_back(AppliedBatch{client, tag});
  while (applied.size() > std::max<size_t>(max_clients, 1)) {
    applied.erase(applied.begin());
    ++applied_evictions;
  }
}

std::string MetaRecord::Encode() const {
  Writer w;
  w.U8(kFormat);
  WriteBody(w, body);
  if (intent) {
    w.U8(1);
    w.Var(intent->txn);
    WriteBody(w, intent->value);
  } else {
    w.U8(0);
  }
  if (absent()) w.I64(removed_ns);
  return std::move(w.out());
}

Result<MetaRecord> MetaRecord::Decode(std::string_view bytes) {
  Reader r(bytes);
  uint8_t format, has_intent;
  MetaRecord rec;
  if (!r.U8(&format) || format < kFormatV1 || format > kFormat || !ReadBody(r, &rec.body, format) ||
      !r.U8(&has_intent) || has_intent > 1) {
    return Status(StatusCode::kCorruption, "malformed metadata record");
  }
  if (has_intent) {
    Intent in;
    if (!r.Var(&in.txn) || !ReadBody(r, &in.value, format)) {
      return Status(StatusCode::kCorruption, "malformed metadata record intent");
    }
    rec.intent = std::move(in);
  }
  if (format >= kFormatV2 && rec.absent() && (!r.I64(&rec.removed_ns) || rec.removed_ns < 0)) {
    return Status(StatusCode::kCorruption, "malformed metadata record tombstone time");
  }
  if (!r.done()) return Status(StatusCode::kCorruption, "metadata record has trailing bytes");
  return rec;
}

Result<MetaRecord> MetaRecord::DecodeOptional(const std::optional<std::string>& payload) {
  if (!payload) return MetaRecord{};
  return Decode(*payload);
}

}  // namespace quorumfs
