#include "fuse/filesystem.h"

#include <fcntl.h>
#include <kj/vector.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <future>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <thread>
#include <unordered_set>

#include "common/gc_rules.h"
#include "common/log.h"
#include "common/record_key.h"

namespace quorumfs {

namespace {

constexpr uint64_t kDefaultChunk = 1024 * 1024;

// EIO and ETIMEDOUT say the cluster could not do what was asked (no quorum in time, a server
// error), not that the request was wrong, and the program that gets one sees only the errno: say
// why on stderr, at most 20 lines a minute (the rest are counted in the next line).
void ReportClusterError(const Status& s) {
  static std::mutex mu;
  static int64_t window_start = 0;
  static int printed = 0, suppressed = 0;
  timespec ts;
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  int64_t now = ts.tv_sec;
  std::lock_guard<std::mutex> lock(mu);
  if (now - window_start >= 60) {
    window_start = now;
    printed = 0;
  }
  if (printed >= 20) {
    ++suppressed;
    return;
  }
  ++printed;
  std::string more;
  if (suppressed > 0) more = " (" + std::to_string(suppressed) + " more not shown before this)";
  suppressed = 0;
  LogLine("quorumfs-mount", std::string(s.ToErrno() == ETIMEDOUT ? "ETIMEDOUT" : "EIO") +
                                " to a program: " + s.ToString() + more);
}

int ErrnoOf(const Status& s) {
  int e = s.ToErrno();
  if (e == 0) e = EIO;
  if (e == EIO || e == ETIMEDOUT) ReportClusterError(s);
  return e;
}

struct DirtySlot {
  Slot base;         // the published slot this buffer started from
  std::string data;  // the slot's bytes as this mount sees them (may be short)
  // Bytes this mount wrote and has not yet published, [begin, end), each with the generation
  // of its write: what a rebase lays over another mount's newer bytes. A publish drops the
  // ranges it carried (laid again later, they would undo other mounts' writes since).
  struct Range {
    uint32_t begin, end;
    uint64_t gen;
    // Zeroed, not written (fallocate): the buffer holds none of it, a rebase zeroes only the
    // bytes the current chunk has there, and it does not extend the file.
    bool zero = false;
  };
  std::vector<Range> ranges;
  uint64_t gen = 0;           // bumped by every write (and rebase)
  uint64_t uploaded_gen = 0;  // gen whose bytes `uploaded` holds (0: none)
  Slot uploaded;
  int64_t uploaded_at_ns = 0;  // wall clock when the put of `uploaded` was sent
  kj::Maybe<kj::ForkedPromise<void>> upload;
  Status upload_error;  // why the last put of this slot failed (Ok: none failed since)
};

struct FileState {
  uint64_t ino = 0;
  Inode inode;  // the layout this mount reads through; refreshed at open and after publish
  int open_count = 0;
  std::map<uint64_t, DirtySlot> dirty;
  uint64_t written_end = 0;
  std::optional<uint64_t> truncated_to;
  bool unlinked_held = false;
  bool flushing = false;
  // The last flush tried to publish and failed (not: it reported an earlier staged write's
  // error without trying); Release drops the writes only then.
  bool publish_failed = false;
  std::vector<kj::Own<kj::PromiseFulfiller<void>>> flush_waiters;
  uint64_t last_read_end = 0;
  // Wall-clock time of this mount's last unpublished write: stat shows it as mtime/ctime until
  // the layout is published (which sets the record's times), as a local file system would.
  int64_t local_mtime_ns = 0;
  // When the open last read `inode` from the cluster, and the mount's change generation then
  // (Impl::GetAttr answers from it while both are current).
  std::chrono::steady_clock::time_point read_at;
  uint64_t read_generation = 0;
  // Layout pages a publish found changed underneath this mount (LayoutConflict::pages): the
  // next publish builds those pages from these, not from `inode`'s. Cleared by a publish.
  std::map<uint64_t, PageRef> page_bases;

  uint64_t chunk_size() const { return inode.chunk_size ? inode.chunk_size : kDefaultChunk; }
  uint64_t Size() const {
    uint64_t base = truncated_to ? *truncated_to : inode.size;
    return std::max(base, written_end);
  }
};

struct Handle {
  uint64_t ino = 0;
  int flags = 0;
};

}  // namespace

class QuorumFs::Impl : private kj::TaskSet::ErrorHandler {
 public:
  Impl(ClusterClient& client, MountOptions options, QuorumFs* outer)
      : c_(client), o_(std::move(options)), outer_(outer), tasks_(*this), hashers_(2) {
    std::random_device rd;
    lease_holder_ = ((static_cast<uint64_t>(rd()) << 32) ^ rd()) | 1;
  }

  void taskFailed(kj::Exception&& e) override {
    std::fprintf(stderr, "quorumfs-mount: internal error: %s\n", e.getDescription().cStr());
  }

  Namespace& ns() { return c_.ns(); }
  // The namespace, for a call that changes it: drops every lookup read-ahead listing first, so
  // that this mount sees its own changes at once.
  Namespace& Changing() {
    ++change_generation_;
    if (!listings_.empty()) {
      std::lock_guard<std::mutex> lock(listing_mu_);
      listings_.clear();
    }
    loading_.clear();
    return ns();
  }
  fuse_session* se() { return outer_->session_; }

  void Add(kj::Promise<void> p) { tasks_.add(kj::mv(p)); }

  // ---- attributes ------------------------------------------------------------------------

  FileState* Find(uint64_t ino) {
    auto it = files_.find(ino);
    return it == files_.end() ? nullptr : it->second.get();
  }

  // `local`: overlay this mount's unpublished writes (loop thread only).
  void FillStat(const Inode& in, struct stat* st, bool local = true) {
    std::memset(st, 0, sizeof(*st));
    st->st_ino = in.ino;
    st->st_mode = ModeTypeBits(in.type) | in.mode;
    st->st_nlink = in.nlink;
    st->st_uid = in.uid;
    st->st_gid = in.gid;
    st->st_rdev = in.rdev;
    st->st_size = static_cast<off_t>(in.size);
    uint64_t used = 0;
    for (const auto& s : in.slots) {
      if (!s.hole()) used += s.length;
    }
    for (const auto& p : in.pages) used += p.used;
    if (in.type == FileType::kSymlink || in.is_dir()) used = in.size;
    st->st_blocks = static_cast<blkcnt_t>((used + 511) / 512);
    st->st_blksize = in.chunk_size ? in.chunk_size : 4096;
    st->st_atim = {in.atime_ns / 1000000000, in.atime_ns % 1000000000};
    st->st_mtim = {in.mtime_ns / 1000000000, in.mtime_ns % 1000000000};
    st->st_ctim = {in.ctime_ns / 1000000000, in.ctime_ns % 1000000000};
    if (FileState* fs = local ? Find(in.ino) : nullptr) {
      st->st_size =
          static_cast<off_t>(std::max<uint64_t>(fs->Size(), fs->truncated_to ? 0 : in.size));
      if (fs->truncated_to) st->st_size = static_cast<off_t>(fs->Size());
      if (fs->unlinked_held) st->st_nlink = 0;
      if (fs->local_mtime_ns > in.mtime_ns) {
        st->st_mtim = {fs->local_mtime_ns / 1000000000, fs->local_mtime_ns % 1000000000};
      }
      if (fs->local_mtime_ns > in.ctime_ns) {
        st->st_ctim = {fs->local_mtime_ns / 1000000000, fs->local_mtime_ns % 1000000000};
      }
    }
  }

  // Extended attributes of inodes this mount recently reported to the kernel, so that the
  // getxattr/listxattr calls `ls -l` makes for every file are answered within attr_timeout
  // (the staleness the kernel already accepts for attributes) without a round trip, and
  // without a trip to the loop thread either: FUSE threads read it under xattr_mu_.
  struct CachedXattrs {
    std::vector<Xattr> xattrs;
    std::chrono::steady_clock::time_point expires;
  };
  std::mutex xattr_mu_;
  std::unordered_map<uint64_t, CachedXattrs> xattr_cache_;  // guarded by xattr_mu_

  void RememberXattrs(const Inode& in) {
    if (o_.attr_timeout <= 0) return;
    std::lock_guard<std::mutex> lock(xattr_mu_);
    if (xattr_cache_.size() > 200000) xattr_cache_.clear();
    auto& c = xattr_cache_[in.ino];
    c.xattrs = in.xattrs;
    // At least 10 s: `ls -l` of a large directory asks for every file's xattrs only after
    // listing all of it. An xattr set on another mount may take that long to show here.
    c.expires =
        std::chrono::steady_clock::now() +
        std::chrono::microseconds(static_cast<int64_t>(std::max(o_.attr_timeout, 10.0) * 1e6));
  }

  // Extended attributes this mount neither stores nor shows, refused with EOPNOTSUPP (any
  // thread): SELinux labels without -o selinux (MountOptions::selinux), and POSIX ACLs, which
  // quorumfs does not support. An ACL stored as a plain attribute would apply nothing, and cp -p
  // and cp -a set the mode through one and skip their chmod when the set succeeds, leaving every
  // copy with the mode it was created with.
  bool XattrRefused(const std::string& name) const {
    return (!o_.selinux && name == "security.selinux") || name == "system.posix_acl_access" ||
           name == "system.posix_acl_default";
  }

  // The cached xattrs of `ino` (any thread), or nullopt if none are cached.
  std::optional<std::vector<Xattr>> CachedXattrsOf(uint64_t ino) {
    std::lock_guard<std::mutex> lock(xattr_mu_);
    auto it = xattr_cache_.find(ino);
    if (it == xattr_cache_.end()) return std::nullopt;
    if (std::chrono::steady_clock::now() > it->second.expires) {
      xattr_cache_.erase(it);
      return std::nullopt;
    }
    return it->second.xattrs;
  }

  fuse_entry_param Entry(const Inode& in, bool local = true) {
    RememberXattrs(in);
    fuse_entry_param e;
    std::memset(&e, 0, sizeof(e));
    e.ino = in.ino;
    e.generation = 1;
    FillStat(in, &e.attr, local);
    e.attr_timeout = o_.attr_timeout;
    e.entry_timeout = o_.entry_timeout;
    return e;
  }

  // A positive entry for `name` in `parent`.
  void ReplyEntry(fuse_req_t req, const Result<Inode>& r, uint64_t parent,
                  const std::string& name) {
    if (!r.ok()) {
      fuse_reply_err(req, ErrnoOf(r.status()));
      return;
    }
    fuse_entry_param e = Entry(*r);
    NoteKernelName(parent, name, *r);
    fuse_reply_entry(req, &e);
  }

  // Names the kernel may still hold as positive entries (it keeps each for entry_timeout):
  // per directory, when this mount last gave each out. A lock taken on a file drops the ones of
  // its directories (RevalidateLocked), so that programs that coordinate through locks see
  // names other mounts removed or added since (sqlite's journal beside its database). Any
  // thread.
  // Directories are left out: dropping a directory's entry would detach what is mounted on it.
  void NoteKernelName(uint64_t parent, const std::string& name, const Inode& in) {
    if (o_.entry_timeout <= 0 || in.is_dir()) return;
    NoteKernelNames(parent, {name});
  }
  // The same for a readdirplus reply's names (directories already left out): one clock read
  // and one lock for the lot.
  void NoteKernelNames(uint64_t parent, const std::vector<std::string>& names) {
    if (o_.entry_timeout <= 0 || names.empty()) return;
    auto now = std::chrono::steady_clock::now();
    std::lock_guard<std::mutex> lock(kernel_names_mu_);
    auto& dir = kernel_names_[parent];
    size_t added = 0;
    for (const auto& name : names) added += dir.insert_or_assign(name, now).second ? 1 : 0;
    kernel_names_count_ += added;
    if (added && kernel_names_count_ > kernel_names_prune_at_) {
      // Forget what the kernel has dropped by now; prune again once the rest doubles.
      kernel_names_count_ = 0;
      for (auto d = kernel_names_.begin(); d != kernel_names_.end();) {
        for (auto n = d->second.begin(); n != d->second.end();) {
          n = now - n->second >= EntryTimeout() ? d->second.erase(n) : std::next(n);
        }
        kernel_names_count_ += d->second.size();
        d = d->second.empty() ? kernel_names_.erase(d) : std::next(d);
      }
      kernel_names_prune_at_ = std::max<size_t>(65536, 2 * kernel_names_count_);
    }
  }
  std::vector<std::string> KernelNames(uint64_t parent) {
    std::vector<std::string> out;
    auto now = std::chrono::steady_clock::now();
    std::lock_guard<std::mutex> lock(kernel_names_mu_);
    auto d = kernel_names_.find(parent);
    if (d == kernel_names_.end()) return out;
    for (const auto& [name, at] : d->second) {
      if (now - at < EntryTimeout()) out.push_back(name);
    }
    return out;
  }

  // `timeout`: how long the kernel may keep the attributes (negative: attr_timeout).
  void ReplyAttr(fuse_req_t req, const Result<Inode>& r, double timeout = -1) {
    if (!r.ok()) {
      fuse_reply_err(req, ErrnoOf(r.status()));
      return;
    }
    RememberXattrs(*r);
    struct stat st;
    FillStat(*r, &st);
    fuse_reply_attr(req, &st, timeout < 0 ? o_.attr_timeout : timeout);
  }

  void ReplyStatus(fuse_req_t req, const Status& s) {
    fuse_reply_err(req, s.ok() ? 0 : ErrnoOf(s));
  }

  // ---- chunk cache -----------------------------------------------------------------------

  using Bytes = std::shared_ptr<const std::string>;

  kj::Promise<Result<Bytes>> GetChunk(const ChunkId& id) {
    auto it = cache_.find(id);
    if (it != cache_.end()) {
      lru_.splice(lru_.begin(), lru_, it->second.second);
      return Result<Bytes>(it->second.first);
    }
    auto fl = inflight_.find(id);
    if (fl == inflight_.end()) {
      auto fetch = c_.chunks()
                       .Get(id)
                       .then([this, id](Result<std::string>&& r) -> Result<Bytes> {
                         inflight_.erase(id);
                         if (!r.ok()) return r.status();
                         auto bytes = std::make_shared<const std::string>(std::move(r).value());
                         Insert(id, bytes);
                         return bytes;
                       })
                       .fork();
      fl = inflight_.emplace(id, Fetch{kj::mv(fetch)}).first;
    }
    return fl->second.promise.addBranch();
  }

  void Insert(const ChunkId& id, Bytes bytes) {
    if (cache_.count(id)) return;
    lru_.push_front(id);
    cache_bytes_ += bytes->size();
    cache_.emplace(id, std::make_pair(bytes, lru_.begin()));
    while (cache_bytes_ > o_.cache_size && !lru_.empty()) {
      auto victim = cache_.find(lru_.back());
      cache_bytes_ -= victim->second.first->size();
      cache_.erase(victim);
      lru_.pop_back();
    }
  }

  // The published bytes of a slot (empty for a hole).
  kj::Promise<Result<Bytes>> SlotBytes(const Slot& s) {
    if (s.hole() || s.length == 0) return Result<Bytes>(std::make_shared<const std::string>());
    // A fetch that PrefetchAtOpen began before the open read the inode may have failed for a
    // reason gone since (servers back, the chunk stored again): its failure earns one fresh try.
    auto fl = inflight_.find(s.id);
    const bool joins_prefetch = fl != inflight_.end() && fl->second.open_prefetch;
    kj::Promise<Result<Bytes>> got = GetChunk(s.id);
    if (joins_prefetch) {
      got = got.then([this, id = s.id](Result<Bytes>&& r) -> kj::Promise<Result<Bytes>> {
        if (r.ok()) return kj::mv(r);
        return GetChunk(id);
      });
    }
    return got.then([len = s.length](Result<Bytes>&& r) -> Result<Bytes> {
      if (!r.ok()) return r.status();
      if ((*r)->size() == len) return *r;
      if ((*r)->size() < len) return Status(StatusCode::kCorruption, "chunk shorter than its slot");
      return std::make_shared<const std::string>((*r)->substr(0, len));
    });
  }

  // ---- layout pages ----------------------------------------------------------------------
  //
  // Slots beyond a file's inline ones live in layout pages (common/metadata.h), chunks fetched
  // through the verified chunk cache and kept decoded here by their id: a page is immutable, so
  // a cached one is never stale, and a layout names the pages it reads through.

  using PageSlots = std::shared_ptr<const std::vector<Slot>>;
  static constexpr size_t kPagesMax = 512;  // at most ~18 MiB of decoded pages
  std::unordered_map<ChunkId, PageSlots, ChunkIdHash> pages_;

  void RememberPage(const ChunkId& id, PageSlots slots) {
    if (pages_.size() >= kPagesMax) pages_.erase(pages_.begin());  // any one
    pages_[id] = std::move(slots);
  }

  // Slot idx of the layout `in` names, or nullopt if it is in a page not loaded yet.
  std::optional<Slot> KnownSlot(const Inode& in, uint64_t idx) {
    if (in.SlotIsInline(idx)) return idx < in.slots.size() ? in.slots[idx] : Slot{};
    const PageRef* ref = in.FindPage(idx / kSlotsPerPage);
    if (!ref) return Slot{};
    auto it = pages_.find(ref->id);
    if (it == pages_.end()) return std::nullopt;
    return ClippedPageSlot(*it->second, idx % kSlotsPerPage, ref->live, in.chunk_size);
  }

  kj::Promise<Result<PageSlots>> LoadPage(uint64_t ino, uint32_t cs, const PageRef& ref) {
    auto it = pages_.find(ref.id);
    if (it != pages_.end()) return Result<PageSlots>(it->second);
    return GetChunk(ref.id).then([this, ino, cs, ref](Result<Bytes>&& r) -> Result<PageSlots> {
      if (!r.ok()) return r.status();
      auto slots = DecodeLayoutPage(**r, ino, ref.index, cs);
      if (!slots.ok()) return slots.status();
      auto page = std::make_shared<const std::vector<Slot>>(std::move(slots).value());
      RememberPage(ref.id, page);
      return page;
    });
  }

  // Loads every page of slots [from, to] that `in` names and this mount has not loaded.
  kj::Promise<Status> LoadPages(const Inode& in, uint64_t from, uint64_t to) {
    kj::Vector<kj::Promise<Result<PageSlots>>> loads;
    if (!in.pages.empty()) {
      for (uint64_t k = from / kSlotsPerPage; k <= to / kSlotsPerPage; ++k) {
        const PageRef* ref = in.FindPage(k);
        if (ref && !pages_.count(ref->id)) loads.add(LoadPage(in.ino, in.chunk_size, *ref));
      }
    }
    if (loads.empty()) return Status::Ok();
    return kj::joinPromises(loads.releaseAsArray())
        .then([](kj::Array<Result<PageSlots>>&& rs) -> Status {
          for (auto& r : rs) {
            if (!r.ok()) return r.status();
          }
          return Status::Ok();
        });
  }

  // Whether slots [from, to] of `in` are all known without a page fetch.
  bool PagesLoaded(const Inode& in, uint64_t from, uint64_t to) {
    if (in.pages.empty()) return true;
    for (uint64_t k = from / kSlotsPerPage; k <= to / kSlotsPerPage; ++k) {
      const PageRef* ref = in.FindPage(k);
      if (ref && !pages_.count(ref->id)) return false;
    }
    return true;
  }

  // ---- writes ----------------------------------------------------------------------------

  FileState& State(const Inode& in) {
    auto& p = files_[in.ino];
    if (!p) {
      p = std::make_unique<FileState>();
      p->ino = in.ino;
      p->inode = in;
      no_files_ = false;
    }
    return *p;
  }

