#include "common/status.h"

#include <cerrno>

namespace quorumfs {

const char* StatusCodeName(StatusCode code) {
  switch (code) {
    case StatusCode::kOk:
      return "OK";
    case StatusCode::kNotFound:
      return "NotFound";
    case StatusCode::kAlreadyExists:
      return "AlreadyExists";
    case StatusCode::kNotEmpty:
      return "NotEmpty";
    case StatusCode::kInvalidArgument:
      return "InvalidArgument";
    case StatusCode::kNoQuorum:
      return "NoQuorum";
    case StatusCode::kTimedOut:
      return "TimedOut";
    case StatusCode::kNoSpace:
      return "NoSpace";
    case StatusCode::kIoError:
      return "IoError";
    case StatusCode::kCorruption:
      return "Corruption";
    case StatusCode::kEpochMismatch:
      return "EpochMismatch";
    case StatusCode::kUnknownOutcome:
      return "UnknownOutcome";
    case StatusCode::kConflict:
      return "Conflict";
    case StatusCode::kUnavailable:
      return "Unavailable";
    case StatusCode::kTooLarge:
      return "TooLarge";
    case StatusCode::kNameTooLong:
      return "NameTooLong";
    case StatusCode::kNotDirectory:
      return "NotDirectory";
    case StatusCode::kIsDirectory:
      return "IsDirectory";
    case StatusCode::kTooManyLinks:
      return "TooManyLinks";
    case StatusCode::kPermissionDenied:
      return "PermissionDenied";
    case StatusCode::kNotPermitted:
      return "NotPermitted";
    case StatusCode::kNoData:
      return "NoData";
    case StatusCode::kRange:
      return "Range";
    case StatusCode::kLoop:
      return "Loop";
    case StatusCode::kBusy:
      return "Busy";
    case StatusCode::kNotSupported:
      return "NotSupported";
    case StatusCode::kWouldBlock:
      return "WouldBlock";
    case StatusCode::kNoLocks:
      return "NoLocks";
    case StatusCode::kInternal:
      return "Internal";
  }
  return "Unknown";
}

std::string Status::ToString() const {
  if (ok()) return "OK";
  return std::string(StatusCodeName(code_)) + ": " + message_;
}

int Status::ToErrno() const {
  switch (code_) {
    case StatusCode::kOk:
      return 0;
    case StatusCode::kNotFound:
      return ENOENT;
    case StatusCode::kAlreadyExists:
      return EEXIST;
    case StatusCode::kNotEmpty:
      return ENOTEMPTY;
    case StatusCode::kInvalidArgument:
      return EINVAL;
    case StatusCode::kTimedOut:
      return ETIMEDOUT;
    case StatusCode::kNoSpace:
      return ENOSPC;
    case StatusCode::kConflict:
      return EAGAIN;
    case StatusCode::kTooLarge:
      return EFBIG;
    case StatusCode::kNameTooLong:
      return ENAMETOOLONG;
    case StatusCode::kNotDirectory:
      return ENOTDIR;
    case StatusCode::kIsDirectory:
      return EISDIR;
    case StatusCode::kTooManyLinks:
      return EMLINK;
    case StatusCode::kPermissionDenied:
      return EACCES;
    case StatusCode::kNotPermitted:
      return EPERM;
    case StatusCode::kNoData:
      return ENODATA;
    case StatusCode::kRange:
      return ERANGE;
    case StatusCode::kLoop:
      return ELOOP;
    case StatusCode::kBusy:
      return EBUSY;
    case StatusCode::kNotSupported:
      return EOPNOTSUPP;
    case StatusCode::kWouldBlock:
      return EAGAIN;
    case StatusCode::kNoLocks:
      return ENOLCK;
    case StatusCode::kNoQuorum:
    case StatusCode::kIoError:
    case StatusCode::kCorruption:
    case StatusCode::kEpochMismatch:
    case StatusCode::kUnknownOutcome:
    case StatusCode::kUnavailable:
    case StatusCode::kInternal:
      return EIO;
  }
  return EIO;
}

Status Status::WithContext(const std::string& context) const {
  if (ok()) return *this;
  return Status(code_, context + ": " + message_);
}

}  // namespace quorumfs
