// Status and Result<T>: errors as values (LevelDB style). Expected failures never cross a
// module boundary as exceptions; each code maps to one errno at the FUSE edge (ToErrno).
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <variant>

namespace quorumfs {

enum class StatusCode : int {
  kOk = 0,
  kNotFound,          // ENOENT
  kAlreadyExists,     // EEXIST
  kNotEmpty,          // ENOTEMPTY
  kInvalidArgument,   // EINVAL: malformed input, bad config, wrong hash
  kNoQuorum,          // EIO: not enough replicas answered
  kTimedOut,          // ETIMEDOUT
  kNoSpace,           // ENOSPC
  kIoError,           // EIO: local disk error
  kCorruption,        // EIO: stored bytes do not match their hash
  kEpochMismatch,     // EIO: client and server disagree on the cluster epoch
  kUnknownOutcome,    // EIO: a change may or may not have taken effect; re-read
  kConflict,          // EAGAIN internally: a higher ballot was seen; retry
  kUnavailable,       // EIO: node unreachable
  kTooLarge,          // EFBIG / E2BIG: message or chunk over the limit
  kNameTooLong,       // ENAMETOOLONG
  kNotDirectory,      // ENOTDIR
  kIsDirectory,       // EISDIR
  kTooManyLinks,      // EMLINK
  kPermissionDenied,  // EACCES
  kNotPermitted,      // EPERM
  kNoData,            // ENODATA
  kRange,             // ERANGE
  kLoop,              // ELOOP
  kBusy,              // EBUSY
  kNotSupported,      // EOPNOTSUPP
  kWouldBlock,        // EAGAIN / EWOULDBLOCK: a file lock is held by another owner
  kNoLocks,           // ENOLCK: a file's lock table is full
  kInternal,          // EIO: a bug; the message says what
};

const char* StatusCodeName(StatusCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status Ok() { return Status(); }

  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }

  // "NoQuorum: prepare of I/42: 1 of 2 replies" — for logs and CLI output.
  std::string ToString() const;

  // The errno the FUSE layer answers with (0 for Ok).
  int ToErrno() const;

  // Returns a copy whose message is prefixed by `context: `.
  Status WithContext(const std::string& context) const;

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

inline Status NotFound(std::string m) { return Status(StatusCode::kNotFound, std::move(m)); }
inline Status InvalidArgument(std::string m) {
  return Status(StatusCode::kInvalidArgument, std::move(m));
}
inline Status IoError(std::string m) { return Status(StatusCode::kIoError, std::move(m)); }
inline Status Internal(std::string m) { return Status(StatusCode::kInternal, std::move(m)); }

// Result<T>: either a value or a non-OK Status.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : value_(std::move(value)) {}         // NOLINT: implicit by design
  Result(Status status) : status_(std::move(status)) {  // NOLINT
    if (status_.ok()) status_ = Internal("Result constructed from OK status without value");
  }

  bool ok() const { return value_.has_value(); }
  const Status& status() const { return status_; }
  T& value() & { return *value_; }
  const T& value() const& { return *value_; }
  T&& value() && { return std::move(*value_); }
  T* operator->() { return &*value_; }
  const T* operator->() const { return &*value_; }
  T& operator*() & { return *value_; }
  const T& operator*() const& { return *value_; }

 private:
  std::optional<T> value_;
  Status status_;
};

#define QFS_RETURN_IF_ERROR(expr)    \
  do {                               \
    ::quorumfs::Status _st = (expr); \
    if (!_st.ok()) return _st;       \
  } while (0)

#define QFS_CONCAT_INNER(a, b) a##b
#define QFS_CONCAT(a, b) QFS_CONCAT_INNER(a, b)
#define QFS_ASSIGN_OR_RETURN(lhs, expr) \
  QFS_ASSIGN_OR_RETURN_IMPL(QFS_CONCAT(_res_, __LINE__), lhs, expr)
#define QFS_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                              \
  if (!tmp.ok()) return tmp.status();             \
  lhs = std::move(tmp).value()

}  // namespace quorumfs