  void StartUpload(FileState& fs, uint64_t idx) {
    DirtySlot& ds = fs.dirty[idx];
    uint64_t gen = ds.gen;
    auto data = std::make_shared<const std::string>(ds.data);
    uint64_t ino = fs.ino;
    int64_t sent_ns = SystemWallClock().NowNs();
    if (data->empty()) {
      // No byte holds data (a slot punched whole, fallocate): published as a hole, no put.
      ds.upload_error = Status::Ok();
      ds.uploaded_gen = gen;
      ds.uploaded = Slot{};
      ds.uploaded_at_ns = sent_ns;
      ds.upload = kj::Promise<void>(kj::READY_NOW).fork();
      return;
    }
    auto p =
        hashers_.Run<ChunkId>([data]() { return ChunkId::Of(*data); })
            .then([this, data](ChunkId id) {
              return c_.chunks().Put(id, data).then([this, id, data](Status s) -> Result<ChunkId> {
                if (!s.ok()) return s;
                Insert(id, data);
                return id;
              });
            })
            .then([this, ino, idx, gen, sent_ns, len = data->size()](Result<ChunkId>&& r) {
              FileState* f = Find(ino);
              if (!f) return;
              auto it = f->dirty.find(idx);
              if (it == f->dirty.end()) return;
              if (!r.ok()) {
                it->second.upload_error = r.status();
                return;
              }
              it->second.upload_error = Status::Ok();
              // Kept even if the slot was written again meanwhile: a flush that began before
              // that write publishes these bytes (DoFlush), and the slot stays dirty. A put
              // again of the same generation (a refresh, common/gc_rules.h) renews the time.
              if (gen >= it->second.uploaded_gen) {
                it->second.uploaded_gen = gen;
                it->second.uploaded = Slot{*r, static_cast<uint32_t>(len)};
                it->second.uploaded_at_ns = sent_ns;
              }
            })
            .fork();
    ds.upload = kj::mv(p);
  }

  // Writes n bytes at in_slot into slot idx, which this mount holds (or now starts holding) in
  // memory with every byte of its base.
  void ApplyToSlot(FileState& f, uint64_t idx, uint32_t in_slot, const char* src, size_t n) {
    Unquiet(f.ino);
    const uint64_t cs = f.chunk_size();
    DirtySlot& ds = f.dirty[idx];
    size_t before = ds.data.size();
    if (ds.data.size() < in_slot + n) ds.data.resize(in_slot + n, '\0');
    std::memcpy(&ds.data[in_slot], src, n);
    dirty_bytes_ += ds.data.size() - before;
    ++ds.gen;
    ds.ranges.push_back(DirtySlot::Range{in_slot, static_cast<uint32_t>(in_slot + n), ds.gen});
    f.written_end = std::max<uint64_t>(f.written_end, idx * cs + in_slot + n);
    f.local_mtime_ns = SystemWallClock().NowNs();
    {
      std::lock_guard<std::mutex> lock(stage_mu_);
      auto& held = stageable_[f.ino];
      held.first = cs;
      held.second.insert(idx);
      dirty_mirror_ = dirty_bytes_;
    }
    // A writer that just filled the slot's last byte (sequential writing) will not come
    // back to it soon: upload it in the background. Random writes into a full slot wait
    // for flush, so each does not re-upload the whole chunk.
    if (ds.data.size() == cs && in_slot + n == cs) StartUpload(f, idx);
  }

  // ---- writes answered on the FUSE thread ------------------------------------------------
  //
  // A write that lands only in slots this mount already holds in memory (dirty, every byte of
  // the slot's base read in) needs nothing from the cluster: the FUSE thread queues it here and
  // replies at once, which spares the two thread wake-ups of a trip to the loop thread (each
  // ~80 us on this VM when the thread sits on another, idle vCPU). The loop thread applies the
  // queue, in order, before it starts any request (Submit) and before any flush, so a later
  // request (a read, a getattr, an fsync, a close) sees every write already answered, and no
  // write is published without them. A queued write whose slot was published meanwhile (the
  // race with a flush of another descriptor) is applied the ordinary way, and everything after
  // it waits for it; if that fails, the file's next flush reports the error (as a local file
  // system reports a failed write-back at fsync or close).
  struct StagedWrite {
    uint64_t ino;
    uint64_t off;
    std::shared_ptr<std::string> data;
  };
  static constexpr uint64_t kMaxStagedBytes = 8ull << 20;
  std::mutex stage_mu_;
  std::vector<StagedWrite> staged_;  // guarded by stage_mu_, like the three below
  uint64_t staged_bytes_ = 0;
  // ino -> (chunk size, slots held in memory): the slots a write may be staged into.
  std::unordered_map<uint64_t, std::pair<uint64_t, std::set<uint64_t>>> stageable_;
  uint64_t dirty_mirror_ = 0;  // dirty_bytes_, as of the loop thread's last change
  // Loop thread: staged writes being applied the ordinary way, one after another.
  kj::Maybe<kj::ForkedPromise<void>> staged_tail_;
  uint64_t staged_tail_gen_ = 0;
  std::unordered_map<uint64_t, Status> staged_errors_;
  // Files whose flush has nothing to do (guarded by stage_mu_): no byte written since the loop
  // thread last found nothing dirty, staged or failed for them. A close(2) of such a file (a
  // create's, or any open that wrote nothing) is answered on the FUSE thread, without the two
  // thread hand-offs through the loop. Every write takes its file out first: a staged one in
  // TryStage, any other where it dirties a slot (ApplyToSlot), both before the write is
  // answered; a staged write that fails takes it out before recording the error.
  std::unordered_set<uint64_t> quiet_;
  static constexpr size_t kQuietMax = 65536;

  // FUSE thread: whether a flush of `ino` has nothing to do (see quiet_).
  bool QuietFlush(uint64_t ino) {
    std::lock_guard<std::mutex> lock(stage_mu_);
    return quiet_.count(ino) > 0;
  }
  void Unquiet(uint64_t ino) {
    std::lock_guard<std::mutex> lock(stage_mu_);
    quiet_.erase(ino);
  }
  // Loop thread: records that a flush of `ino` has nothing to do, if so: nothing dirty, no
  // staged write waiting (anywhere: one may be for this file) and no failed one to report.
  void MarkQuiet(uint64_t ino) {
    FileState* fs = Find(ino);
    if (fs && (!fs->dirty.empty() || fs->truncated_to)) return;
    if (staged_errors_.count(ino) || staged_tail_ != nullptr) return;
    std::lock_guard<std::mutex> lock(stage_mu_);
    if (!staged_.empty()) return;
    if (quiet_.size() >= kQuietMax) quiet_.clear();
    quiet_.insert(ino);
  }

  // FUSE thread: queues the write if it can be applied in place later; false: take the loop.
  bool TryStage(uint64_t ino, uint64_t off, const std::shared_ptr<std::string>& data) {
    size_t size = data->size();
    if (size == 0) return false;
    std::lock_guard<std::mutex> lock(stage_mu_);
    auto it = stageable_.find(ino);
    if (it == stageable_.end()) return false;
    const uint64_t cs = it->second.first;
    for (uint64_t idx = off / cs; idx <= (off + size - 1) / cs; ++idx) {
      if (!it->second.second.count(idx)) return false;
    }
    if (staged_bytes_ + size > kMaxStagedBytes ||
        dirty_mirror_ + staged_bytes_ + size > o_.max_dirty) {
      return false;  // the loop's path applies back-pressure (a flush) when dirty data piles up
    }
    staged_.push_back(StagedWrite{ino, off, data});
    staged_bytes_ += size;
    quiet_.erase(ino);
    return true;
  }

  void ForgetStageable(uint64_t ino, std::optional<uint64_t> idx) {
    std::lock_guard<std::mutex> lock(stage_mu_);
    auto it = stageable_.find(ino);
    if (it != stageable_.end()) {
      if (idx) it->second.second.erase(*idx);
      if (!idx || it->second.second.empty()) stageable_.erase(it);
    }
    dirty_mirror_ = dirty_bytes_;
  }

  // Applies a staged write in place if every slot it touches is still held; false otherwise
  // (nothing applied).
  bool ApplyInPlace(const StagedWrite& w) {
    FileState* f = Find(w.ino);
    if (!f) return false;
    const uint64_t cs = f->chunk_size();
    const size_t size = w.data->size();
    for (uint64_t idx = w.off / cs; idx <= (w.off + size - 1) / cs; ++idx) {
      if (!f->dirty.count(idx)) return false;
    }
    for (size_t done = 0; done < size;) {
      uint64_t pos = w.off + done;
      uint32_t in_slot = static_cast<uint32_t>(pos % cs);
      size_t n = std::min<size_t>(size - done, cs - in_slot);
      ApplyToSlot(*f, pos / cs, in_slot, w.data->data() + done, n);
      done += n;
    }
    return true;
  }

  // Loop thread: applies every staged write; what must wait is chained on staged_tail_.
  void DrainStaged() {
    std::vector<StagedWrite> batch;
    {
      std::lock_guard<std::mutex> lock(stage_mu_);
      if (staged_.empty()) return;
      batch.swap(staged_);
      staged_bytes_ = 0;
    }
    size_t i = 0;
    if (staged_tail_ == nullptr) {
      while (i < batch.size() && ApplyInPlace(batch[i])) ++i;
      if (i == batch.size()) return;
    }
    auto rest = std::make_shared<std::vector<StagedWrite>>(batch.begin() + i, batch.end());
    kj::Promise<void> after = kj::READY_NOW;
    KJ_IF_MAYBE (t, staged_tail_) {
      after = t->addBranch();
    }
    const uint64_t gen = ++staged_tail_gen_;
    staged_tail_ = after.then([this, rest]() { return ApplyInOrder(rest, 0); }).fork();
    // Once this chain (and no later one) is done, staged writes apply in place again.
    KJ_IF_MAYBE (t, staged_tail_) {
      Add(t->addBranch().then([this, gen]() {
        if (staged_tail_gen_ == gen) staged_tail_ = nullptr;
      }));
    }
  }

  kj::Promise<void> ApplyInOrder(std::shared_ptr<std::vector<StagedWrite>> ws, size_t k) {
    if (k == ws->size()) return kj::READY_NOW;
    const StagedWrite& w = (*ws)[k];
    return WriteFrom(w.ino, w.off, w.data, 0, /*backpressure=*/false)
        .then([this, ws, k, ino = w.ino](Status s) {
          if (!s.ok()) {
            Unquiet(ino);
            staged_errors_.emplace(ino, s);
          }
          return ApplyInOrder(ws, k + 1);
        });
  }

  // Runs `fn` (a request from Submit, a flush) once every staged write is applied: at once,
  // unless some wait in staged_tail_; after that wait, writes staged meanwhile go first too.
  template <typename Fn>
  auto AfterStaged(Fn fn) -> decltype(fn()) {
    DrainStaged();
    KJ_IF_MAYBE (t, staged_tail_) {
      return t->addBranch().then(
          [this, fn = kj::mv(fn)]() mutable { return AfterStaged(kj::mv(fn)); });
    }
    return fn();
  }

  kj::Promise<Status> Write(uint64_t ino, uint64_t off, std::shared_ptr<std::string> buf) {
    FileState* fs = Find(ino);
    if (!fs) return Status(StatusCode::kNotFound, "file not open");
    return WriteFrom(ino, off, buf, 0);
  }

  // `backpressure`: first flush the file if the mount holds more than max_dirty; if that
  // fails the write fails, and none of its bytes are kept (a write that said it failed must
  // not land later). Off for the staged writes applied in order (ApplyInOrder): Flush waits
  // for that very chain.
  kj::Promise<Status> WriteFrom(uint64_t ino, uint64_t off, std::shared_ptr<std::string> buf,
                                size_t done, bool backpressure = true) {
    FileState* fs = Find(ino);
    if (!fs) return Status(StatusCode::kNotFound, "file not open");
    if (done == 0 && backpressure && dirty_bytes_ > o_.max_dirty) {
      return Flush(ino).then([this, ino, off, buf](Status s) -> kj::Promise<Status> {
        if (!s.ok()) return s;
        return WriteFrom(ino, off, buf, 0, /*backpressure=*/false);
      });
    }
    if (done >= buf->size()) return Status::Ok();
    const uint64_t cs = fs->chunk_size();
    if (off + buf->size() > MaxFileSize(static_cast<uint32_t>(cs))) {
      return Status(StatusCode::kTooLarge, "write beyond the largest file this chunk size allows");
    }
    uint64_t pos = off + done;
    uint64_t idx = pos / cs;
    uint32_t in_slot = static_cast<uint32_t>(pos % cs);
    size_t n = std::min<size_t>(buf->size() - done, cs - in_slot);
    auto apply = [this, ino, idx, in_slot, n, buf, done, off,
                  backpressure]() -> kj::Promise<Status> {
      FileState* f = Find(ino);
      if (!f) return Status(StatusCode::kNotFound, "file not open");
      ApplyToSlot(*f, idx, in_slot, buf->data() + done, n);
      return WriteFrom(ino, off, buf, done + n, backpressure);
    };
    if (fs->dirty.count(idx)) return apply();
    // First write to this slot: start from its published bytes unless they are all replaced.
    std::optional<Slot> known = KnownSlot(fs->inode, idx);
    if (!known) {
      return LoadPages(fs->inode, idx, idx)
          .then([this, ino, off, buf, done, backpressure](Status s) -> kj::Promise<Status> {
            if (!s.ok()) return s;
            return WriteFrom(ino, off, buf, done, backpressure);
          });
    }
    Slot base = *known;
    if (fs->truncated_to) {
      uint64_t limit = *fs->truncated_to;
      if (idx * cs >= limit) base = Slot{};
    }
    bool covers = in_slot == 0 && n >= base.length;
    if (base.hole() || covers) {
      DirtySlot& ds = fs->dirty[idx];
      ds.base = base;
      return apply();
    }
    return HoldSlotBytes(ino, idx, base).then([apply](Status s) -> kj::Promise<Status> {
      if (!s.ok()) return s;
      return apply();
    });
  }

  // Starts holding slot idx in memory with every byte of `base`, its published slot (unless
  // the mount holds it by the time the bytes arrive).
  kj::Promise<Status> HoldSlotBytes(uint64_t ino, uint64_t idx, Slot base) {
    return SlotBytes(base).then([this, ino, idx, base](Result<Bytes>&& r) -> Status {
      if (!r.ok()) return r.status();
      FileState* f = Find(ino);
      if (!f) return Status(StatusCode::kNotFound, "file not open");
      if (!f->dirty.count(idx)) {
        DirtySlot& ds = f->dirty[idx];
        ds.base = base;
        ds.data = **r;
        uint64_t limit = f->truncated_to ? *f->truncated_to : UINT64_MAX;
        uint64_t cs = f->chunk_size();
        if (limit != UINT64_MAX && limit < idx * cs + ds.data.size()) {
          ds.data.resize(limit > idx * cs ? limit - idx * cs : 0);
        }
        dirty_bytes_ += ds.data.size();
      }
      return Status::Ok();
    });
  }

  // Zeroes bytes [a, b) of slot idx, which the mount holds with every byte of its base: bytes
  // it holds up to b are zeroed, or dropped if none it holds follow (a slot holding no bytes is
  // published as a hole). Recorded as a zero range (DirtySlot::Range::zero): it never extends
  // the file, and a rebase zeroes only the bytes another mount's chunk has there.
  void ZeroHeld(FileState& f, uint64_t idx, uint32_t a, uint32_t b) {
    Unquiet(f.ino);
    DirtySlot& ds = f.dirty[idx];
    const size_t before = ds.data.size();
    if (b >= ds.data.size()) {
      ds.data.resize(std::min<size_t>(a, ds.data.size()));
    } else if (a < b) {
      std::memset(&ds.data[a], 0, b - a);
    }
    dirty_bytes_ -= std::min<uint64_t>(dirty_bytes_, before - ds.data.size());
    ++ds.gen;
    ds.ranges.push_back(DirtySlot::Range{a, b, ds.gen, /*zero=*/true});
    f.local_mtime_ns = SystemWallClock().NowNs();
    std::lock_guard<std::mutex> lock(stage_mu_);
    auto& stage = stageable_[f.ino];
    stage.first = f.chunk_size();
    stage.second.insert(idx);
    dirty_mirror_ = dirty_bytes_;
  }

  // Zeroes bytes [off, end) of the file as this mount sees it (fallocate's PUNCH_HOLE and
  // ZERO_RANGE; the caller clips `end` to the file's size). Buffered like a write until the next
  // flush (ZeroHeld): a slot zeroed to its end or the file's holds no bytes and is published as a
  // hole (no chunk); a slot zeroed in part is read first, as for a write. Slots this mount sees
  // as holes and does not hold are left alone. One layout page at a time (a mount keeps only so
  // many decoded), skipping pages that hold nothing; past kMaxPunchedSlots slots held, the file
  // is published before the next page.
  static constexpr size_t kMaxPunchedSlots = 4096;
  kj::Promise<Status> ZeroRange(uint64_t ino, uint64_t off, uint64_t end) {
    FileState* fs = Find(ino);
    if (!fs) return Status(StatusCode::kNotFound, "file not open");
    const uint64_t cs = fs->chunk_size();
    const uint64_t page_bytes = kSlotsPerPage * cs;
    uint64_t stop = 0;  // the end of this page's part of the range
    for (;; off = stop) {
      if (off >= end) return Status::Ok();
      stop = std::min(end, (off / page_bytes + 1) * page_bytes);
      bool empty_page =
          !fs->inode.SlotIsInline(off / cs) && !fs->inode.FindPage(off / page_bytes) &&
          fs->dirty.lower_bound(off / cs) == fs->dirty.lower_bound((stop - 1) / cs + 1);
      if (!empty_page) break;
    }
    if (!PagesLoaded(fs->inode, off / cs, (stop - 1) / cs)) {
      return LoadPages(fs->inode, off / cs, (stop - 1) / cs)
          .then([this, ino, off, end](Status s) -> kj::Promise<Status> {
            if (!s.ok()) return s;
            return ZeroRange(ino, off, end);
          });
    }
    // Slots to zero whose published bytes must be read first: (index, a, b, base).
    struct Partial {
      uint64_t idx;
      uint32_t a, b;
      Slot base;
    };
    kj::Vector<Partial> partial;
    for (uint64_t idx = off / cs; idx * cs < stop; ++idx) {
      const uint64_t start = idx * cs;
      const uint32_t a = static_cast<uint32_t>(std::max(off, start) - start);
      const uint32_t b = static_cast<uint32_t>(std::min(stop, start + cs) - start);
      auto d = fs->dirty.find(idx);
      if (d != fs->dirty.end()) {
        ZeroHeld(*fs, idx, a, b);  // even over zeros held: a rebase zeroes the range
        continue;
      }
      Slot base = KnownSlot(fs->inode, idx).value_or(Slot{});
      if (fs->truncated_to && start >= *fs->truncated_to) base = Slot{};
      const uint64_t held = base.hole() ? 0 : base.length;  // bytes that may hold data
      if (held <= a) continue;                              // only zeros there already
      if (a == 0 && held <= b) {                            // none of the published bytes stays
        fs->dirty[idx].base = base;
        ZeroHeld(*fs, idx, a, b);
        continue;
      }
      partial.add(Partial{idx, a, b, base});
    }
    kj::Promise<Status> done = Status::Ok();
    for (const Partial& p : partial) {
      done = done.then([this, ino, p](Status s) -> kj::Promise<Status> {
        if (!s.ok()) return s;
        return HoldSlotBytes(ino, p.idx, p.base).then([this, ino, p](Status s) {
          FileState* f = Find(ino);
          if (s.ok() && f) ZeroHeld(*f, p.idx, p.a, p.b);
          return s;
        });
      });
    }
    return done.then([this, ino, stop, end](Status s) -> kj::Promise<Status> {
      if (!s.ok() || stop >= end) return s;
      FileState* f = Find(ino);
      if (f && f->dirty.size() > kMaxPunchedSlots) {
        return Flush(ino).then([this, ino, stop, end](Status s) -> kj::Promise<Status> {
          if (!s.ok()) return s;
          return ZeroRange(ino, stop, end);
        });
      }
      return ZeroRange(ino, stop, end);
    });
  }

  // Extends the file to at least `end` bytes (fallocate without KEEP_SIZE): its buffered writes
  // are published first, then the size is raised in a record change of its own.
  kj::Promise<Status> Extend(uint64_t ino, uint64_t end) {
    FileState* fs = Find(ino);
    // Within what this mount has written and not yet published: nothing to extend.
    if (fs && fs->written_end >= end) return Status::Ok();
    return Flush(ino).then([this, ino, end](Status s) -> kj::Promise<Status> {
      if (!s.ok()) return s;
      // Extended in the record change itself: a size read first could be stale by then
      // (another mount appending), and setting it would cut the file.
      SetAttrRequest r;
      r.size = end;
      r.size_grow_only = true;
      return Changing().SetAttr(ino, r).then([this, ino](Result<Inode>&& res) -> Status {
        if (!res.ok()) return res.status();
        if (FileState* f = Find(ino); f && f->dirty.empty()) f->inode = *res;
        return Status::Ok();
      });
    });
  }

  // fallocate(2): mode 0 and KEEP_SIZE reserve nothing (chunks are written when data is) and
  // only extend; PUNCH_HOLE (always with KEEP_SIZE) and ZERO_RANGE zero the range first.
  kj::Promise<void> Fallocate(fuse_req_t req, uint64_t ino, int mode, uint64_t off, uint64_t end) {
    const bool keep = mode & FALLOC_FL_KEEP_SIZE;
    kj::Promise<Status> zeroed = Status::Ok();
    if (mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE)) {
      FileState* fs = Find(ino);
      if (!fs) return fuse_reply_err(req, EBADF), kj::READY_NOW;
      zeroed = ZeroRange(ino, off, std::min(end, fs->Size()));
    }
    return zeroed
        .then([this, ino, end, keep](Status s) -> kj::Promise<Status> {
          if (!s.ok() || keep) return s;
          return Extend(ino, end);
        })
        .then([req](Status s) { fuse_reply_err(req, s.ok() ? 0 : ErrnoOf(s)); });
  }

  // copy_file_range(2) within the mount: the source's bytes as this mount reads them (its own
  // unpublished writes included), written into the destination as a write of them would be,
  // one source chunk at a time, without the trips through the kernel a read and a write of each
  // piece take. At most kMaxCopy bytes per call (the reply's count is 32 bits; cp loops); fewer
  // at the source's end. Identical chunks are stored once (content addressed), so the copy's
  // full chunks cost the servers no new space: their puts only refresh the chunks already there.
  static constexpr size_t kMaxCopy = 256ull << 20;
  kj::Promise<void> CopyRange(fuse_req_t req, uint64_t in, uint64_t off_in, uint64_t out,
                              uint64_t off_out, size_t len) {
    return CopyFrom(in, off_in, out, off_out, std::min(len, kMaxCopy), 0)
        .then([req](Result<size_t>&& r) {
          if (!r.ok()) return fuse_reply_err(req, ErrnoOf(r.status())), void();
          fuse_reply_write(req, *r);
        });
  }
  // The rest of a copy after `done` bytes; an error after some bytes were copied ends the copy
  // short (as a short write), the next call reports it.
  kj::Promise<Result<size_t>> CopyFrom(uint64_t in, uint64_t off_in, uint64_t out, uint64_t off_out,
                                       size_t len, size_t done) {
    FileState* src = Find(in);
    if (done >= len) return Result<size_t>(done);
    if (!src || !Find(out)) return Result<size_t>(Status(StatusCode::kNotFound, "file not open"));
    const uint64_t cs = src->chunk_size();
    const uint64_t at = off_in + done;
    size_t n = static_cast<size_t>(std::min<uint64_t>(len - done, cs - at % cs));
    auto stop = [done](Status s) { return done > 0 ? Result<size_t>(done) : Result<size_t>(s); };
    return Read(in, at, n).then([this, in, off_in, out, off_out, len, done,
                                 stop](Result<ReadBytes>&& r) -> kj::Promise<Result<size_t>> {
      if (!r.ok()) return stop(r.status());
      const size_t got = r->size();
      if (got == 0) return Result<size_t>(done);  // the source's end
      auto buf = std::make_shared<std::string>(r->data(), got);
      return WriteFrom(out, off_out + done, buf, 0)
          .then([this, in, off_in, out, off_out, len, done, got,
                 stop](Status s) -> kj::Promise<Result<size_t>> {
            if (!s.ok()) return stop(s);
            return CopyFrom(in, off_in, out, off_out, len, done + got);
          });
    });
  }

  // A setattr that a flush publishes in the same record change as the layout (LayoutUpdate::
  // attrs); `applied` holds the inode that change left, if a publish carried it.
  struct AttrCarry {
    SetAttrRequest request;
    std::optional<Inode> applied;
  };

  // Uploads every dirty slot and publishes the layout (close, fsync, release), with `carry`'s
  // attributes if there is something to publish. Concurrent flushes of one file queue behind
  // each other.
  kj::Promise<Status> Flush(uint64_t ino, std::shared_ptr<AttrCarry> carry = nullptr) {
    return AfterStaged([this, ino, carry]() { return FlushApplied(ino, carry); });
  }

  // Flush, once every staged write is applied.
  kj::Promise<Status> FlushApplied(uint64_t ino, std::shared_ptr<AttrCarry> carry) {
    auto failed = staged_errors_.find(ino);
    if (failed != staged_errors_.end()) {
      Status s = failed->second;
      staged_errors_.erase(failed);
      return s;
    }
    FileState* fs = Find(ino);
    if (!fs || (fs->dirty.empty() && !fs->truncated_to)) {
      MarkQuiet(ino);
      return Status::Ok();
    }
    if (fs->flushing) {
      auto paf = kj::newPromiseAndFulfiller<void>();
      fs->flush_waiters.push_back(kj::mv(paf.fulfiller));
      return paf.promise.then([this, ino, carry]() { return Flush(ino, carry); });
    }
    fs->flushing = true;
    return DoFlush(ino, 0, carry).then([this, ino](Status s) {
      if (FileState* f = Find(ino)) {
        f->flushing = false;
        f->publish_failed = !s.ok();
        auto waiters = std::move(f->flush_waiters);
        for (auto& w : waiters) w->fulfill();
        MaybeForget(ino);
      }
      return s;
    });
  }

  // A dirty slot as a flush publishes it: its generation then and the chunk holding it.
  struct SlotSnap {
    uint64_t gen = 0;
    Slot uploaded;
  };
  // What a flush publishes, as of the moment its uploads were all done: the dirty slots, the
  // file's end and truncation then, and the page each changed layout page is built on.
  struct FlushSnap {
    std::map<uint64_t, SlotSnap> slots;
    uint64_t written_end = 0;
    std::optional<uint64_t> truncated_to;
    std::map<uint64_t, PageRef> bases;
    std::shared_ptr<AttrCarry> carry;  // published with the layout, if set
  };
  struct BuiltPage {
    LayoutUpdate::PageChange change;
    PageSlots slots;  // the new page's slots (null if it is all holes)
  };

  kj::Promise<Status> DoFlush(uint64_t ino, int attempt, std::shared_ptr<AttrCarry> carry) {
    FileState* fs = Find(ino);
    if (!fs) return Status::Ok();
    kj::Vector<kj::Promise<void>> uploads;
    int64_t now = SystemWallClock().NowNs();
    // What this flush publishes is what was written before it began: each dirty slot as of its
    // generation now, and the file's end now. Writes that land while it waits for the uploads
    // stay dirty for the next flush (as a local file system's fsync need not wait for writes
    // issued after it).
    auto snap = std::make_shared<FlushSnap>();
    snap->written_end = fs->written_end;
    snap->truncated_to = fs->truncated_to;
    snap->carry = carry;
    auto want = std::make_shared<std::map<uint64_t, uint64_t>>();
    for (auto& [idx, ds] : fs->dirty) {
      (*want)[idx] = ds.gen;
      // A chunk put long ago is put again (refreshing its last-put time) so that a GC whose
      // mark began before this publish cannot sweep it (common/gc_rules.h).
      if (ds.uploaded_gen != ds.gen || ChunkNeedsRefresh(ds.uploaded_at_ns, now, kMinGcGraceNs)) {
        StartUpload(*fs, idx);
      }
      KJ_IF_MAYBE (u, ds.upload) {
        uploads.add(u->addBranch());
      }
    }
    return kj::joinPromises(uploads.releaseAsArray())
        .then([this, ino, attempt, snap, want]() -> kj::Promise<Status> {
          FileState* fs = Find(ino);
          if (!fs) return Status::Ok();
          bool paged = false;
          for (const auto& [idx, gen] : *want) {
            auto it = fs->dirty.find(idx);
            if (it == fs->dirty.end()) continue;
            const DirtySlot& ds = it->second;
            if (ds.uploaded_gen < gen) {
              // This slot's own failure (a full disk says ENOSPC, not EIO), even when
              // another file's flush ran meanwhile.
              return ds.upload_error.ok() ? Status(StatusCode::kIoError, "chunk upload failed")
                                          : ds.upload_error;
            }
            snap->slots[idx] = SlotSnap{ds.uploaded_gen, ds.uploaded};
            paged |= !fs->inode.SlotIsInline(idx);
          }
          if (!paged) return Publish(ino, attempt, snap, {});
          // Slots in layout pages. A page is built on the one the layout (or a conflict) names,
          // so first each dirty slot there whose bytes that page changed since the slot was
          // read is rebuilt on them (the check the inode record makes for inline slots); those
          // slots are uploaded again.
          for (const auto& [idx, sn] : snap->slots) {
            uint64_t k = idx / kSlotsPerPage;
            if (!fs->inode.SlotIsInline(idx) && !snap->bases.count(k)) {
              snap->bases[k] = PageBase(*fs, k);
            }
          }
          auto rebuilt = std::make_shared<size_t>(0);
          kj::Vector<kj::Promise<Status>> checks;
          for (const auto& [k, base] : snap->bases) checks.add(RebasePage(ino, base, rebuilt));
          return kj::joinPromises(checks.releaseAsArray())
              .then([this, ino, attempt, snap,
                     rebuilt](kj::Array<Status>&& results) -> kj::Promise<Status> {
                for (auto& s : results) {
                  if (!s.ok()) return s;
                }
                if (*rebuilt > 0) {
                  if (attempt > 200)
                    return Status(StatusCode::kIoError, "a layout page kept changing");
                  return DoFlush(ino, attempt + 1, snap->carry);
                }
                return BuildAndPublish(ino, attempt, snap);
              });
        });
  }

  // Puts the changed layout pages as chunks, then publishes. Writes may land meanwhile; a
  // truncation, or a slot published from under this flush, starts it over.
  kj::Promise<Status> BuildAndPublish(uint64_t ino, int attempt, std::shared_ptr<FlushSnap> snap) {
    FileState* fs = Find(ino);
    if (!fs) return Status::Ok();
    return BuildPages(ino, snap).then(
        [this, ino, attempt, snap](Result<std::vector<BuiltPage>>&& built) -> kj::Promise<Status> {
          if (!built.ok()) return built.status();
          FileState* fs = Find(ino);
          if (!fs) return Status::Ok();
          bool same = fs->truncated_to == snap->truncated_to;
          for (const auto& [idx, sn] : snap->slots) same &= fs->dirty.count(idx) > 0;
          if (!same) {
            if (attempt > 200) return Status(StatusCode::kIoError, "the file kept changing");
            return DoFlush(ino, attempt + 1, snap->carry);
          }
          return Publish(ino, attempt, snap, std::move(built).value());
        });
  }

  // Slot `s`, starting at byte `start` of the file, as far as a truncation to `truncated` leaves
  // it (a hole if none of it).
  static Slot ClipToTruncation(Slot s, uint64_t start, std::optional<uint64_t> truncated) {
    if (!truncated || s.hole()) return s;
    if (start >= *truncated) return Slot{};
    if (s.length > *truncated - start) s.length = static_cast<uint32_t>(*truncated - start);
    return s;
  }

  // The base a publish builds page k from: what a conflict showed, else the layout's.
  PageRef PageBase(const FileState& fs, uint64_t k) {
    auto pb = fs.page_bases.find(k);
    if (pb != fs.page_bases.end()) return pb->second;
    const PageRef* ref = fs.inode.FindPage(k);
    return ref ? *ref : PageRef{k, ChunkId(), 0, 0};
  }

  // Builds and puts every layout page holding a slot of `snap`: the base page's slots (as far
  // as its `live` and this mount's truncation leave them), with the snapshot's slots over them.
  kj::Promise<Result<std::vector<BuiltPage>>> BuildPages(uint64_t ino,
                                                         std::shared_ptr<FlushSnap> snap) {
    FileState* fs = Find(ino);
    if (!fs) return Result<std::vector<BuiltPage>>(std::vector<BuiltPage>{});
    const uint32_t cs = static_cast<uint32_t>(fs->chunk_size());
    kj::Vector<kj::Promise<Result<BuiltPage>>> pages;
    for (const auto& [k, b] : snap->bases) {
      kj::Promise<Result<PageSlots>> base =
          b.id.IsZero() ? kj::Promise<Result<PageSlots>>(Result<PageSlots>(PageSlots()))
                        : LoadPage(ino, cs, b);
      pages.add(base.then([this, ino, cs, k = k, b = b, snap, truncated = snap->truncated_to](
                              Result<PageSlots>&& r) -> kj::Promise<Result<BuiltPage>> {
        if (!r.ok()) return Result<BuiltPage>(r.status());
        auto page = std::make_shared<std::vector<Slot>>(kSlotsPerPage);
        for (uint64_t j = 0; j < kSlotsPerPage; ++j) {
          Slot s = *r ? ClippedPageSlot(**r, j, b.live, cs) : Slot{};
          (*page)[j] = ClipToTruncation(s, (k * kSlotsPerPage + j) * cs, truncated);
        }
        auto from = snap->slots.lower_bound(k * kSlotsPerPage);
        auto to = snap->slots.lower_bound((k + 1) * kSlotsPerPage);
        for (auto it = from; it != to; ++it)
          (*page)[it->first % kSlotsPerPage] = it->second.uploaded;
        while (!page->empty() && page->back().hole()) page->pop_back();
        BuiltPage out;
        out.change.index = k;
        out.change.base = b.id;
        out.change.base_live = b.live;
        for (const auto& s : *page) out.change.used += s.hole() ? 0 : s.length;
        if (page->empty()) return Result<BuiltPage>(std::move(out));
        out.slots = page;
        auto bytes = std::make_shared<const std::string>(EncodeLayoutPage(ino, k, cs, *page));
        return hashers_.Run<ChunkId>([bytes]() { return ChunkId::Of(*bytes); })
            .then([this, bytes, out = std::move(out)](ChunkId id) mutable {
              out.change.updated = id;
              return c_.chunks().Put(id, bytes).then(
                  [out = std::move(out)](Status s) mutable -> Result<BuiltPage> {
                    if (!s.ok()) return s;
                    return std::move(out);
                  });
            });
      }));
    }
    return kj::joinPromises(pages.releaseAsArray())
        .then([](kj::Array<Result<BuiltPage>>&& rs) -> Result<std::vector<BuiltPage>> {
          std::vector<BuiltPage> out;
          for (auto& r : rs) {
            if (!r.ok()) return r.status();
            out.push_back(std::move(r).value());
          }
          return out;
        });
  }

  kj::Promise<Status> Publish(uint64_t ino, int attempt, std::shared_ptr<FlushSnap> snap,
                              std::vector<BuiltPage> built) {
    FileState* fs = Find(ino);
    if (!fs) return Status::Ok();
    LayoutUpdate u;
    for (const auto& [idx, sn] : snap->slots) {
      if (!fs->inode.SlotIsInline(idx)) continue;
      LayoutUpdate::SlotChange ch;
      ch.index = idx;
      ch.base = fs->dirty.at(idx).base;  // present: snapshotted just now, or checked since
      ch.updated = sn.uploaded;
      u.slots.push_back(ch);
    }
    for (const auto& b : built) u.pages.push_back(b.change);
    // The size covers every byte of the chunks published, which may be of writes after the
    // flush began (an upload of a later generation finished first): bytes a chunk holds are
    // the slot's base bytes (within the published size) or written ones.
    u.written_end = snap->written_end;
    const uint64_t cs = fs->chunk_size();
    for (const auto& [idx, sn] : snap->slots) {
      if (sn.uploaded.hole()) continue;  // a punched slot publishes no bytes
      u.written_end = std::max<uint64_t>(u.written_end, idx * cs + sn.uploaded.length);
    }
    u.truncated_to = snap->truncated_to;
    if (snap->carry) u.attrs = snap->carry->request;
    auto conflict = std::make_shared<LayoutConflict>();
    auto pages = std::make_shared<std::vector<BuiltPage>>(std::move(built));
    return Changing()
        .PublishLayout(ino, u, conflict)
        .then([this, ino, attempt, conflict, snap,
               pages](Result<Inode>&& r) -> kj::Promise<Status> {
          if (r.ok() && snap->carry) snap->carry->applied = *r;
          FileState* fs = Find(ino);
          if (!fs) return Status::Ok();
          if (r.ok()) {
            // The kernel's pages hold what this mount wrote; pages of chunks another mount
            // changed meanwhile are dropped by the kernel once it sees the new mtime
            // (FUSE_CAP_AUTO_INVAL_DATA, on by default).
            NotePageVersion(*r);
            fs->inode = *r;
            fs->page_bases.clear();
            for (const auto& b : *pages) {
              if (b.slots) RememberPage(b.change.updated, b.slots);
            }
            for (const auto& [idx, sn] : snap->slots) {
              auto it = fs->dirty.find(idx);
              if (it == fs->dirty.end()) continue;
              if (it->second.gen == sn.gen) {
                dirty_bytes_ -= std::min<uint64_t>(dirty_bytes_, it->second.data.size());
                fs->dirty.erase(it);
                ForgetStageable(ino, idx);
              } else {
                // Written again during the flush: what stays to publish is the writes after
                // the generation published.
                DirtySlot& ds = it->second;
                ds.base = sn.uploaded;
                ds.ranges.erase(
                    std::remove_if(ds.ranges.begin(), ds.ranges.end(),
                                   [&](const DirtySlot::Range& w) { return w.gen <= sn.gen; }),
                    ds.ranges.end());
              }
            }
            fs->truncated_to.reset();
            // The file's end as this mount's unpublished writes make it (the record has the
            // rest): an end already published must not come back if another mount truncates.
            fs->written_end = 0;
            for (const auto& [idx, ds] : fs->dirty) {
              for (const auto& w : ds.ranges) {
                if (w.zero) continue;  // zeroing never extends the file
                fs->written_end =
                    std::max<uint64_t>(fs->written_end, idx * fs->chunk_size() + w.end);
              }
            }
            if (fs->dirty.empty()) {
              fs->local_mtime_ns = 0;  // the published record's times stand (newer, or set)
              MarkQuiet(ino);
            }
            return Status::Ok();
          }
          // Each conflict means another writer's publish went through: the file makes
          // progress, so many tries are allowed, spread out by a random pause once a few
          // have failed (two writers of one busy chunk otherwise keep colliding). Out of
          // tries, fsync and close say EIO (not EAGAIN, which they never mean).
          constexpr int kTries = 200;
          if (r.status().code() != StatusCode::kConflict) return r.status();
          if (attempt > kTries) {
            return Status(StatusCode::kIoError, "the file's layout changed under " +
                                                    std::to_string(kTries) +
                                                    " publishes in a row: " + r.status().message());
          }
          // Another mount changed some of these slots: rebuild them from the current bytes
          // plus our own dirty ranges, then publish again.
          kj::Vector<kj::Promise<Status>> rebuilds;
          for (const auto& [idx, current] : conflict->current) {
            rebuilds.add(Rebase(ino, idx, current));
          }
          // Or some of these pages: build them from the current ones from now on, and rebuild
          // this mount's slots there whose published bytes changed.
          for (const auto& [k, ref] : conflict->pages) {
            fs->page_bases[k] = ref;
            rebuilds.add(RebasePage(ino, ref, std::make_shared<size_t>(0)));
          }
          kj::Promise<void> pause = kj::READY_NOW;
          if (attempt >= 3) {
            thread_local std::minstd_rand rng(std::random_device{}());
            int64_t most = std::min<int64_t>(50, int64_t{1} << std::min(attempt, 6));
            pause = c_.timer().afterDelay(std::uniform_int_distribution<int64_t>(1, most)(rng) *
                                          kj::MILLISECONDS);
          }
          return pause
              .then([rebuilds = kj::mv(rebuilds)]() mutable {
                return kj::joinPromises(rebuilds.releaseAsArray());
              })
              .then([this, ino, attempt, snap](kj::Array<Status>&& results) -> kj::Promise<Status> {
                for (auto& s : results) {
                  if (!s.ok()) return s;
                }
                return DoFlush(ino, attempt + 1, snap->carry);
              });
        });
  }

  // Rebuilds each dirty slot of page ref.index whose base is not that page's slot (as this
  // mount's own truncation leaves it) on that slot, counting them in *rebuilt.
  kj::Promise<Status> RebasePage(uint64_t ino, PageRef ref, std::shared_ptr<size_t> rebuilt) {
    FileState* fs = Find(ino);
    if (!fs) return Status::Ok();
    const uint32_t cs = static_cast<uint32_t>(fs->chunk_size());
    kj::Promise<Result<PageSlots>> load =
        ref.id.IsZero() ? kj::Promise<Result<PageSlots>>(Result<PageSlots>(PageSlots()))
                        : LoadPage(ino, cs, ref);
    return load.then([this, ino, cs, ref, rebuilt](Result<PageSlots>&& r) -> kj::Promise<Status> {
      if (!r.ok()) return r.status();
      FileState* fs = Find(ino);
      if (!fs) return Status::Ok();
      kj::Vector<kj::Promise<Status>> rebuilds;
      auto from = fs->dirty.lower_bound(ref.index * kSlotsPerPage);
      auto to = fs->dirty.lower_bound((ref.index + 1) * kSlotsPerPage);
      for (auto it = from; it != to; ++it) {
        Slot current = ClipToTruncation(
            *r ? ClippedPageSlot(**r, it->first % kSlotsPerPage, ref.live, cs) : Slot{},
            it->first * cs, fs->truncated_to);
        if (current == it->second.base) continue;
        ++*rebuilt;
        rebuilds.add(Rebase(ino, it->first, current));
      }
      return kj::joinPromises(rebuilds.releaseAsArray())
          .then([](kj::Array<Status>&& results) -> Status {
            for (auto& s : results) {
              if (!s.ok()) return s;
            }
            return Status::Ok();
          });
    });
  }

  kj::Promise<Status> Rebase(uint64_t ino, uint64_t idx, Slot current) {
    return SlotBytes(current).then([this, ino, idx, current](Result<Bytes>&& r) -> Status {
      if (!r.ok()) return r.status();
      FileState* fs = Find(ino);
      if (!fs) return Status::Ok();
      auto it = fs->dirty.find(idx);
      if (it == fs->dirty.end()) return Status::Ok();
      DirtySlot& ds = it->second;
      std::string merged = **r;
      bool zeroed = false;
      for (const auto& w : ds.ranges) {
        if (w.zero) {
          zeroed = true;
          size_t to = std::min<size_t>(w.end, merged.size());
          if (w.begin < to) std::memset(&merged[w.begin], 0, to - w.begin);
          continue;
        }
        if (merged.size() < w.end) merged.resize(w.end, '\0');
        // The buffer may end before a write's range: its bytes were zeroed since.
        size_t have =
            ds.data.size() > w.begin ? std::min<size_t>(w.end, ds.data.size()) - w.begin : 0;
        if (have > 0) std::memcpy(&merged[w.begin], ds.data.data() + w.begin, have);
        std::memset(&merged[w.begin + have], 0, w.end - w.begin - have);
      }
      // A punched slot whose current bytes are all zeroed stays a hole.
      if (zeroed && std::all_of(merged.begin(), merged.end(), [](char c) { return c == 0; })) {
        merged.clear();
      }
      dirty_bytes_ += merged.size();
      dirty_bytes_ -= std::min<uint64_t>(dirty_bytes_, ds.data.size());
      ds.data = std::move(merged);
      ds.base = current;
      ++ds.gen;
      return Status::Ok();
    });
  }

  void MaybeForget(uint64_t ino) {
    FileState* fs = Find(ino);
    if (fs && fs->open_count == 0 && fs->dirty.empty() && !fs->truncated_to && !fs->flushing &&
        !fs->unlinked_held) {
      files_.erase(ino);
      no_files_ = files_.empty();
      ForgetStageable(ino, std::nullopt);
      Unquiet(ino);  // bounds quiet_ by the open files; no flush comes after the last release
    }
  }

  // ---- reads -----------------------------------------------------------------------------

  // The bytes of a read: its own buffer, or (the common case: a read within one published
  // chunk) a range of the cached chunk itself, replied without a copy.
  struct ReadBytes {
    std::string owned;
    Bytes chunk;
    size_t offset = 0, length = 0;
    const char* data() const { return chunk ? chunk->data() + offset : owned.data(); }
    size_t size() const { return chunk ? length : owned.size(); }
  };

  kj::Promise<Result<ReadBytes>> Read(uint64_t ino, uint64_t off, size_t size) {
    FileState* fs = Find(ino);
    if (!fs) return Result<ReadBytes>(Status(StatusCode::kNotFound, "file not open"));
    uint64_t fsize = fs->Size();
    if (off >= fsize) return Result<ReadBytes>(ReadBytes{});
    size = static_cast<size_t>(std::min<uint64_t>(size, fsize - off));
    if (size == 0) return Result<ReadBytes>(ReadBytes{});
    const uint64_t cs = fs->chunk_size();
    if (!PagesLoaded(fs->inode, off / cs, (off + size - 1) / cs)) {
      return LoadPages(fs->inode, off / cs, (off + size - 1) / cs)
          .then([this, ino, off, size](Status s) -> kj::Promise<Result<ReadBytes>> {
            if (!s.ok()) return Result<ReadBytes>(s);
            return Read(ino, off, size);
          });
    }
    bool sequential = off == fs->last_read_end;
    fs->last_read_end = off + size;
    if (off / cs == (off + size - 1) / cs && !fs->dirty.count(off / cs)) {
      uint64_t idx = off / cs;
      Slot s = KnownSlot(fs->inode, idx).value_or(Slot{});
      size_t in_slot = static_cast<size_t>(off % cs);
      if (!s.hole() && in_slot + size <= s.length) {
        if (sequential) Prefetch(*fs, (off + size) / cs, 4);
        return SlotBytes(s).then([in_slot, size](Result<Bytes>&& r) -> Result<ReadBytes> {
          if (!r.ok()) return r.status();
          ReadBytes b;
          b.chunk = std::move(r).value();
          b.offset = in_slot;
          b.length = size;  // SlotBytes returns exactly the slot's length, which covers it
          return b;
        });
      }
    }
    auto out = std::make_shared<std::string>(size, '\0');
    kj::Vector<kj::Promise<Status>> parts;
    for (uint64_t pos = off; pos < off + size;) {
      uint64_t idx = pos / cs;
      uint64_t in_slot = pos % cs;
      size_t n = static_cast<size_t>(std::min<uint64_t>(off + size - pos, cs - in_slot));
      size_t dst = static_cast<size_t>(pos - off);
      auto d = fs->dirty.find(idx);
      if (d != fs->dirty.end()) {
        const std::string& data = d->second.data;
        if (in_slot < data.size()) {
          std::memcpy(&(*out)[dst], data.data() + in_slot,
                      std::min<size_t>(n, data.size() - in_slot));
        }
      } else {
        Slot s = KnownSlot(fs->inode, idx).value_or(Slot{});
        if (!s.hole() && in_slot < s.length) {
          parts.add(SlotBytes(s).then([out, dst, in_slot, n](Result<Bytes>&& r) -> Status {
            if (!r.ok()) return r.status();
            const std::string& data = **r;
            if (in_slot < data.size()) {
              std::memcpy(&(*out)[dst], data.data() + in_slot,
                          std::min<size_t>(n, data.size() - in_slot));
            }
            return Status::Ok();
          }));
        }
      }
      pos += n;
    }
    if (sequential) Prefetch(*fs, (off + size) / cs, 4);
    return kj::joinPromises(parts.releaseAsArray())
        .then([out](kj::Array<Status>&& results) -> Result<ReadBytes> {
          for (auto& s : results) {
            if (!s.ok()) return s;
          }
          ReadBytes b;
          b.owned = std::move(*out);
          return b;
        });
  }

  void Prefetch(FileState& fs, uint64_t from, int count) {
    const uint64_t cs = fs.chunk_size();
    for (uint64_t idx = from; idx < from + count && idx * cs < fs.inode.size; ++idx) {
      std::optional<Slot> s = KnownSlot(fs.inode, idx);
      if (!s) {  // the next layout page: fetch it too, so the read that needs it does not wait
        Add(LoadPages(fs.inode, idx, idx).then([](Status) {}));
        continue;
      }
      if (s->hole() || cache_.count(s->id) || inflight_.count(s->id)) continue;
      Add(GetChunk(s->id).then([](Result<Bytes>&&) {}));
    }
  }

  // What a lookup, listing or readdirplus last showed of a regular file that is one chunk of at
  // most kPrefetchAtOpenMax bytes (for PrefetchAtOpen). Larger files are not prefetched: an open
  // of one need not read its start at all (tail of a log, an fstat, a lock).
  void NoteFirstChunk(const Inode& in) {
    if (in.type != FileType::kRegular || in.slots.size() != 1 || in.slots[0].hole() ||
        !in.pages.empty()) {
      return;
    }
    if (in.slots[0].length > kPrefetchAtOpenMax) return;
    if (first_chunks_.size() >= kFirstChunksMax) first_chunks_.clear();  // a lost hint costs a wait
    first_chunks_[in.ino] = in.slots[0].id;
  }

  // An open for reading of a one-chunk file this mount holds nothing of (no file state, no chunk,
  // and no page cache of it that the kernel may keep: it never opened the file, or forgot it)
  // starts fetching the file's chunk as the lookup that found it saw it, beside the open's own read
  // of the inode instead of after it: a cold read of a small file is then one round trip plus the
  // chunk fetch, not the two in sequence. Chunks are named by their hash, so a fetch by a stale
  // layout costs only its traffic (and a place in the cache); reads still go by the layout the
  // open reads (close-to-open).
  void PrefetchAtOpen(uint64_t ino, int flags) {
    auto it = first_chunks_.find(ino);
    if (it == first_chunks_.end()) return;
    ChunkId id = it->second;
    first_chunks_.erase(it);
    // (O_TRUNC never arrives here: atomic O_TRUNC is off, the kernel truncates by a setattr.)
    if ((flags & O_ACCMODE) == O_WRONLY || (flags & O_APPEND) || Find(ino) ||
        page_version_.count(ino) || cache_.count(id) || inflight_.count(id)) {
      return;
    }
    auto fetch = GetChunk(id);  // neither cached nor in flight (above): this begins the fetch
    if (auto fl = inflight_.find(id); fl != inflight_.end()) fl->second.open_prefetch = true;
    Add(fetch.then([](Result<Bytes>&&) {}));
  }

  // ---- handlers (loop thread) ------------------------------------------------------------

  kj::Promise<void> Open(fuse_req_t req, uint64_t ino, fuse_file_info fi) {
    PrefetchAtOpen(ino, fi.flags);
    return ns().GetAttr(ino).then([this, req, ino, fi](Result<Inode>&& r) mutable {
      // A name the kernel still caches may point at an inode another mount has unlinked (or
      // that is gone): ESTALE makes the kernel look the name up again and retry the open.
      if (!r.ok()) {
        int e = ErrnoOf(r.status());
        return fuse_reply_err(req, e == ENOENT ? ESTALE : e), void();
      }
      if (r->is_dir()) return fuse_reply_err(req, EISDIR), void();
      FileState* held = Find(ino);
      bool ours = held && (held->open_count > 0 || held->unlinked_held);
      if ((r->nlink == 0 || r->state != InodeState::kLive) && !ours) {
        return fuse_reply_err(req, ESTALE), void();
      }
      FileState& fs = State(*r);
      bool unchanged = KernelCacheCurrent(*r);
      if (fs.dirty.empty() && !fs.truncated_to) {
        fs.inode = *r;
        fs.read_at = std::chrono::steady_clock::now();
        fs.read_generation = change_generation_;
      }
      RememberXattrs(*r);  // the xattrs read at open (close-to-open)
      fs.open_count++;
      uint64_t fh = NewFh(fi.flags);
      handles_[fh] = Handle{ino, fi.flags};
      fi.fh = fh;
      fi.keep_cache = unchanged ? 1 : 0;
      MarkQuiet(ino);
      if (fuse_reply_open(req, &fi) != 0) {
        handles_.erase(fh);
        fs.open_count--;
      }
    });
  }

  // A GETATTR of a file this mount opened less than attr_timeout ago, with no change made by
  // this mount since, is answered from the inode the open read (close-to-open): when the open
  // found the file changed, KernelCacheCurrent invalidates the kernel's attributes, and the
  // kernel asks for them again before the first read, which would otherwise read the inode a
  // second time per open. Staler than that read by at most attr_timeout, as the kernel's own
  // attribute cache is.
  //
  // Likewise a GETATTR of a directory this mount itself changed (a create or unlink in it)
  // less than attr_timeout ago, with no newer version of it seen since: the kernel drops a
  // parent's attributes after each such change and asks for them at the next path walk (its
  // permission check), which read the directory's inode once per create, unlink or small
  // file. Answered from the value the mount's own change left (Namespace::RecentOwnDirectory).
  // Both are replied with the rest of attr_timeout, so the kernel's cache of them ends when it
  // would have ended had the kernel kept the value itself.
  kj::Promise<void> GetAttr(fuse_req_t req, uint64_t ino) {
    const auto timeout = std::chrono::duration<double>(o_.attr_timeout);
    if (FileState* fs = Find(ino)) {
      auto age = std::chrono::steady_clock::now() - fs->read_at;
      if (fs->open_count > 0 && fs->read_generation == change_generation_ && age < timeout) {
        ReplyAttr(req, fs->inode, std::chrono::duration<double>(timeout - age).count());
        return kj::READY_NOW;
      }
    }
    if (o_.attr_timeout > 0) {
      kj::Duration age = 0 * kj::NANOSECONDS;
      auto own = ns().RecentOwnDirectory(
          ino, static_cast<int64_t>(o_.attr_timeout * 1e9) * kj::NANOSECONDS, &age);
      if (own) {
        ReplyAttr(req, *own, o_.attr_timeout - static_cast<double>(age / kj::NANOSECONDS) / 1e9);
        return kj::READY_NOW;
      }
    }
    return ns().GetAttr(ino).then([this, req](Result<Inode>&& r) { ReplyAttr(req, r); });
  }

  kj::Promise<void> Release(fuse_req_t req, uint64_t fh) {
    auto it = handles_.find(fh);
    if (it == handles_.end()) return fuse_reply_err(req, 0), kj::READY_NOW;
    uint64_t ino = it->second.ino;
    handles_.erase(it);
    FileState* fs = Find(ino);
    if (!fs) return fuse_reply_err(req, 0), kj::READY_NOW;
    fs->open_count--;
    return Flush(ino).then([this, req, ino](Status s) -> kj::Promise<void> {
      FileState* fs = Find(ino);
      if (!s.ok() && fs && fs->open_count == 0 && !fs->flushing && fs->publish_failed) {
        DropUnpublished(*fs, s);
      }
      kj::Promise<void> lease = kj::READY_NOW;
      if (fs && fs->open_count == 0 && fs->unlinked_held) {
        fs->unlinked_held = false;
        lease = Changing().ReleaseLease(ino, lease_holder_).then([](Status) {});
      }
      // No lock outlives this mount's last descriptor of the file: whatever is left (an OFD
      // lock, whose owner no FLUSH or RELEASE names) goes with it.
      if ((!fs || fs->open_count == 0) && HoldsLocks(ino)) {
        deferred_releases_.erase(
            std::remove_if(deferred_releases_.begin(), deferred_releases_.end(),
                           [ino](const auto& d) { return d.first == ino; }),
            deferred_releases_.end());
        lease = lease.then([this, ino]() { return ReleaseOwnerLocks(ino, std::nullopt); });
      }
      return lease.then([this, req, ino, s]() {
        MaybeForget(ino);
        fuse_reply_err(req, s.ok() ? 0 : ErrnoOf(s));
      });
    });
  }

  struct Listing;  // below, with the rest of the lookup read-ahead state

  std::chrono::steady_clock::duration EntryTimeout() const {
    return std::chrono::microseconds(static_cast<int64_t>(o_.entry_timeout * 1e6));
  }

  kj::Promise<void> Lookup(fuse_req_t req, uint64_t parent, std::string name) {
    if (o_.entry_timeout > 0) {
      auto now = std::chrono::steady_clock::now();
      auto it = listings_.find(parent);
      if (it != listings_.end()) {
        if (now - it->second.started < EntryTimeout()) {
          auto hit = it->second.names.find(name);
          if (hit != it->second.names.end()) {
            ReplyEntry(req, hit->second, parent, name);
            return kj::READY_NOW;
          }
        } else {
          std::lock_guard<std::mutex> lock(listing_mu_);
          listings_.erase(it);
        }
      }
      if (listings_.find(parent) == listings_.end() && loading_.count(parent) == 0) {
        if (lookup_runs_.size() > 4096) lookup_runs_.clear();
        LookupRun& run = lookup_runs_[parent];
        // A run counts only while this mount changes nothing (unlinking a directory's files
        // looks each one up first; a listing would be dropped at the next unlink).
        if (run.count == 0 || now - run.first > EntryTimeout() ||
            run.generation != change_generation_) {
          run.first = now;
          run.count = 0;
          run.generation = change_generation_;
        }
        if (++run.count >= kLookupRun) {
          lookup_runs_.erase(parent);
          loading_.insert(parent);
          auto listing = std::make_shared<Listing>();
          listing->started = now;
          Add(ListForLookups(parent, 0, change_generation_, listing));
        }
      }
    }
    return ns()
        .Lookup(parent, name, /*parent_is_dir=*/true)
        .then([this, req, parent, name](Result<Inode>&& r) {
          if (r.ok()) {
            NoteFirstChunk(*r);
            SawName(parent, name);
          } else if (r.status().code() == StatusCode::kNotFound) {
            NoteMiss(parent);
          }
          ReplyEntry(req, r, parent, name);
        });
  }

  // One page of a lookup read-ahead listing (see Listing), then the next; a complete listing
  // is published to listings_.
  kj::Promise<void> ListForLookups(uint64_t dir, uint64_t offset, uint64_t generation,
                                   std::shared_ptr<Listing> building) {
    return ns()
        .ReadDir(dir, offset, 1024)
        .then([this, dir, generation, building](Result<DirListing>&& l) -> kj::Promise<void> {
          if (!l.ok() || generation != change_generation_) {
            if (generation == change_generation_) loading_.erase(dir);
            return kj::READY_NOW;
          }
          auto listing = std::make_shared<DirListing>(std::move(l).value());
          SawListing(dir, *listing);
          std::vector<uint64_t> inos;
          for (const auto& e : listing->entries) inos.push_back(e.ino);
          kj::Promise<std::vector<Result<Inode>>> attrs =
              inos.empty() ? kj::Promise<std::vector<Result<Inode>>>(std::vector<Result<Inode>>())
                           : ns().GetAttrMany(std::move(inos));
          return attrs.then([this, dir, generation, listing,
                             building](std::vector<Result<Inode>>&& inodes) -> kj::Promise<void> {
            if (generation != change_generation_) return kj::READY_NOW;
            for (size_t i = 0; i < inodes.size(); ++i) {
              if (!inodes[i].ok()) continue;  // vanished meanwhile: the normal path answers
              Inode in = std::move(inodes[i]).value();
              in.parents.clear();  // not needed to answer a lookup
              in.applied.clear();
              NoteFirstChunk(in);
              building->bytes += ListingBytes(listing->entries[i].name, in);
              building->names.emplace(listing->entries[i].name, std::move(in));
            }
            if (listing->end || listing->entries.empty()) {
              loading_.erase(dir);
              std::lock_guard<std::mutex> lock(listing_mu_);
              size_t total = building->bytes;
              for (const auto& [d, l] : listings_) total += l.bytes;
              if (listings_.size() >= 64 || total > kListingsMaxBytes) listings_.clear();
              listings_[dir] = std::move(*building);
              return kj::READY_NOW;
            }
            if (building->names.size() >= kListingMax || building->bytes > kListingsMaxBytes) {
              loading_.erase(dir);  // too large to list for lookups
              return kj::READY_NOW;
            }
            return ListForLookups(dir, listing->entries.back().offset, generation, building);
          });
        });
  }

  kj::Promise<void> Unlink(fuse_req_t req, uint64_t parent, std::string name) {
    Changing();
    // Whether the file is open here matters only if some file is: otherwise no lookup first.
    if (!AnyOpen()) {
      return ns().Unlink(parent, name).then([this, req](Status s) { ReplyStatus(req, s); });
    }
    return ns()
        .Lookup(parent, name)
        .then([this, req, parent, name](Result<Inode>&& r) -> kj::Promise<void> {
          if (!r.ok()) return fuse_reply_err(req, ErrnoOf(r.status())), kj::READY_NOW;
          if (r->is_dir()) return fuse_reply_err(req, EISDIR), kj::READY_NOW;
          uint64_t ino = r->ino;
          FileState* fs = Find(ino);
          bool held = fs && fs->open_count > 0 && r->nlink <= 1;
          return ns()
              .Unlink(parent, name, held, lease_holder_)
              .then([this, req, ino, held](Status s) {
                if (s.ok() && held) HoldUnlinked({ino});
                ReplyStatus(req, s);
              });
        });
  }

  // For a change that may drop the last link of a file open here (a rename over it): says
  // which files are open; nullptr when none is.
  bool AnyOpen() const {
    for (const auto& [ino, fs] : files_) {
      if (fs->open_count > 0) return true;
    }
    return false;
  }
  std::shared_ptr<Namespace::OpenFiles> OpenHere() {
    if (!AnyOpen()) return nullptr;
    auto open_here = std::make_shared<Namespace::OpenFiles>();
    open_here->is_open = [this](uint64_t ino) {
      FileState* fs = Find(ino);
      return fs && fs->open_count > 0;
    };
    open_here->lease_holder = lease_holder_;
    return open_here;
  }
  // Files left unlinked-open under this mount's lease: renewed while open, released at the
  // last close.
  void HoldUnlinked(const std::vector<uint64_t>& inos) {
    for (uint64_t ino : inos) {
      FileState* f = Find(ino);
      if (f && f->open_count > 0) {
        f->unlinked_held = true;
        EnsureLeaseLoop();
      } else {
        // Closed while the change ran: nothing holds it any more.
        Add(ns().ReleaseLease(ino, lease_holder_).then([](Status) {}));
      }
    }
  }

  void EnsureLeaseLoop() {
    if (lease_loop_running_) return;
    lease_loop_running_ = true;
    Add(LeaseLoop());
  }

  kj::Promise<void> LeaseLoop() {
    kj::Duration every = (ns().options().lease_ns / 3) * kj::NANOSECONDS;
    return c_.timer().afterDelay(every).then([this]() -> kj::Promise<void> {
      kj::Vector<kj::Promise<void>> renewals;
      for (auto& [ino, fs] : files_) {
        if (fs->unlinked_held)
          renewals.add(ns().RenewLease(ino, lease_holder_).then([](Status) {}));
      }
      bool any = !renewals.empty();
      return kj::joinPromises(renewals.releaseAsArray()).then([this, any]() -> kj::Promise<void> {
        if (!any) {
          lease_loop_running_ = false;
          return kj::READY_NOW;
        }
        return LeaseLoop();
      });
    });
  }

  // ---- file locks (README, "File locks") ------------------------------------------------
  //
  // fcntl and flock locks live in the cluster (Namespace::SetLock), under this mount's lease,
  // which LockLoop renews. Like NFS, a lock also orders the data: an unlock (and the close that
  // drops a POSIX lock) publishes what this mount wrote to the file first, and a lock taken
  // rereads the file's inode and drops the kernel's cached pages if another mount changed it.
  //
  // This mount's lock changes of one file run one at a time (LockChange), so `locked_inos_`
  // follows them in the order they were chosen.

  bool HoldsLocks(uint64_t ino) {
    std::lock_guard<std::mutex> lock(locks_mu_);
    return locked_inos_.count(ino) > 0;
  }
  void NoteLocks(uint64_t ino, bool holds) {
    {
      std::lock_guard<std::mutex> lock(locks_mu_);
      if (holds) {
        locked_inos_.insert(ino);
      } else {
        locked_inos_.erase(ino);
      }
    }
    if (holds && !lock_loop_running_) {
      lock_loop_running_ = true;
      Add(LockLoop());
    }
  }
  std::vector<uint64_t> LockedInos() {
    std::lock_guard<std::mutex> lock(locks_mu_);
    return std::vector<uint64_t>(locked_inos_.begin(), locked_inos_.end());
  }

  // Runs `call` (a change of the file's lock table that answers whether this mount still holds
  // locks there) after this mount's earlier lock changes of the file, and notes its answer.
  kj::Promise<Result<bool>> LockChange(uint64_t ino,
                                       std::function<kj::Promise<Result<bool>>()> call) {
    kj::Promise<void> prev = kj::READY_NOW;
    auto it = lock_tails_.find(ino);
    if (it != lock_tails_.end()) {
      prev = it->second.done.addBranch().catch_([](kj::Exception&&) {});
      lock_tails_.erase(it);
    }
    uint64_t seq = ++lock_seq_;
    auto paf = kj::newPromiseAndFulfiller<void>();
    lock_tails_.emplace(ino, LockTail{seq, paf.promise.fork()});
    return prev.then([call = std::move(call)]() { return call(); })
        .then([this, ino, seq, f = kj::mv(paf.fulfiller)](Result<bool>&& r) mutable {
          if (r.ok()) NoteLocks(ino, *r);
          f->fulfill();
          auto t = lock_tails_.find(ino);
          if (t != lock_tails_.end() && t->second.seq == seq) lock_tails_.erase(t);
          return kj::mv(r);
        });
  }

  LockRequest MakeLockRequest(uint64_t owner, LockKind kind, LockType type, uint64_t start,
                              uint64_t end, uint32_t pid) const {
    LockRequest r;
    r.holder = lease_holder_;
    r.owner = owner;
    r.pid = pid;
    r.kind = kind;
    r.type = type;
    r.start = start;
    r.end = end;
    return r;
  }

  kj::Promise<void> GetLk(fuse_req_t req, uint64_t ino, LockRequest r) {
    return ns().GetLock(ino, r).then([this, req](Result<std::optional<FileLock>>&& c) {
      if (!c.ok()) return fuse_reply_err(req, ErrnoOf(c.status())), void();
      struct flock out;
      std::memset(&out, 0, sizeof(out));
      out.l_whence = SEEK_SET;
      out.l_type = F_UNLCK;
      if (*c) {
        const FileLock& l = **c;
        out.l_type = l.type == LockType::kWrite ? F_WRLCK : F_RDLCK;
        out.l_start = static_cast<off_t>(l.start);
        out.l_len = l.end == UINT64_MAX ? 0 : static_cast<off_t>(l.end - l.start + 1);
        // A process id means something only to the mount whose kernel gave it.
        out.l_pid = l.holder == lease_holder_ ? static_cast<pid_t>(l.pid) : 0;
      }
      fuse_reply_lock(req, &out);
    });
  }

  // F_SETLK / F_SETLKW and flock: `sleep` retries a lock another owner holds, backing off up
  // to 250 ms, until it is granted or the caller is interrupted (EINTR).
  kj::Promise<void> SetLk(fuse_req_t req, uint64_t ino, LockRequest r, bool sleep) {
    if (r.type == LockType::kUnlock) {
      return Flush(ino).then([this, req, ino, r](Status flushed) -> kj::Promise<void> {
        if (!flushed.ok()) {
          // The lock stays while what was written under it cannot be published: gone, it
          // would let another holder write the same bytes, which these, published later (at
          // an unlock or close that succeeds), would undo. The caller hears why.
          ReplyStatus(req, flushed);
          return kj::READY_NOW;
        }
        return LockChange(ino, [this, ino, r]() { return ns().SetLock(ino, r); })
            .then([this, req](Result<bool>&& res) {
              ReplyStatus(req, res.ok() ? Status::Ok() : res.status());
            });
      });
    }
    return TryLock(req, ino, r, sleep, 0);
  }

  // Releases the owner's earlier locks of the file, then takes `r` (a release that fails is
  // retried later, and the lock fails with why).
  kj::Promise<Result<bool>> ReleaseThenLock(uint64_t ino, LockRequest r, LockOwnerRef who) {
    return ns()
        .ReleaseLocks(ino, lease_holder_, who)
        .then([this, ino, r, who](Result<bool>&& released) -> kj::Promise<Result<bool>> {
          if (!released.ok()) {
            unreleased_.push_back({ino, who});
            return Result<bool>(released.status());
          }
          return ns().SetLock(ino, r);
        });
  }

  kj::Promise<void> TryLock(fuse_req_t req, uint64_t ino, LockRequest r, bool sleep, int attempt) {
    LockOwnerRef who{r.owner, r.kind};
    auto call = [this, ino, r, who]() -> kj::Promise<Result<bool>> {
      // A release of this owner's earlier locks that failed goes first: retried after this
      // lock, it would remove it. So does one a close deferred until the file's writes are
      // published: they are published first (or this lock fails with why).
      if (Deferred(ino, who)) {
        return Flush(ino).then([this, ino, r, who](Status s) -> kj::Promise<Result<bool>> {
          if (!s.ok()) return Result<bool>(s);
          Undefer(ino, who);
          return ReleaseThenLock(ino, r, who);
        });
      }
      auto pending = std::find(unreleased_.begin(), unreleased_.end(), std::make_pair(ino, who));
      if (pending == unreleased_.end()) return ns().SetLock(ino, r);
      unreleased_.erase(pending);
      return ReleaseThenLock(ino, r, who);
    };
    return LockChange(ino, call).then([=](Result<bool>&& res) -> kj::Promise<void> {
      if (res.ok()) return RevalidateLocked(ino).then([req]() { fuse_reply_err(req, 0); });
      if (res.status().code() != StatusCode::kWouldBlock || !sleep) {
        return fuse_reply_err(req, ErrnoOf(res.status())), kj::READY_NOW;
      }
      if (fuse_req_interrupted(req)) return fuse_reply_err(req, EINTR), kj::READY_NOW;
      int64_t ms = std::min<int64_t>(250, int64_t{5} << std::min(attempt, 6));
      return c_.timer().afterDelay(ms * kj::MILLISECONDS).then([=]() {
        return TryLock(req, ino, r, sleep, attempt + 1);
      });
    });
  }

  // After a lock is granted: what other mounts published before it becomes what this mount
  // reads (its own unpublished writes are published first, so they are not lost).
  kj::Promise<void> RevalidateLocked(uint64_t ino) {
    // Names first, whatever the reads below find: a miss after the lock asks the cluster.
    ForgetNames();
    FileState* fs = Find(ino);
    kj::Promise<Status> flushed =
        fs && !fs->dirty.empty() ? Flush(ino) : kj::Promise<Status>(Status::Ok());
    return flushed.then([this, ino](Status) { return ns().GetAttr(ino); })
        .then([this, ino](Result<Inode>&& r) -> kj::Promise<void> {
          if (!r.ok()) return kj::READY_NOW;
          FileState* fs = Find(ino);
          if (fs && fs->dirty.empty() && !fs->truncated_to) {
            fs->inode = *r;
            fs->read_at = std::chrono::steady_clock::now();
            fs->read_generation = change_generation_;
          }
          bool current = SamePageVersion(*r);
          NotePageVersion(*r);
          // Names too: this mount's lookup read-ahead listings go (those being built as well),
          // and the kernel's entries of the file's directories are dropped below.
          Changing();
          std::vector<std::pair<uint64_t, std::string>> names;
          for (const auto& p : r->parents) {
            for (auto& n : KernelNames(p.parent)) names.emplace_back(p.parent, std::move(n));
          }
          if (current && names.empty()) return kj::READY_NOW;
          return InvalidateKernel(ino, !current, std::move(names));
        });
  }

  // Drops the kernel's cached pages and attributes of `ino` (if `pages`) and its entries
  // `names`, from a thread of its own: dropping pages or names may wait for a read or lookup
  // this loop answers. Shutdown waits for it (WaitForInvalidations) before the session goes.
  kj::Promise<void> InvalidateKernel(uint64_t ino, bool pages,
                                     std::vector<std::pair<uint64_t, std::string>> names) {
    if (!se()) return kj::READY_NOW;
    auto paf = kj::newPromiseAndCrossThreadFulfiller<void>();
    auto f =
        std::make_shared<kj::Own<kj::CrossThreadPromiseFulfiller<void>>>(kj::mv(paf.fulfiller));
    {
      std::lock_guard<std::mutex> lock(invalidating_mu_);
      ++invalidating_;
    }
    std::thread([this, se = se(), ino, pages, names = std::move(names), f]() {
      if (pages) fuse_lowlevel_notify_inval_inode(se, ino, 0, 0);
      for (const auto& [parent, name] : names) {
        fuse_lowlevel_notify_inval_entry(se, parent, name.data(), name.size());
      }
      (*f)->fulfill();
      std::lock_guard<std::mutex> lock(invalidating_mu_);
      --invalidating_;
      invalidating_cv_.notify_all();
    }).detach();
    return kj::mv(paf.promise);
  }

  // The last close of a file whose writes could not be published (a full disk, no quorum):
  // the close reported the error, and no descriptor is left to retry with, so the writes go,
  // as a local file system's do after a failed writeback, and this mount shows the file as the
  // cluster has it again. Kept, they would sit in memory counted against max_dirty (every
  // later write then flushing at once), show this mount a file no other mount sees, and be
  // published at unmount over whatever others wrote since, after the writer was told they
  // failed.
  void DropUnpublished(FileState& fs, const Status& why) {
    fs.publish_failed = false;
    if (fs.dirty.empty() && !fs.truncated_to) return;
    uint64_t bytes = 0;
    for (const auto& [idx, ds] : fs.dirty) bytes += ds.data.size();
    dirty_bytes_ -= std::min(dirty_bytes_, bytes);
    fs.dirty.clear();
    fs.written_end = 0;
    fs.truncated_to.reset();
    fs.local_mtime_ns = 0;
    fs.page_bases.clear();
    ForgetStageable(fs.ino, std::nullopt);
    std::fprintf(stderr,
                 "quorumfs-mount: inode %llu: dropped %llu bytes written before its last close, "
                 "which could not be published: %s\n",
                 static_cast<unsigned long long>(fs.ino), static_cast<unsigned long long>(bytes),
                 why.ToString().c_str());
    Add(InvalidateKernel(fs.ino, true, {}));
  }

  // Any thread but the loop's: waits (at most `seconds`) for cache invalidations in flight.
  void WaitForInvalidations(double seconds) {
    std::unique_lock<std::mutex> lock(invalidating_mu_);
    invalidating_cv_.wait_for(lock, std::chrono::duration<double>(seconds),
                              [this] { return invalidating_ == 0; });
  }

  // Removes this mount's locks of one owner on a file (close: its POSIX locks; the last close
  // of an open file description: its flock), or all of them (`who` empty: the mount's last
  // descriptor of the file closed, which also ends OFD locks). A removal that fails is retried
  // by LockLoop.
  kj::Promise<void> ReleaseOwnerLocks(uint64_t ino, std::optional<LockOwnerRef> who) {
    return LockChange(ino,
                      [this, ino, who]() { return ns().ReleaseLocks(ino, lease_holder_, who); })
        .then([this, ino, who](Result<bool>&& r) {
          if (r.ok()) return;
          std::fprintf(stderr, "quorumfs-mount: releasing a lock on inode %llu: %s (retried)\n",
                       static_cast<unsigned long long>(ino), r.status().ToString().c_str());
          if (who)
            unreleased_.push_back({ino, *who});
          else
            unreleased_all_.insert(ino);
        });
  }

  // A close's release of one owner's locks (its POSIX locks at close, a flock at the last close
  // of its open file description), after what this mount wrote to the file is published. If
  // that cannot be published the locks stay (the close reports why) until it is: the lock
  // loop tries again, the owner's next lock of the file goes through it first, and the
  // mount's last descriptor of the file drops the writes and every lock. Released at once,
  // they would let another mount lock and write, and these writes, published later by one of
  // this mount's other descriptors, would undo that.
  kj::Promise<Status> ReleaseAfterPublish(uint64_t ino, LockOwnerRef who) {
    return Flush(ino).then([this, ino, who](Status s) -> kj::Promise<Status> {
      FileState* fs = Find(ino);
      if (!s.ok() && fs && fs->open_count > 0) {
        if (!Deferred(ino, who)) deferred_releases_.push_back({ino, who});
        return s;
      }
      Undefer(ino, who);
      return ReleaseOwnerLocks(ino, who).then([s]() { return s; });
    });
  }
  bool Deferred(uint64_t ino, LockOwnerRef who) const {
    return std::find(deferred_releases_.begin(), deferred_releases_.end(),
                     std::make_pair(ino, who)) != deferred_releases_.end();
  }
  void Undefer(uint64_t ino, LockOwnerRef who) {
    deferred_releases_.erase(
        std::remove(deferred_releases_.begin(), deferred_releases_.end(), std::make_pair(ino, who)),
        deferred_releases_.end());
  }
  // The lock loop's try of a deferred release: once the file's writes are published, the
  // release, checked and made inside the file's lock changes, so that it never releases a lock
  // the owner took meanwhile (TryLock makes the deferred release itself, first).
  kj::Promise<void> RetryDeferredRelease(uint64_t ino, LockOwnerRef who) {
    return Flush(ino).then([this, ino, who](Status s) -> kj::Promise<void> {
      if (!s.ok()) return kj::READY_NOW;  // stays deferred
      return LockChange(ino,
                        [this, ino, who]() -> kj::Promise<Result<bool>> {
                          if (!Deferred(ino, who)) return Result<bool>(false);
                          Undefer(ino, who);
                          return ns().ReleaseLocks(ino, lease_holder_, who);
                        })
          .then([this, ino, who](Result<bool>&& r) {
            if (!r.ok()) unreleased_.push_back({ino, who});
          });
    });
  }

  // Every lock_lease/3, whatever the last round still waits for: retries failed releases and
  // renews this mount's locks, each file on its own (a file whose change is still in flight
  // is skipped), so one file without a quorum does not hold up the others' renewals. A file
  // whose locks all lapsed (taken over while this mount could not renew) is forgotten.
  kj::Promise<void> LockLoop() {
    kj::Duration every = (ns().options().lock_lease_ns / 3) * kj::NANOSECONDS;
    return c_.timer().afterDelay(every).then([this]() -> kj::Promise<void> {
      auto retry = std::move(unreleased_);
      unreleased_.clear();
      for (const auto& [ino, who] : retry) Add(ReleaseOwnerLocks(ino, who));
      auto retry_all = std::move(unreleased_all_);
      unreleased_all_.clear();
      for (uint64_t ino : retry_all) Add(ReleaseOwnerLocks(ino, std::nullopt));
      auto deferred = deferred_releases_;
      for (const auto& [ino, who] : deferred) Add(RetryDeferredRelease(ino, who));
      for (uint64_t ino : LockedInos()) {
        if (lock_tails_.count(ino)) continue;  // a change in flight
        Add(LockChange(ino, [this, ino]() {
              return ns().RenewLocks(ino, lease_holder_);
            }).then([](Result<bool>&&) {}));
      }
      if (LockedInos().empty() && unreleased_.empty() && unreleased_all_.empty() && retry.empty() &&
          retry_all.empty() && deferred.empty() && deferred_releases_.empty()) {
        lock_loop_running_ = false;
        return kj::READY_NOW;
      }
      return LockLoop();
    });
  }

  // Unmount: every lock this mount holds goes now rather than when its lease lapses.
  void ReleaseAllLocks(std::function<void()> done) {
    kj::Vector<kj::Promise<void>> all;
    for (uint64_t ino : LockedInos()) all.add(ReleaseOwnerLocks(ino, std::nullopt));
    Add(kj::joinPromises(all.releaseAsArray()).then([done]() { done(); }));
  }

  // An open file's state after this mount's own setattr, unless it has writes of its own still
  // to publish (they carry the state on).
  void NoteSetAttr(uint64_t ino, const Inode& changed) {
    FileState* fs = Find(ino);
    if (!fs || !fs->dirty.empty()) return;
    fs->inode = changed;
    fs->written_end = 0;
    fs->local_mtime_ns = 0;
  }

  kj::Promise<void> SetAttr(fuse_req_t req, uint64_t ino, struct stat attr, int to_set) {
    SetAttrRequest r;
    if (to_set & FUSE_SET_ATTR_MODE) r.mode = attr.st_mode & 07777;
    if (to_set & FUSE_SET_ATTR_UID) r.uid = attr.st_uid;
    if (to_set & FUSE_SET_ATTR_GID) r.gid = attr.st_gid;
    if (to_set & FUSE_SET_ATTR_SIZE) r.size = static_cast<uint64_t>(attr.st_size);
    if (to_set & FUSE_SET_ATTR_ATIME_NOW) {
      r.atime_ns = SetAttrRequest::kNow;
    } else if (to_set & FUSE_SET_ATTR_ATIME) {
      r.atime_ns = attr.st_atim.tv_sec * 1000000000LL + attr.st_atim.tv_nsec;
    }
    if (to_set & FUSE_SET_ATTR_MTIME_NOW) {
      r.mtime_ns = SetAttrRequest::kNow;
    } else if (to_set & FUSE_SET_ATTR_MTIME) {
      r.mtime_ns = attr.st_mtim.tv_sec * 1000000000LL + attr.st_mtim.tv_nsec;
    }
    // A size change publishes this mount's pending writes first, so the truncation applies to
    // the file as this mount wrote it; so does setting the times (cp -p, tar: write, then
    // futimens, then close), or the later publish would stamp the write time over them. The
    // times (and whatever else this setattr sets) then go in the publish's own record change,
    // one sync round instead of two; with nothing to publish, they are a change of their own.
    bool explicit_times = (r.mtime_ns && *r.mtime_ns != SetAttrRequest::kNow) ||
                          (r.atime_ns && *r.atime_ns != SetAttrRequest::kNow);
    std::shared_ptr<AttrCarry> carry;
    if (explicit_times && !r.size) {
      carry = std::make_shared<AttrCarry>();
      carry->request = r;
    }
    kj::Promise<Status> before =
        r.size || explicit_times ? Flush(ino, carry) : kj::Promise<Status>(Status::Ok());
    return before.then([this, req, ino, r, carry](Status s) -> kj::Promise<void> {
      if (!s.ok()) return fuse_reply_err(req, ErrnoOf(s)), kj::READY_NOW;
      if (carry && carry->applied) {  // the publish noted it as the file's state
        ReplyAttr(req, Result<Inode>(*carry->applied));
        return kj::READY_NOW;
      }
      return Changing().SetAttr(ino, r).then([this, req, ino](Result<Inode>&& res) {
        if (res.ok()) NoteSetAttr(ino, *res);
        ReplyAttr(req, res);
      });
    });
  }

  kj::Promise<void> ReadDir(fuse_req_t req, uint64_t ino, size_t size, off_t off, bool plus) {
    uint64_t ns_off = off < 3 ? 0 : static_cast<uint64_t>(off);
    // About as many entries as fit in the kernel's buffer (a readdirplus entry with its
    // attributes takes ~150 bytes plus the name), so little is fetched only to be dropped.
    uint32_t limit = static_cast<uint32_t>(
        std::max<size_t>(8, std::min<size_t>(size / (plus ? 160 : 32), 1024)));
    return ns().GetAttr(ino).then([this, req, ino, size, off, plus, ns_off,
                                   limit](Result<Inode>&& dir) -> kj::Promise<void> {
      if (!dir.ok()) return fuse_reply_err(req, ErrnoOf(dir.status())), kj::READY_NOW;
      if (!dir->is_dir()) return fuse_reply_err(req, ENOTDIR), kj::READY_NOW;
      auto d = std::make_shared<Inode>(*dir);
      return ns()
          .ReadDir(ino, ns_off, limit)
          .then([this, req, size, off, plus, d](Result<DirListing>&& l) -> kj::Promise<void> {
            if (!l.ok()) return fuse_reply_err(req, ErrnoOf(l.status())), kj::READY_NOW;
            auto listing = std::make_shared<DirListing>(std::move(l).value());
            SawListing(d->ino, *listing);
            std::vector<uint64_t> inos;
            if (plus) {
              for (const auto& e : listing->entries) inos.push_back(e.ino);
            }
            // Every entry's attributes in one batched read per node.
            kj::Promise<std::vector<Result<Inode>>> attrs =
                inos.empty() ? kj::Promise<std::vector<Result<Inode>>>(std::vector<Result<Inode>>())
                             : ns().GetAttrMany(std::move(inos));
            return attrs.then([this, req, size, off, plus, d,
                               listing](std::vector<Result<Inode>>&& inodes) {
              std::string buf(size, '\0');
              size_t used = 0;
              std::vector<std::string> given;  // names the kernel gets entries for
              auto add = [&](const std::string& name, const Inode* in, uint64_t ino, FileType type,
                             off_t next) -> bool {
                size_t need;
                if (plus) {
                  fuse_entry_param e;
                  std::memset(&e, 0, sizeof(e));
                  if (in) {
                    e = Entry(*in);
                  } else {
                    e.attr.st_ino = ino;
                    e.attr.st_mode = ModeTypeBits(type);
                  }
                  need =
                      fuse_add_direntry_plus(req, &buf[used], size - used, name.c_str(), &e, next);
                } else {
                  struct stat st;
                  std::memset(&st, 0, sizeof(st));
                  st.st_ino = ino;
                  st.st_mode = ModeTypeBits(type);
                  need = fuse_add_direntry(req, &buf[used], size - used, name.c_str(), &st, next);
                }
                if (need > size - used) return false;
                used += need;
                if (plus && in && !in->is_dir()) given.push_back(name);
                return true;
              };
              bool full = false;
              if (off < 1)
                full = !add(".", plus ? d.get() : nullptr, d->ino, FileType::kDirectory, 1);
              if (!full && off < 2) {
                uint64_t parent = d->parents.empty() ? d->ino : d->parents.front().parent;
                full = !add("..", nullptr, parent, FileType::kDirectory, 2);
              }
              for (size_t i = 0; !full && i < listing->entries.size(); ++i) {
                const auto& e = listing->entries[i];
                const Inode* in = plus && inodes[i].ok() ? &*inodes[i] : nullptr;
                if (plus && !in) continue;  // vanished meanwhile
                full = !add(e.name, in, e.ino, e.type, static_cast<off_t>(e.offset));
                if (in && !full) NoteFirstChunk(*in);  // the kernel's entry: opens skip lookup
              }
              NoteKernelNames(d->ino, given);
              fuse_reply_buf(req, buf.data(), used);
            });
          });
    });
  }

  kj::Promise<void> StatFs(fuse_req_t req) {
    return c_.Space().then([req](Result<ClusterSpace>&& space) {
      if (!space.ok()) return fuse_reply_err(req, ErrnoOf(space.status())), void();
      struct statvfs st;
      std::memset(&st, 0, sizeof(st));
      st.f_bsize = 4096;
      st.f_frsize = 4096;
      st.f_blocks = space->capacity / 4096;
      st.f_bfree = space->free / 4096;
      st.f_bavail = space->available / 4096;
      st.f_files = 1ull << 40;
      st.f_ffree = 1ull << 40;
      st.f_favail = 1ull << 40;
      st.f_namemax = 255;
      fuse_reply_statfs(req, &st);
    });
  }

  kj::Promise<void> Lseek(fuse_req_t req, uint64_t ino, off_t off, int whence) {
    FileState* fs = Find(ino);
    if (!fs) return fuse_reply_err(req, EBADF), kj::READY_NOW;
    uint64_t size = fs->Size();
    if (off < 0 || static_cast<uint64_t>(off) >= size)
      return fuse_reply_err(req, ENXIO), kj::READY_NOW;
    const uint64_t cs = fs->chunk_size();
    // Slots in a layout page not loaded yet: the page is fetched, and the seek goes on from
    // there (every slot before it was data for SEEK_HOLE, or a hole for SEEK_DATA).
    std::optional<uint64_t> unknown;
    auto data_end_of = [&](uint64_t idx) -> uint64_t {  // bytes of slot idx that hold data
      auto d = fs->dirty.find(idx);
      if (d != fs->dirty.end()) return d->second.data.size();
      std::optional<Slot> s = KnownSlot(fs->inode, idx);
      if (!s) {
        unknown = idx;
        return 0;
      }
      return s->hole() ? 0 : s->length;
    };
    auto go_on = [&]() -> kj::Promise<void> {
      uint64_t idx = *unknown;
      off_t from = std::max<off_t>(off, static_cast<off_t>(idx * cs));
      return LoadPages(fs->inode, idx, idx)
          .then([this, req, ino, from, whence](Status s) -> kj::Promise<void> {
            if (!s.ok()) return fuse_reply_err(req, ErrnoOf(s)), kj::READY_NOW;
            return Lseek(req, ino, from, whence);
          });
    };
    uint64_t pos = static_cast<uint64_t>(off);
    if (whence == SEEK_DATA) {
      for (uint64_t idx = pos / cs; idx * cs < size; ++idx) {
        uint64_t start = std::max(pos, idx * cs);
        uint64_t end = idx * cs + data_end_of(idx);
        if (unknown) return go_on();
        if (start < end) return fuse_reply_lseek(req, static_cast<off_t>(start)), kj::READY_NOW;
      }
      return fuse_reply_err(req, ENXIO), kj::READY_NOW;
    }
    for (uint64_t idx = pos / cs; idx * cs < size; ++idx) {
      uint64_t start = std::max(pos, idx * cs);
      uint64_t data_end = idx * cs + data_end_of(idx);
      if (unknown) return go_on();
      if (start >= data_end)
        return fuse_reply_lseek(req, static_cast<off_t>(std::min(start, size))), kj::READY_NOW;
      if (data_end < (idx + 1) * cs && data_end < size) {
        return fuse_reply_lseek(req, static_cast<off_t>(data_end)), kj::READY_NOW;
      }
    }
    return fuse_reply_lseek(req, static_cast<off_t>(size)), kj::READY_NOW;
  }

  kj::Promise<void> Create(fuse_req_t req, uint64_t parent, std::string name, mode_t mode,
                           fuse_file_info fi, uint32_t uid, uint32_t gid) {
    CreateRequest cr;
    cr.type = FileType::kRegular;
    cr.mode = mode & 07777;
    cr.uid = uid;
    cr.gid = gid;
    return Adding(parent, name)
        .Create(parent, name, cr)
        .attach(AddedWhenDone(parent, name))
        .then([this, req, parent, name, fi, uid,
               gid](Result<Inode>&& r) mutable -> kj::Promise<void> {
          if (!r.ok() && r.status().code() == StatusCode::kAlreadyExists && !(fi.flags & O_EXCL)) {
            // Created by someone else since the kernel's lookup: open the existing file.
            return ns()
                .Lookup(parent, name)
                .then([this, req, fi, parent, name, uid, gid](Result<Inode>&& e) mutable {
                  return OpenExisting(req, kj::mv(e), fi, parent, name, uid, gid);
                });
          }
          FinishCreate(req, r, fi, parent, name);
          return kj::READY_NOW;
        });
  }

  // A create that found the name taken (another mount created it since this kernel's lookup)
  // opens that file instead. The kernel takes the reply for a file it created itself
  // (FMODE_CREATED): it neither checks the caller's permission on the file nor truncates it
  // for O_TRUNC, so both happen here, as an open(2) of the existing file would do them.
  kj::Promise<void> OpenExisting(fuse_req_t req, Result<Inode> e, fuse_file_info fi,
                                 uint64_t parent, std::string name, uint32_t uid, uint32_t gid) {
    if (!e.ok() || e->is_dir()) {
      FinishCreate(req, e, fi, parent, name);  // the error, or EISDIR
      return kj::READY_NOW;
    }
    // A symlink, FIFO or device took the name: the kernel accepts only a regular file in a
    // CREATE reply, and following or opening those is the kernel's to do.
    if (e->type != FileType::kRegular) return fuse_reply_err(req, EEXIST), kj::READY_NOW;
    if (int err = OpenPermission(req, *e, fi.flags, uid, gid)) {
      return fuse_reply_err(req, err), kj::READY_NOW;
    }
    bool empty = e->size == 0;
    if (FileState* fs = Find(e->ino)) empty = empty && fs->dirty.empty() && fs->Size() == 0;
    if (!(fi.flags & O_TRUNC) || empty) {
      FinishCreate(req, e, fi, parent, name);
      return kj::READY_NOW;
    }
    const uint64_t ino = e->ino;
    // As the kernel's own O_TRUNC: a caller other than root also loses setuid, and setgid of
    // a group-executable file.
    std::optional<uint32_t> mode;
    if (uid != 0) {
      uint32_t kill = S_ISUID | ((e->mode & S_IXGRP) ? S_ISGID : 0);
      if (e->mode & kill) mode = e->mode & ~kill;
    }
    return Flush(ino).then(
        [this, req, fi, parent, name, ino, mode](Status s) mutable -> kj::Promise<void> {
          if (!s.ok()) return fuse_reply_err(req, ErrnoOf(s)), kj::READY_NOW;
          SetAttrRequest truncate;
          truncate.size = 0;
          truncate.mode = mode;
          return Changing()
              .SetAttr(ino, truncate)
              .then([this, req, fi, parent, name, ino](Result<Inode>&& t) mutable {
                if (t.ok()) NoteSetAttr(ino, *t);
                FinishCreate(req, t, fi, parent, name);
              });
        });
  }

  // What open(2) checks on an existing file with default_permissions: read and/or write access
  // (write for O_TRUNC too) by owner, group (primary or supplementary) or other bits; root may
  // read and write anything. 0 or EACCES.
  static int OpenPermission(fuse_req_t req, const Inode& in, int flags, uint32_t uid,
                            uint32_t gid) {
    const int acc = flags & O_ACCMODE;  // 3 (ioctl-only) needs both, as for the kernel
    unsigned want = 0;
    if (acc != O_WRONLY) want |= 4;
    if (acc != O_RDONLY || (flags & O_TRUNC)) want |= 2;
    if (uid == 0) return 0;
    unsigned bits = in.mode & 07;
    if (in.uid == uid) {
      bits = (in.mode >> 6) & 07;
    } else {
      bool member = in.gid == gid;
      if (!member) {
        gid_t groups[256];
        int n = fuse_req_getgroups(req, 256, groups);
        for (int i = 0; i < n && i < 256 && !member; ++i) member = groups[i] == in.gid;
      }
      if (member) bits = (in.mode >> 3) & 07;
    }
    return (bits & want) == want ? 0 : EACCES;
  }

  void FinishCreate(fuse_req_t req, const Result<Inode>& r, fuse_file_info fi, uint64_t parent,
                    const std::string& name) {
    if (!r.ok()) return fuse_reply_err(req, ErrnoOf(r.status())), void();
    if (r->is_dir()) return fuse_reply_err(req, EISDIR), void();
    FileState& fs = State(*r);
    bool unchanged = KernelCacheCurrent(*r);
    if (fs.dirty.empty() && !fs.truncated_to) fs.inode = *r;
    fs.open_count++;
    uint64_t fh = NewFh(fi.flags);
    handles_[fh] = Handle{r->ino, fi.flags};
    fi.fh = fh;
    fi.keep_cache = unchanged ? 1 : 0;
    MarkQuiet(r->ino);
    fuse_entry_param e = Entry(*r);
    NoteKernelName(parent, name, *r);
    if (fuse_reply_create(req, &e, &fi) != 0) {
      handles_.erase(fh);
      fs.open_count--;
    }
  }

  // Close-to-open: whether the kernel's cached pages of `fresh`'s file still hold its current
  // bytes (this mount last saw the same version). If not, its cached attributes are dropped
  // too, and the caller opens without keep_cache so the pages go as well.
  bool KernelCacheCurrent(const Inode& fresh) {
    bool current = SamePageVersion(fresh);
    if (!current && se()) fuse_lowlevel_notify_inval_inode(se(), fresh.ino, -1, 0);
    NotePageVersion(fresh);
    return current;
  }
  // Whether this mount last saw `fresh`'s file at the same version (its cached pages hold it).
  bool SamePageVersion(const Inode& fresh) const {
    auto it = page_version_.find(fresh.ino);
    return it != page_version_.end() && it->second.first == fresh.ctime_ns &&
           it->second.second == fresh.size;
  }
  void NotePageVersion(const Inode& in) {
    if (page_version_.size() > (1u << 20)) page_version_.clear();  // forgetting only costs a reread
    page_version_[in.ino] = {in.ctime_ns, in.size};
  }

  // Keeps an open file's cached record in step with this mount's own xattr changes.
  void UpdateCachedXattr(uint64_t ino, const std::string& name, const std::string* value) {
    {
      std::lock_guard<std::mutex> lock(xattr_mu_);
      xattr_cache_.erase(ino);
    }
    FileState* fs = Find(ino);
    if (!fs) return;
    auto& xs = fs->inode.xattrs;
    auto it = std::find_if(xs.begin(), xs.end(), [&](const Xattr& x) { return x.name == name; });
    if (!value) {
      if (it != xs.end()) xs.erase(it);
    } else if (it != xs.end()) {
      it->value = *value;
    } else {
      xs.push_back(Xattr{name, *value});
    }
  }

  // Empties the verified chunk cache (SIGUSR1; benchmarks use it for cold reads).
  void DropCaches() {
    cache_.clear();
    lru_.clear();
    cache_bytes_ = 0;
    ForgetNames();
  }

  Handle* FindHandle(uint64_t fh) {
    auto it = handles_.find(fh);
    return it == handles_.end() ? nullptr : &it->second;
  }

  void FlushAll(std::function<void()> done) {
    kj::Vector<kj::Promise<Status>> all;
    std::vector<uint64_t> inos;
    for (auto& [ino, fs] : files_) inos.push_back(ino);
    for (uint64_t ino : inos) {
      // Nobody is left to tell but the log: each file whose writes are lost, and why.
      all.add(Flush(ino).then([ino](Status s) {
        if (!s.ok()) {
          std::fprintf(stderr,
                       "quorumfs-mount: inode %llu: writes not yet published are lost at "
                       "unmount: %s\n",
                       static_cast<unsigned long long>(ino), s.ToString().c_str());
        }
        return s;
      }));
    }
    Add(kj::joinPromises(all.releaseAsArray()).then([done](kj::Array<Status>&&) { done(); }));
  }

  ClusterClient& c_;
  MountOptions o_;
  QuorumFs* outer_;
  kj::TaskSet tasks_;
  WorkerPool hashers_;
  uint64_t lease_holder_ = 0;
  bool lease_loop_running_ = false;
  // Files this mount holds locks on: read by FUSE threads (a close of a file with none skips
  // the loop), written on the loop thread.
  std::mutex locks_mu_;
  std::unordered_set<uint64_t> locked_inos_;
  bool lock_loop_running_ = false;
  // Loop thread only: releases to retry (one owner's, or all of a file's), and the tail of
  // each file's lock changes (LockChange).
  std::vector<std::pair<uint64_t, LockOwnerRef>> unreleased_;
  std::set<uint64_t> unreleased_all_;
  // Loop thread only: owners whose locks a close would have dropped while the file's writes
  // could not be published (ReleaseAfterPublish).
  std::vector<std::pair<uint64_t, LockOwnerRef>> deferred_releases_;
  struct LockTail {
    uint64_t seq = 0;
    kj::ForkedPromise<void> done;
  };
  std::unordered_map<uint64_t, LockTail> lock_tails_;
  uint64_t lock_seq_ = 0;
  // Kernel cache invalidations running on threads of their own (RevalidateLocked).
  std::mutex invalidating_mu_;
  std::condition_variable invalidating_cv_;
  int invalidating_ = 0;

  // ---- lookup read-ahead -----------------------------------------------------------------
  //
  // A program that stats many names of one directory (a build, `find`, a backup, a cold
  // `stat` loop) costs two reads per name. After kLookupRun lookups in one directory within
  // entry_timeout, the mount lists the directory with batched reads (at most kListingMax
  // entries, as readdirplus would) and answers lookups of the names it found from that listing
  // while it is younger than entry_timeout, counted from when the listing began: the staleness
  // the kernel's entry cache already accepts. Any change this mount makes drops every listing;
  // a name the listing lacks takes the normal path (misses: see negative_timeout below).
  static constexpr int kLookupRun = 8;
  static constexpr size_t kListingMax = 16384;
  static constexpr size_t kListingsMaxBytes = 64 << 20;  // all listings together, roughly
  struct Listing {
    std::chrono::steady_clock::time_point started;
    std::unordered_map<std::string, Inode> names;
    size_t bytes = 0;  // roughly, what `names` holds
  };
  static size_t ListingBytes(const std::string& name, const Inode& in) {
    size_t b = sizeof(Inode) + 2 * name.size() + in.symlink_target.size() +
               in.slots.size() * sizeof(Slot) + in.pages.size() * sizeof(PageRef);
    for (const auto& x : in.xattrs) b += x.name.size() + x.value.size();
    return b;
  }
  struct LookupRun {
    std::chrono::steady_clock::time_point first;
    int count = 0;
    uint64_t generation = 0;
  };
  // Complete listings. Written on the loop thread under listing_mu_; FUSE threads read them
  // under it (TryLookupFromListing) while the mount has no file state to overlay.
  std::mutex listing_mu_;
  std::unordered_map<uint64_t, Listing> listings_;
  std::set<uint64_t> loading_;        // directories being listed (loop thread)
  std::atomic<bool> no_files_{true};  // files_ is empty (written on the loop thread)

  // Answers a lookup on the calling FUSE thread from a complete, fresh listing when the mount
  // has no open or dirty file whose local state would have to be overlaid; false otherwise.
  bool TryLookupFromListing(fuse_req_t req, uint64_t parent, const std::string& name) {
    if (o_.entry_timeout <= 0 || !no_files_) return false;
    std::optional<Inode> in;
    {
      std::lock_guard<std::mutex> lock(listing_mu_);
      auto it = listings_.find(parent);
      if (it == listings_.end()) return false;
      if (std::chrono::steady_clock::now() - it->second.started >= EntryTimeout()) return false;
      auto hit = it->second.names.find(name);
      if (hit == it->second.names.end()) return false;
      in = hit->second;
    }
    fuse_entry_param e = Entry(*in, /*local=*/false);
    NoteKernelName(parent, name, *in);
    fuse_reply_entry(req, &e);
    return true;
  }
  std::unordered_map<uint64_t, LookupRun> lookup_runs_;

  // ---- misses from a listing of names ----------------------------------------------------
  //
  // With -o negative_timeout=S (off by default: DESIGN.md has a name another mount just
  // created found at once). A program that makes many files in one directory (untar, a
  // build's outputs, cp -r) has the kernel look each new name up first, and each miss costs a
  // quorum read (~0.45 ms here, a fifth of a create). After kLookupRun misses in one directory
  // within S, the mount lists the names the directory may hold (ReadDirNames: the keys of its
  // entry records on the replicas, a superset of its entries, with no quorum read) and answers
  // a lookup of a name not among them "no such file" on the FUSE thread while the listing is
  // younger than S, counted from when it began. A name this mount adds (create, mknod, mkdir,
  // symlink, link, rename) joins the directory's listing, the one being built, and those
  // begun while the change is in flight, before the change is sent: this mount never misses
  // its own names. Names it finds (a lookup, readdir, a lookup read-ahead listing) join too,
  // so a name it has shown does not vanish again. Another mount's new name can take up to S
  // to show here. A lock granted drops every name listing (RevalidateLocked), as does SIGUSR1.
  // A listing answering past half its life is made again in the background. A directory with
  // more than kListingMax names (tombstones included) is not listed again for S. All
  // listings together stay within 64 directories and about kNamesMaxBytes (checked at every
  // name added; those being built are bounded one by one).
  static constexpr size_t kNamesMaxBytes = 16 << 20;  // all name listings together, roughly
  std::chrono::steady_clock::duration NegativeTimeout() const {
    return std::chrono::microseconds(static_cast<int64_t>(o_.negative_timeout * 1e6));
  }
  struct NameSet {
    std::chrono::steady_clock::time_point started;
    std::unordered_set<std::string> names;
    size_t bytes = 0;
    bool refreshing = false;  // a new listing of the directory is being built
    // Adds `name`; false if the set grew past its bounds (the caller drops it).
    bool Insert(const std::string& name) {
      if (names.insert(name).second) bytes += name.size() + 48;
      return names.size() <= kListingMax && bytes <= kNamesMaxBytes;
    }
  };
  std::mutex names_mu_;
  std::unordered_map<uint64_t, NameSet> name_sets_;  // complete listings, under names_mu_
  // Loop thread only: listings being built, their generation (ForgetNames drops them), runs
  // of misses, directories too large to list (until when), and the names this mount is adding
  // (a multiset: two creates of one name).
  std::unordered_map<uint64_t, std::shared_ptr<NameSet>> names_loading_;
  uint64_t names_generation_ = 0;
  std::unordered_map<uint64_t, LookupRun> miss_runs_;
  std::unordered_map<uint64_t, std::chrono::steady_clock::time_point> too_large_;
  std::unordered_map<uint64_t, std::unordered_multiset<std::string>> adding_;

  // Loop thread: `names` of `dir` exist, or are about to (this mount adds them): they join its
  // listings. A listing that grows past its bounds is dropped, and the directory is not
  // listed again for S.
  void SawNames(uint64_t dir, const std::vector<std::string>& names) {
    if (o_.negative_timeout <= 0 || names.empty()) return;
    bool too_large = false;
    auto it = names_loading_.find(dir);
    if (it != names_loading_.end()) {
      for (const auto& n : names) too_large = !it->second->Insert(n) || too_large;
    }
    {
      std::lock_guard<std::mutex> lock(names_mu_);
      auto set = name_sets_.find(dir);
      if (set != name_sets_.end()) {
        size_t before = set->second.bytes;
        for (const auto& n : names) too_large = !set->second.Insert(n) || too_large;
        if (!too_large && set->second.bytes != before) {
          size_t total = 0;  // all listings together (at most 64)
          for (const auto& [d, other] : name_sets_) total += other.bytes;
          if (total > kNamesMaxBytes) name_sets_.clear();
        }
      }
    }
    if (too_large) TooLarge(dir);
  }
  void SawName(uint64_t dir, const std::string& name) {
    if (o_.negative_timeout > 0) SawNames(dir, {name});
  }
  void SawListing(uint64_t dir, const DirListing& listing) {
    if (o_.negative_timeout <= 0) return;
    std::vector<std::string> names;
    for (const auto& e : listing.entries) names.push_back(e.name);
    SawNames(dir, names);
  }
  // Drops `dir`'s listings (the one answering and the one being built) for S.
  void TooLarge(uint64_t dir) {
    names_loading_.erase(dir);
    {
      std::lock_guard<std::mutex> lock(names_mu_);
      name_sets_.erase(dir);
    }
    if (too_large_.size() > 4096) too_large_.clear();
    too_large_[dir] = std::chrono::steady_clock::now() + NegativeTimeout();
  }

  // Loop thread: `name` is about to be added to `dir` by this mount. Returns the namespace
  // (through Changing() when `changing`).
  Namespace& Adding(uint64_t dir, const std::string& name, bool changing = false) {
    if (o_.negative_timeout > 0) {
      adding_[dir].insert(name);
      SawName(dir, name);
    }
    return changing ? Changing() : ns();
  }
  // Ends an Adding when destroyed (with the change's promise, done or failed).
  struct AddedGuard {
    Impl* impl;
    uint64_t dir;
    std::string name;
    ~AddedGuard() {
      auto it = impl->adding_.find(dir);
      if (it == impl->adding_.end()) return;
      auto one = it->second.find(name);
      if (one != it->second.end()) it->second.erase(one);
      if (it->second.empty()) impl->adding_.erase(it);
    }
  };
  kj::Own<AddedGuard> AddedWhenDone(uint64_t dir, const std::string& name) {
    if (o_.negative_timeout <= 0) return kj::Own<AddedGuard>();
    return kj::heap<AddedGuard>(AddedGuard{this, dir, name});
  }

  // Loop thread: a lookup in `dir` found nothing.
  void NoteMiss(uint64_t dir) {
    if (o_.negative_timeout <= 0 || names_loading_.count(dir)) return;
    auto now = std::chrono::steady_clock::now();
    {
      std::lock_guard<std::mutex> lock(names_mu_);
      auto it = name_sets_.find(dir);
      if (it != name_sets_.end()) {
        if (now - it->second.started < NegativeTimeout()) return;  // the name is in it
        name_sets_.erase(it);
      }
    }
    if (miss_runs_.size() > 4096) miss_runs_.clear();
    LookupRun& run = miss_runs_[dir];
    if (run.count == 0 || now - run.first > NegativeTimeout()) {
      run.first = now;
      run.count = 0;
    }
    if (++run.count < kLookupRun) return;
    miss_runs_.erase(dir);
    StartNames(dir);
  }

  // Loop thread: begins a listing of `dir`'s names, with the names this mount is adding.
  void StartNames(uint64_t dir) {
    if (names_loading_.count(dir) || names_loading_.size() >= 64) return;
    auto now = std::chrono::steady_clock::now();
    auto large = too_large_.find(dir);
    if (large != too_large_.end()) {
      if (now < large->second) return;
      too_large_.erase(large);
    }
    auto set = std::make_shared<NameSet>();
    set->started = now;
    auto adding = adding_.find(dir);
    if (adding != adding_.end()) {
      for (const auto& n : adding->second) set->Insert(n);
    }
    names_loading_[dir] = set;
    uint64_t generation = names_generation_;
    Add(ListNames(dir, 0, generation, set).catch_([this, dir, generation](kj::Exception&& e) {
      if (generation == names_generation_) names_loading_.erase(dir);
      taskFailed(kj::mv(e));
    }));
  }

  kj::Promise<void> ListNames(uint64_t dir, uint64_t offset, uint64_t generation,
                              std::shared_ptr<NameSet> set) {
    return ns()
        .ReadDirNames(dir, offset, 4096)
        .then([this, dir, generation, set](Result<DirListing>&& l) -> kj::Promise<void> {
          // Dropped by ForgetNames, or by SawNames for growing too large.
          if (generation != names_generation_) return kj::READY_NOW;
          auto building = names_loading_.find(dir);
          if (building == names_loading_.end() || building->second != set) return kj::READY_NOW;
          bool fits = true;
          if (l.ok()) {
            for (const auto& e : l->entries) fits = set->Insert(e.name) && fits;
          }
          if (!l.ok() || !fits) {
            if (!fits) return TooLarge(dir), kj::READY_NOW;
            names_loading_.erase(dir);  // failed: tried again after more misses
            std::lock_guard<std::mutex> lock(names_mu_);
            auto it = name_sets_.find(dir);
            if (it != name_sets_.end()) it->second.refreshing = false;
            return kj::READY_NOW;
          }
          if (!l->end && !l->entries.empty()) {
            return ListNames(dir, l->entries.back().offset, generation, set);
          }
          names_loading_.erase(dir);
          std::lock_guard<std::mutex> lock(names_mu_);
          size_t total = set->bytes;
          for (const auto& [d, n] : name_sets_) total += d == dir ? 0 : n.bytes;
          if (name_sets_.size() >= 64 || total > kNamesMaxBytes) name_sets_.clear();
          name_sets_[dir] = std::move(*set);
          return kj::READY_NOW;
        });
  }

  // Loop thread: drops every name listing, those being built too.
  void ForgetNames() {
    ++names_generation_;
    names_loading_.clear();
    miss_runs_.clear();
    std::lock_guard<std::mutex> lock(names_mu_);
    name_sets_.clear();
  }

  // FUSE thread: answers a lookup of a name that a fresh listing of `parent` lacks.
  bool TryMissFromNames(fuse_req_t req, uint64_t parent, const std::string& name) {
    if (o_.negative_timeout <= 0 || name.empty() || name.size() > 255 || name == "." ||
        name == "..") {
      return false;
    }
    bool refresh = false;
    {
      std::lock_guard<std::mutex> lock(names_mu_);
      auto it = name_sets_.find(parent);
      if (it == name_sets_.end()) return false;
      auto age = std::chrono::steady_clock::now() - it->second.started;
      if (age >= NegativeTimeout() || it->second.names.count(name)) return false;
      if (age * 2 >= NegativeTimeout() && !it->second.refreshing) {
        it->second.refreshing = refresh = true;
      }
    }
    fuse_reply_err(req, ENOENT);
    if (refresh) {
      outer_->Submit([this, parent]() {
        StartNames(parent);
        return kj::Promise<void>(kj::READY_NOW);
      });
    }
    return true;
  }
  std::mutex kernel_names_mu_;
  std::unordered_map<uint64_t,
                     std::unordered_map<std::string, std::chrono::steady_clock::time_point>>
      kernel_names_;
  size_t kernel_names_count_ = 0;
  size_t kernel_names_prune_at_ = 65536;
  uint64_t change_generation_ = 0;
  std::unordered_map<uint64_t, std::unique_ptr<FileState>> files_;
  std::unordered_map<uint64_t, Handle> handles_;
  // ino -> (ctime, size) of the version the kernel's page cache holds (see KernelCacheCurrent).
  std::unordered_map<uint64_t, std::pair<int64_t, uint64_t>> page_version_;
  uint64_t next_fh_ = 1;
  // A file handle's lowest bit says it was opened read-only: its flush (close) has nothing to
  // publish, and the FUSE thread answers it without a trip to the loop thread.
  uint64_t NewFh(int flags) {
    return (next_fh_++ << 1) | ((flags & O_ACCMODE) == O_RDONLY ? 1 : 0);
  }
  static bool ReadOnlyFh(uint64_t fh) { return (fh & 1) != 0; }
  uint64_t dirty_bytes_ = 0;
  std::list<ChunkId> lru_;
  std::unordered_map<ChunkId, std::pair<Bytes, std::list<ChunkId>::iterator>, ChunkIdHash> cache_;
  // Chunk fetches in flight; open_prefetch: begun by PrefetchAtOpen (see SlotBytes).
  struct Fetch {
    kj::ForkedPromise<Result<Bytes>> promise;
    bool open_prefetch = false;
  };
  std::unordered_map<ChunkId, Fetch, ChunkIdHash> inflight_;
  uint64_t cache_bytes_ = 0;
  static constexpr size_t kFirstChunksMax = 1 << 16;
  static constexpr uint64_t kPrefetchAtOpenMax = 1 << 20;
  std::unordered_map<uint64_t, ChunkId> first_chunks_;  // ino -> first chunk (NoteFirstChunk)
};

// ---- the libfuse side: each handler copies its arguments and queues the work ----------------

namespace {

// The session's user data is a pointer to the QuorumFs* that main() fills in once the cluster
// client is running (requests arrive only after that).
QuorumFs* Fs(fuse_req_t req) { return *static_cast<QuorumFs**>(fuse_req_userdata(req)); }

}  // namespace

QuorumFs::QuorumFs(ClusterClient& client, MountOptions options)
    : impl_(std::make_unique<Impl>(client, std::move(options), this)) {}

// The mount's state holds promises and tasks of the loop thread: they are destroyed there
// (destroyed on the main thread, a pending task threw, and the daemon aborted at exit).
QuorumFs::~QuorumFs() {
  ClusterClient& c = impl_->c_;
  c.executor().executeSync([this]() { impl_.reset(); });
}

void QuorumFs::Submit(std::function<kj::Promise<void>()> fn) {
  Impl* impl = impl_.get();
  // The lambda only queues: a FUSE thread never waits for the work itself. Writes the FUSE
  // threads answered are applied first.
  impl->c_.executor().executeSync([impl, &fn]() { impl->Add(impl->AfterStaged(std::move(fn))); });
}

void QuorumFs::DropCaches() {
  Impl* impl = impl_.get();
  impl->c_.executor().executeSync([impl]() { impl->DropCaches(); });
}

void QuorumFs::FlushAllSync() {
  Impl* impl = impl_.get();
  std::promise<void> done;
  impl->c_.executor().executeSync(
      [impl, &done]() { impl->FlushAll([&done]() { done.set_value(); }); });
  done.get_future().wait();
}

void QuorumFs::ReleaseLocksSync() {
  Impl* impl = impl_.get();
  std::promise<void> done;
  impl->c_.executor().executeSync(
      [impl, &done]() { impl->ReleaseAllLocks([&done]() { done.set_value(); }); });
  done.get_future().wait();
  impl->WaitForInvalidations(10);
}

#define QFS_IMPL(req) QuorumFs::Impl* impl = Fs(req)->impl_.get()

namespace {

// The kernel hands POSIX lock ranges over as l_start and l_len (0: to the end of the file).
bool PosixLockRequest(QuorumFs::Impl* impl, const fuse_file_info* fi, const struct flock& lock,
                      LockRequest* out) {
  LockType type;
  switch (lock.l_type) {
    case F_RDLCK:
      type = LockType::kRead;
      break;
    case F_WRLCK:
      type = LockType::kWrite;
      break;
    case F_UNLCK:
      type = LockType::kUnlock;
      break;
    default:
      return false;
  }
  if (lock.l_start < 0 || lock.l_len < 0) return false;
  uint64_t start = static_cast<uint64_t>(lock.l_start);
  uint64_t end = lock.l_len == 0 ? UINT64_MAX : start + static_cast<uint64_t>(lock.l_len) - 1;
  *out = impl->MakeLockRequest(fi->lock_owner, LockKind::kPosix, type, start, end,
                               static_cast<uint32_t>(lock.l_pid));
  return true;
}

void OpInit(void* userdata, fuse_conn_info* conn) {
  (void)userdata;
  // 1 MiB writes: one chunk per request (larger max_write breaks this libfuse).
  conn->max_write = 1024 * 1024;
  conn->max_readahead = 4 * 1024 * 1024;
  // readdirplus answers `ls -l` in one pass instead of a getattr per entry.
  if (conn->capable & FUSE_CAP_READDIRPLUS) conn->want |= FUSE_CAP_READDIRPLUS;
  // No writeback cache: close() and fsync() must reach the cluster (durability on W servers).
  conn->want &= ~FUSE_CAP_WRITEBACK_CACHE;
  // open(O_TRUNC) then arrives as open + setattr(size 0), which publishes the truncation (libfuse
  // turns atomic O_TRUNC on by default, and Open does not truncate).
  conn->want &= ~FUSE_CAP_ATOMIC_O_TRUNC;
  // Drop cached pages whenever the kernel sees a new mtime: bytes another mount published
  // (close-to-open; Open also drops them when the version changed).
  if (conn->capable & FUSE_CAP_AUTO_INVAL_DATA) conn->want |= FUSE_CAP_AUTO_INVAL_DATA;
  // Reads may run concurrently; each is answered from the loop thread.
  if (conn->capable & FUSE_CAP_ASYNC_READ) conn->want |= FUSE_CAP_ASYNC_READ;
  // fcntl and flock locks go to the cluster (every mount sees them), not the local kernel.
  if (conn->capable & FUSE_CAP_POSIX_LOCKS) conn->want |= FUSE_CAP_POSIX_LOCKS;
  if (conn->capable & FUSE_CAP_FLOCK_LOCKS) conn->want |= FUSE_CAP_FLOCK_LOCKS;
}

}  // namespace

const fuse_lowlevel_ops& QuorumFs::Ops() {
  static fuse_lowlevel_ops ops = [] {
    fuse_lowlevel_ops o;
    std::memset(&o, 0, sizeof(o));
    o.init = OpInit;
    o.lookup = [](fuse_req_t req, fuse_ino_t parent, const char* name) {
      QFS_IMPL(req);
      std::string n(name);
      if (impl->TryLookupFromListing(req, parent, n)) return;
      if (impl->TryMissFromNames(req, parent, n)) return;
      Fs(req)->Submit([=]() { return impl->Lookup(req, parent, n); });
    };
    o.forget = [](fuse_req_t req, fuse_ino_t, uint64_t) { fuse_reply_none(req); };
    o.getattr = [](fuse_req_t req, fuse_ino_t ino, fuse_file_info*) {
      QFS_IMPL(req);
      Fs(req)->Submit([=]() { return impl->GetAttr(req, ino); });
    };
    o.setattr = [](fuse_req_t req, fuse_ino_t ino, struct stat* attr, int to_set, fuse_file_info*) {
      QFS_IMPL(req);
      struct stat a = *attr;
      Fs(req)->Submit([=]() { return impl->SetAttr(req, ino, a, to_set); });
    };
    o.readlink = [](fuse_req_t req, fuse_ino_t ino) {
      QFS_IMPL(req);
      Fs(req)->Submit([=]() {
        return impl->ns().ReadLink(ino).then([=](Result<std::string>&& r) {
          if (!r.ok()) return fuse_reply_err(req, ErrnoOf(r.status())), void();
          fuse_reply_readlink(req, r->c_str());
        });
      });
    };
    auto make = [](fuse_req_t req, fuse_ino_t parent, const char* name, FileType type, mode_t mode,
                   dev_t rdev, const char* target) {
      QFS_IMPL(req);
      const fuse_ctx* ctx = fuse_req_ctx(req);
      CreateRequest cr;
      cr.type = type;
      cr.mode = mode & 07777 & ~ctx->umask;
      if (type == FileType::kDirectory || type == FileType::kSymlink) cr.mode = mode & 07777;
      cr.uid = ctx->uid;
      cr.gid = ctx->gid;
      cr.rdev = rdev;
      if (target) cr.symlink_target = target;
      std::string n(name);
      Fs(req)->Submit([=]() {
        return impl->Adding(parent, n, /*changing=*/true)
            .Create(parent, n, cr)
            .then([=](Result<Inode>&& r) { impl->ReplyEntry(req, r, parent, n); })
            .attach(impl->AddedWhenDone(parent, n));
      });
    };
    static auto s_make = make;
    o.mknod = [](fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, dev_t rdev) {
      FileType t = FileTypeFromMode(mode);
      if (t == FileType::kNone || t == FileType::kDirectory || t == FileType::kSymlink) {
        fuse_reply_err(req, EINVAL);
        return;
      }
      s_make(req, parent, name, t, mode, rdev, nullptr);
    };
    o.mkdir = [](fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode) {
      s_make(req, parent, name, FileType::kDirectory, mode, 0, nullptr);
    };
    o.symlink = [](fuse_req_t req, const char* link, fuse_ino_t parent, const char* name) {
      s_make(req, parent, name, FileType::kSymlink, 0777, 0, link);
    };
    o.unlink = [](fuse_req_t req, fuse_ino_t parent, const char* name) {
      QFS_IMPL(req);
      std::string n(name);
      Fs(req)->Submit([=]() { return impl->Unlink(req, parent, n); });
    };
    o.rmdir = [](fuse_req_t req, fuse_ino_t parent, const char* name) {
      QFS_IMPL(req);
      std::string n(name);
      Fs(req)->Submit([=]() {
        return impl->Changing().Rmdir(parent, n).then([=](Status s) { impl->ReplyStatus(req, s); });
      });
    };
    o.rename = [](fuse_req_t req, fuse_ino_t parent, const char* name, fuse_ino_t newparent,
                  const char* newname, unsigned int flags) {
      QFS_IMPL(req);
      if (flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE)) {
        fuse_reply_err(req, EINVAL);
        return;
      }
      uint32_t f = 0;
      if (flags & RENAME_NOREPLACE) f |= kRenameNoReplace;
      if (flags & RENAME_EXCHANGE) f |= kRenameExchange;
      std::string n(name), nn(newname);
      Fs(req)->Submit([=]() {
        // An exchange puts an inode at both names.
        bool both = f & kRenameExchange;
        if (both) impl->Adding(parent, n);
        auto open_here = impl->OpenHere();
        return impl->Adding(newparent, nn, /*changing=*/true)
            .Rename(parent, n, newparent, nn, f, open_here)
            .then([=](Status s) {
              if (s.ok() && open_here) impl->HoldUnlinked(open_here->left_open);
              impl->ReplyStatus(req, s);
            })
            .attach(impl->AddedWhenDone(newparent, nn),
                    both ? impl->AddedWhenDone(parent, n) : kj::Own<void>());
      });
    };
    o.link = [](fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char* newname) {
      QFS_IMPL(req);
      std::string nn(newname);
      Fs(req)->Submit([=]() {
        return impl->Adding(newparent, nn, /*changing=*/true)
            .Link(ino, newparent, nn)
            .then([=](Result<Inode>&& r) { impl->ReplyEntry(req, r, newparent, nn); })
            .attach(impl->AddedWhenDone(newparent, nn));
      });
    };
    o.open = [](fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
      QFS_IMPL(req);
      fuse_file_info copy = *fi;
      Fs(req)->Submit([=]() { return impl->Open(req, ino, copy); });
    };
    o.read = [](fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info*) {
      QFS_IMPL(req);
      Fs(req)->Submit([=]() {
        return impl->Read(ino, static_cast<uint64_t>(off), size)
            .then([=](Result<Impl::ReadBytes>&& r) {
              if (!r.ok()) return fuse_reply_err(req, ErrnoOf(r.status())), void();
              fuse_reply_buf(req, r->data(), r->size());
            });
      });
    };
    o.write = [](fuse_req_t req, fuse_ino_t ino, const char* buf, size_t size, off_t off,
                 fuse_file_info* fi) {
      QFS_IMPL(req);
      auto data = std::make_shared<std::string>(buf, size);
      bool append = fi->flags & O_APPEND;
      if (!append && impl->TryStage(ino, static_cast<uint64_t>(off), data)) {
        return fuse_reply_write(req, size), void();
      }
      Fs(req)->Submit([=]() {
        uint64_t at = static_cast<uint64_t>(off);
        if (append) {
          if (FileState* fs = impl->Find(ino)) at = fs->Size();
        }
        return impl->Write(ino, at, data).then([=](Status s) {
          if (!s.ok()) return fuse_reply_err(req, ErrnoOf(s)), void();
          fuse_reply_write(req, size);
        });
      });
    };
    o.flush = [](fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
      {
        QFS_IMPL(req);
        if (impl->HoldsLocks(ino)) {
          // close(2) drops the closing process's POSIX locks on the file, after what this
          // mount wrote to it is published (through any descriptor: the next holder reads it).
          std::optional<LockOwnerRef> who = LockOwnerRef{fi->lock_owner, LockKind::kPosix};
          Fs(req)->Submit([=]() {
            return impl->ReleaseAfterPublish(ino, *who).then(
                [=](Status s) { impl->ReplyStatus(req, s); });
          });
          return;
        }
      }
      // close(2) of a read-only descriptor: what other descriptors wrote is theirs to publish
      // (at their close or fsync), so there is nothing to wait for.
      if (Impl::ReadOnlyFh(fi->fh)) return fuse_reply_err(req, 0), void();
      QFS_IMPL(req);
      // Nothing written since the loop last found this file clean: nothing to wait for either.
      if (impl->QuietFlush(ino)) return fuse_reply_err(req, 0), void();
      Fs(req)->Submit(
          [=]() { return impl->Flush(ino).then([=](Status s) { impl->ReplyStatus(req, s); }); });
    };
    o.fsync = [](fuse_req_t req, fuse_ino_t ino, int, fuse_file_info*) {
      QFS_IMPL(req);
      Fs(req)->Submit(
          [=]() { return impl->Flush(ino).then([=](Status s) { impl->ReplyStatus(req, s); }); });
    };
    o.release = [](fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
      QFS_IMPL(req);
      uint64_t fh = fi->fh;
      if (fi->flock_release && impl->HoldsLocks(ino)) {
        // The last close of an open file description drops its flock, after its data.
        std::optional<LockOwnerRef> who = LockOwnerRef{fi->lock_owner, LockKind::kFlock};
        Fs(req)->Submit([=]() {
          return impl->ReleaseAfterPublish(ino, *who).then(
              [=](Status) { return impl->Release(req, fh); });
        });
        return;
      }
      Fs(req)->Submit([=]() { return impl->Release(req, fh); });
    };
    o.getlk = [](fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi, struct flock* lock) {
      QFS_IMPL(req);
      LockRequest r;
      if (!PosixLockRequest(impl, fi, *lock, &r)) return fuse_reply_err(req, EINVAL), void();
      Fs(req)->Submit([=]() { return impl->GetLk(req, ino, r); });
    };
    o.setlk = [](fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi, struct flock* lock,
                 int sleep) {
      QFS_IMPL(req);
      LockRequest r;
      if (!PosixLockRequest(impl, fi, *lock, &r)) return fuse_reply_err(req, EINVAL), void();
      Fs(req)->Submit([=]() { return impl->SetLk(req, ino, r, sleep != 0); });
    };
    o.flock = [](fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi, int op) {
      QFS_IMPL(req);
      LockType type;
      switch (op & ~LOCK_NB) {
        case LOCK_SH:
          type = LockType::kRead;
          break;
        case LOCK_EX:
          type = LockType::kWrite;
          break;
        case LOCK_UN:
          type = LockType::kUnlock;
          break;
        default:
          return fuse_reply_err(req, EINVAL), void();
      }
      LockRequest r = impl->MakeLockRequest(fi->lock_owner, LockKind::kFlock, type, 0, UINT64_MAX,
                                            static_cast<uint32_t>(fuse_req_ctx(req)->pid));
      bool sleep = !(op & LOCK_NB);
      Fs(req)->Submit([=]() { return impl->SetLk(req, ino, r, sleep); });
    };
    o.opendir = [](fuse_req_t req, fuse_ino_t, fuse_file_info* fi) {
      fi->fh = 0;
      fuse_reply_open(req, fi);
    };
    o.readdir = [](fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info*) {
      QFS_IMPL(req);
      Fs(req)->Submit([=]() { return impl->ReadDir(req, ino, size, off, false); });
    };
    o.readdirplus = [](fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info*) {
      QFS_IMPL(req);
      Fs(req)->Submit([=]() { return impl->ReadDir(req, ino, size, off, true); });
    };
    o.releasedir = [](fuse_req_t req, fuse_ino_t, fuse_file_info*) { fuse_reply_err(req, 0); };
    o.fsyncdir = [](fuse_req_t req, fuse_ino_t, int, fuse_file_info*) { fuse_reply_err(req, 0); };
    o.statfs = [](fuse_req_t req, fuse_ino_t) {
      QFS_IMPL(req);
      Fs(req)->Submit([=]() { return impl->StatFs(req); });
    };
    o.setxattr = [](fuse_req_t req, fuse_ino_t ino, const char* name, const char* value,
                    size_t size, int flags) {
      QFS_IMPL(req);
      std::string n(name), v(value, size);
      if (impl->XattrRefused(n)) return fuse_reply_err(req, EOPNOTSUPP), void();
      uint32_t f = 0;
      if (flags & XATTR_CREATE) f |= kXattrCreate;
      if (flags & XATTR_REPLACE) f |= kXattrReplace;
      Fs(req)->Submit([=]() {
        return impl->Changing().SetXattr(ino, n, v, f).then([=](Status s) {
          if (s.ok()) impl->UpdateCachedXattr(ino, n, &v);
          impl->ReplyStatus(req, s);
        });
      });
    };
    o.getxattr = [](fuse_req_t req, fuse_ino_t ino, const char* name, size_t size) {
      QFS_IMPL(req);
      std::string n(name);
      auto reply_from = [req, n, size](const std::vector<Xattr>& xattrs) {
        for (const auto& x : xattrs) {
          if (x.name != n) continue;
          if (size == 0) return fuse_reply_xattr(req, x.value.size()), void();
          if (x.value.size() > size) return fuse_reply_err(req, ERANGE), void();
          return fuse_reply_buf(req, x.value.data(), x.value.size()), void();
        }
        fuse_reply_err(req, ENODATA);
      };
      // POSIX ACLs are not supported: say so at once (ls asks for them on every file). `ls -l`
      // also asks every file for security.selinux: answered here, on the FUSE thread, from
      // the xattr cache when it holds the file.
      if (impl->XattrRefused(n)) {
        fuse_reply_err(req, EOPNOTSUPP);
        return;
      }
      if (auto cached = impl->CachedXattrsOf(ino)) {
        reply_from(*cached);
        return;
      }
      Fs(req)->Submit([=]() -> kj::Promise<void> {
        // The kernel asks for security.capability before every write(2): answer it for an open
        // file from the record this mount read at open (close-to-open), not with a round trip.
        FileState* fs = impl->Find(ino);
        if (fs && fs->open_count > 0 && n.rfind("security.", 0) == 0) {
          return reply_from(fs->inode.xattrs), kj::READY_NOW;
        }
        if (auto cached = impl->CachedXattrsOf(ino)) return reply_from(*cached), kj::READY_NOW;
        return impl->ns().GetXattr(ino, n).then([=](Result<std::string>&& r) {
          if (!r.ok()) return fuse_reply_err(req, ErrnoOf(r.status())), void();
          if (size == 0) return fuse_reply_xattr(req, r->size()), void();
          if (r->size() > size) return fuse_reply_err(req, ERANGE), void();
          fuse_reply_buf(req, r->data(), r->size());
        });
      });
    };
    o.listxattr = [](fuse_req_t req, fuse_ino_t ino, size_t size) {
      QFS_IMPL(req);
      Fs(req)->Submit([=]() {
        return impl->ns().ListXattr(ino).then([=](Result<std::vector<std::string>>&& r) {
          if (!r.ok()) return fuse_reply_err(req, ErrnoOf(r.status())), void();
          std::string all;
          for (const auto& n : *r) {
            if (!impl->XattrRefused(n)) all += n + '\0';
          }
          if (size == 0) return fuse_reply_xattr(req, all.size()), void();
          if (all.size() > size) return fuse_reply_err(req, ERANGE), void();
          fuse_reply_buf(req, all.data(), all.size());
        });
      });
    };
    o.removexattr = [](fuse_req_t req, fuse_ino_t ino, const char* name) {
      QFS_IMPL(req);
      std::string n(name);
      if (impl->XattrRefused(n)) return fuse_reply_err(req, EOPNOTSUPP), void();
      Fs(req)->Submit([=]() {
        return impl->Changing().RemoveXattr(ino, n).then([=](Status s) {
          if (s.ok()) impl->UpdateCachedXattr(ino, n, nullptr);
          impl->ReplyStatus(req, s);
        });
      });
    };
    o.access = [](fuse_req_t req, fuse_ino_t, int) { fuse_reply_err(req, 0); };
    o.create = [](fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode,
                  fuse_file_info* fi) {
      QFS_IMPL(req);
      const fuse_ctx* ctx = fuse_req_ctx(req);
      std::string n(name);
      fuse_file_info copy = *fi;
      mode_t m = mode & ~ctx->umask;
      uint32_t uid = ctx->uid, gid = ctx->gid;
      Fs(req)->Submit([=]() { return impl->Create(req, parent, n, m, copy, uid, gid); });
    };
    o.fallocate = [](fuse_req_t req, fuse_ino_t ino, int mode, off_t offset, off_t length,
                     fuse_file_info*) {
      QFS_IMPL(req);
      // COLLAPSE_RANGE and INSERT_RANGE move bytes between chunks: not supported (as on tmpfs
      // or NFS; programs fall back to copying).
      if ((mode & ~(FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE)) ||
          ((mode & FALLOC_FL_PUNCH_HOLE) && (mode & FALLOC_FL_ZERO_RANGE))) {
        fuse_reply_err(req, EOPNOTSUPP);
        return;
      }
      if ((mode & FALLOC_FL_PUNCH_HOLE) && !(mode & FALLOC_FL_KEEP_SIZE)) {
        fuse_reply_err(req, EOPNOTSUPP);  // as the kernel says before asking any file system
        return;
      }
      uint64_t off = static_cast<uint64_t>(offset), end = static_cast<uint64_t>(offset + length);
      Fs(req)->Submit([=]() { return impl->Fallocate(req, ino, mode, off, end); });
    };
    o.copy_file_range = [](fuse_req_t req, fuse_ino_t ino_in, off_t off_in, fuse_file_info*,
                           fuse_ino_t ino_out, off_t off_out, fuse_file_info*, size_t len,
                           int flags) {
      QFS_IMPL(req);
      if (flags != 0) return fuse_reply_err(req, EINVAL), void();
      uint64_t from = static_cast<uint64_t>(off_in), to = static_cast<uint64_t>(off_out);
      Fs(req)->Submit([=]() { return impl->CopyRange(req, ino_in, from, ino_out, to, len); });
    };
    o.lseek = [](fuse_req_t req, fuse_ino_t ino, off_t off, int whence, fuse_file_info*) {
      QFS_IMPL(req);
      if (whence != SEEK_DATA && whence != SEEK_HOLE) {
        fuse_reply_err(req, EINVAL);
        return;
      }
      Fs(req)->Submit([=]() { return impl->Lseek(req, ino, off, whence); });
    };
    return o;
  }();
  return ops;
}

Status ParseMountOptions(const std::string& opts, MountOptions* o, std::string* rest) {
  size_t start = 0;
  while (start <= opts.size()) {
    size_t comma = opts.find(',', start);
    if (comma == std::string::npos) comma = opts.size();
    std::string opt = opts.substr(start, comma - start);
    start = comma + 1;
    if (opt.empty()) continue;
    std::string key = opt, value;
    size_t eq = opt.find('=');
    if (eq != std::string::npos) key = opt.substr(0, eq), value = opt.substr(eq + 1);
    auto number = [&](double* out) -> Status {
      char* end = nullptr;
      double v = std::strtod(value.c_str(), &end);
      if (value.empty() || *end != '\0' || !std::isfinite(v) || v < 0) {
        return InvalidArgument("option " + key + " needs a non-negative number, got '" + value +
                               "'");
      }
      *out = v;
      return Status::Ok();
    };
    auto bytes = [&](uint64_t* out) -> Status {
      char* end = nullptr;
      double v = std::strtod(value.c_str(), &end);
      std::string suffix = end ? end : "";
      double mult = 1;
      if (suffix == "k" || suffix == "K" || suffix == "KiB")
        mult = 1024;
      else if (suffix == "m" || suffix == "M" || suffix == "MiB")
        mult = 1024 * 1024;
      else if (suffix == "g" || suffix == "G" || suffix == "GiB")
        mult = 1024.0 * 1024 * 1024;
      else if (!suffix.empty())
        return InvalidArgument("option " + key + ": bad size '" + value + "'");
      if (value.empty() || !std::isfinite(v) || v < 0)
        return InvalidArgument("option " + key + ": bad size '" + value + "'");
      *out = static_cast<uint64_t>(v * mult);
      return Status::Ok();
    };
    if (key == "attr_timeout") {
      QFS_RETURN_IF_ERROR(number(&o->attr_timeout));
    } else if (key == "entry_timeout") {
      QFS_RETURN_IF_ERROR(number(&o->entry_timeout));
    } else if (key == "negative_timeout") {
      QFS_RETURN_IF_ERROR(number(&o->negative_timeout));
      if (o->negative_timeout > 3600) return InvalidArgument("negative_timeout is at most 3600 s");
    } else if (key == "op_timeout") {
      QFS_RETURN_IF_ERROR(number(&o->op_timeout));
      if (o->op_timeout < 0.1) return InvalidArgument("op_timeout must be at least 0.1 s");
    } else if (key == "hedge_ms") {
      QFS_RETURN_IF_ERROR(number(&o->hedge_ms));
    } else if (key == "max_dirty") {
      QFS_RETURN_IF_ERROR(bytes(&o->max_dirty));
    } else if (key == "cache_size") {
      QFS_RETURN_IF_ERROR(bytes(&o->cache_size));
    } else if (key == "lock_lease") {
      QFS_RETURN_IF_ERROR(number(&o->lock_lease));
      if (o->lock_lease < 1) return InvalidArgument("lock_lease must be at least 1 s");
    } else if (key == "read_ahead_kb") {
      double v;
      QFS_RETURN_IF_ERROR(number(&v));
      o->read_ahead_kb = static_cast<uint32_t>(v);
    } else if (key == "_netdev" || key == "rw" || key == "auto" || key == "noauto" ||
               key == "user" || key == "nouser" || key == "defaults" || key == "nofail" ||
               key == "default_permissions") {
      // mount(8)/fstab options; default_permissions is always on.
    } else if (key == "ro") {
      o->read_only = true;
      *rest += (rest->empty() ? "" : ",") + opt;
    } else if (key == "allow_other") {
      o->allow_other = true;
      *rest += (rest->empty() ? "" : ",") + opt;
    } else if (key == "selinux") {
      o->selinux = true;
    } else {
      *rest += (rest->empty() ? "" : ",") + opt;
    }
  }
  return Status::Ok();
}

}  // namespace quorumfs
