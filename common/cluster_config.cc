#include "common/cluster_config.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <map>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <utility>

namespace quorumfs {
namespace {

constexpr uint64_t kKiB = 1024;
constexpr uint64_t kMiB = 1024 * 1024;
constexpr size_t kMaxNodeIdLength = 64;

Status LineError(const std::string& source, int line, const std::string& reason) {
  return InvalidArgument(source + ":" + std::to_string(line) + ": " + reason);
}

bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f'; }

std::string_view Trim(std::string_view s) {
  while (!s.empty() && IsSpace(s.front())) s.remove_prefix(1);
  while (!s.empty() && IsSpace(s.back())) s.remove_suffix(1);
  return s;
}

std::vector<std::string_view> SplitWords(std::string_view s) {
  std::vector<std::string_view> words;
  size_t i = 0;
  while (i < s.size()) {
    while (i < s.size() && IsSpace(s[i])) ++i;
    size_t start = i;
    while (i < s.size() && !IsSpace(s[i])) ++i;
    if (i > start) words.push_back(s.substr(start, i - start));
  }
  return words;
}

bool IsDigit(char c) { return c >= '0' && c <= '9'; }

// Plain decimal digits only (no sign, no spaces), at most `max`.
bool ParseUint(std::string_view s, uint64_t max, uint64_t* out) {
  if (s.empty()) return false;
  uint64_t v = 0;
  for (char c : s) {
    if (!IsDigit(c)) return false;
    uint64_t d = static_cast<uint64_t>(c - '0');
    if (v > (max - d) / 10) return false;
    v = v * 10 + d;
  }
  *out = v;
  return true;
}

std::string FormatSize(uint64_t bytes) {
  if (bytes != 0 && bytes % kMiB == 0) return std::to_string(bytes / kMiB) + "MiB";
  if (bytes != 0 && bytes % kKiB == 0) return std::to_string(bytes / kKiB) + "KiB";
  return std::to_string(bytes);
}

// "<digits>", "<digits>KiB" or "<digits>MiB". Returns false if malformed or overflowing.
bool ParseSize(std::string_view s, uint64_t* out) {
  uint64_t mult = 1;
  auto ends_with = [&](std::string_view suffix) {
    return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
  };
  if (ends_with("KiB")) {
    mult = kKiB;
    s.remove_suffix(3);
  } else if (ends_with("MiB")) {
    mult = kMiB;
    s.remove_suffix(3);
  }
  uint64_t n = 0;
  if (!ParseUint(s, UINT64_MAX / mult, &n)) return false;
  *out = n * mult;
  return true;
}

bool ValidNodeId(std::string_view id) {
  if (id.empty() || id.size() > kMaxNodeIdLength) return false;
  for (char c : id) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || IsDigit(c) || c == '_' ||
              c == '.' || c == '-';
    if (!ok) return false;
  }
  return true;
}

std::string BadIdReason(std::string_view id) {
  return "bad node id '" + std::string(id) + "' (want 1 to 64 of [A-Za-z0-9_.-])";
}

// RFC 1123 host name: dot-separated labels of [A-Za-z0-9-], 1..63 long, not starting or
// ending with '-'; at most 253 characters.
bool ValidHostname(std::string_view host) {
  if (host.empty() || host.size() > 253) return false;
  size_t start = 0;
  while (true) {
    size_t dot = host.find('.', start);
    std::string_view label =
        host.substr(start, dot == std::string_view::npos ? std::string_view::npos : dot - start);
    if (label.empty() || label.size() > 63 || label.front() == '-' || label.back() == '-') {
      return false;
    }
    for (char c : label) {
      bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || IsDigit(c) || c == '-';
      if (!ok) return false;
    }
    if (dot == std::string_view::npos) return true;
    start = dot + 1;
  }
}

// Splits and checks "host:port". On success fills `node` (host without brackets) and
// `dedup_key`, a normalised form used to spot two spellings of the same address.
bool ParseAddress(std::string_view addr, NodeInfo* node, std::string* dedup_key, std::string* why) {
  std::string_view host;
  std::string_view port_text;
  std::string canonical_host;
  if (!addr.empty() && addr.front() == '[') {
    size_t close = addr.find(']');
    if (close == std::string_view::npos) {
      *why = "missing ']' after IPv6 address";
      return false;
    }
    host = addr.substr(1, close - 1);
    std::string_view rest = addr.substr(close + 1);
    if (rest.empty() || rest.front() != ':') {
      *why = "missing ':port' after ']'";
      return false;
    }
    port_text = rest.substr(1);
    in6_addr a6;
    char buf[INET6_ADDRSTRLEN];
    if (inet_pton(AF_INET6, std::string(host).c_str(), &a6) != 1 ||
        inet_ntop(AF_INET6, &a6, buf, sizeof(buf)) == nullptr) {
      *why = "'" + std::string(host) + "' is not an IPv6 address";
      return false;
    }
    canonical_host = "[" + std::string(buf) + "]";
  } else {
    size_t colon = addr.rfind(':');
    if (colon == std::string_view::npos) {
      *why = "missing ':port'";
      return false;
    }
    host = addr.substr(0, colon);
    port_text = addr.substr(colon + 1);
    if (host.empty()) {
      *why = "missing host";
      return false;
    }
    if (host.find(':') != std::string_view::npos) {
      *why = "an IPv6 address must be in brackets, e.g. [::1]:7101";
      return false;
    }
    bool dotted =
        std::all_of(host.begin(), host.end(), [](char c) { return IsDigit(c) || c == '.'; });
    if (dotted) {
      in_addr a4;
      char buf[INET_ADDRSTRLEN];
      if (inet_pton(AF_INET, std::string(host).c_str(), &a4) != 1 ||
          inet_ntop(AF_INET, &a4, buf, sizeof(buf)) == nullptr) {
        *why = "'" + std::string(host) + "' is not an IPv4 address";
        return false;
      }
      canonical_host = buf;
    } else {
      if (!ValidHostname(host)) {
        *why = "'" + std::string(host) + "' is not a valid host name";
        return false;
      }
      canonical_host = std::string(host);
      std::transform(canonical_host.begin(), canonical_host.end(), canonical_host.begin(),
                     [](char c) { return (c >= 'A' && c <= 'Z') ? c - 'A' + 'a' : c; });
    }
  }
  uint64_t port = 0;
  if (!ParseUint(port_text, 65535, &port) || port == 0) {
    *why = "port must be a number from 1 to 65535, got '" + std::string(port_text) + "'";
    return false;
  }
  node->address = std::string(addr);
  node->host = std::string(host);
  node->port = static_cast<uint16_t>(port);
  *dedup_key = canonical_host + ":" + std::to_string(port);
  return true;
}

enum class Key { kEpoch, kReplicas, kWriteQuorum, kReadQuorum, kChunkSize };

const std::map<std::string_view, Key>& KnownKeys() {
  static const auto* keys = new std::map<std::string_view, Key>{
      {"epoch", Key::kEpoch},
      {"replicas", Key::kReplicas},
      {"write_quorum", Key::kWriteQuorum},
      {"read_quorum", Key::kReadQuorum},
      {"chunk_size", Key::kChunkSize},
  };
  return *keys;
}

// Sets one `key = value` setting. `line` is used in errors.
Status ApplySetting(Key key, std::string_view name, std::string_view value,
                    const std::string& source, int line, ClusterConfig* config) {
  std::string value_str(value);
  std::string name_str(name);
  switch (key) {
    case Key::kEpoch: {
      uint64_t v = 0;
      if (!ParseUint(value, UINT64_MAX, &v)) {
        return LineError(source, line, "bad number for epoch: '" + value_str + "'");
      }
      if (v < 1) return LineError(source, line, "epoch must be at least 1");
      config->epoch = v;
      return Status::Ok();
    }
    case Key::kReplicas:
    case Key::kWriteQuorum:
    case Key::kReadQuorum: {
      uint64_t v = 0;
      if (!ParseUint(value, INT_MAX, &v)) {
        return LineError(source, line, "bad number for " + name_str + ": '" + value_str + "'");
      }
      if (v < 1) return LineError(source, line, name_str + " must be at least 1");
      int n = static_cast<int>(v);
      if (key == Key::kReplicas) config->replicas = n;
      if (key == Key::kWriteQuorum) config->write_quorum = n;
      if (key == Key::kReadQuorum) config->read_quorum = n;
      return Status::Ok();
    }
    case Key::kChunkSize: {
      uint64_t v = 0;
      if (!ParseSize(value, &v)) {
        return LineError(source, line,
                         "bad size for chunk_size: '" + value_str +
                             "' (want a number of bytes, optionally with a KiB or MiB suffix)");
      }
      if (v < ClusterConfig::kMinChunkSize || v > ClusterConfig::kMaxChunkSize) {
        return LineError(source, line,
                         "chunk_size must be between " + FormatSize(ClusterConfig::kMinChunkSize) +
                             " and " + FormatSize(ClusterConfig::kMaxChunkSize) + " (got " +
                             value_str + ")");
      }
      if ((v & (v - 1)) != 0) {
        return LineError(source, line, "chunk_size must be a power of two (got " + value_str + ")");
      }
      config->chunk_size = v;
      return Status::Ok();
    }
  }
  return Internal("unhandled key");
}

}  // namespace

Result<ClusterConfig> ClusterConfig::Parse(const std::string& text, const std::string& source) {
  ClusterConfig config;
  std::map<Key, int> key_lines;  // line each key was set on
  std::unordered_map<std::string, int> id_lines;
  std::unordered_map<std::string, std::pair<std::string, int>> addr_owner;  // -> (id, line)
  int previous_line = 0;
  std::unordered_map<std::string, int> leaving_lines;  // id -> line of its `leaving` line

  int line_no = 0;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t eol = text.find('\n', pos);
    if (eol == std::string::npos) eol = text.size();
    std::string_view line(text.data() + pos, eol - pos);
    pos = eol + 1;
    ++line_no;

    size_t hash = line.find('#');
    if (hash != std::string_view::npos) line = line.substr(0, hash);
    line = Trim(line);
    if (line.empty()) continue;

    size_t eq = line.find('=');
    if (eq != std::string_view::npos) {
      std::string_view name = Trim(line.substr(0, eq));
      std::string_view value = Trim(line.substr(eq + 1));
      if (name.empty()) return LineError(source, line_no, "missing key before '='");
      std::vector<std::string_view> name_words = SplitWords(name);
      if (name_words.size() != 1) {
        return LineError(source, line_no,
                         "expected 'key = value', got '" + std::string(line) + "'");
      }
      auto known = KnownKeys().find(name);
      if (known == KnownKeys().end()) {
        return LineError(source, line_no, "unknown key '" + std::string(name) + "'");
      }
      if (value.empty()) {
        return LineError(source, line_no, "missing value for '" + std::string(name) + "'");
      }
      if (SplitWords(value).size() != 1) {
        return LineError(
            source, line_no,
            "expected one value for '" + std::string(name) + "', got '" + std::string(value) + "'");
      }
      auto [it, inserted] = key_lines.emplace(known->second, line_no);
      if (!inserted) {
        return LineError(source, line_no,
                         "duplicate key '" + std::string(name) + "' (first set on line " +
                             std::to_string(it->second) + ")");
      }
      QFS_RETURN_IF_ERROR(ApplySetting(known->second, name, value, source, line_no, &config));
      continue;
    }

    std::vector<std::string_view> words = SplitWords(line);
    std::string_view head = words[0];
    if (head == "node" || head == "leaving") {
      const bool leaving = head == "leaving";
      if (words.size() != 3) {
        return LineError(source, line_no, "expected '" + std::string(head) + " <id> <host:port>'");
      }
      std::string id(words[1]);
      if (!ValidNodeId(id)) return LineError(source, line_no, BadIdReason(id));
      auto [id_it, id_new] = id_lines.emplace(id, line_no);
      if (!id_new) {
        return LineError(
            source, line_no,
            "duplicate node id '" + id + "' (first on line " + std::to_string(id_it->second) + ")");
      }
      NodeInfo node;
      node.id = id;
      std::string dedup_key;
      std::string why;
      if (!ParseAddress(words[2], &node, &dedup_key, &why)) {
        return LineError(
            source, line_no,
            "bad address '" + std::string(words[2]) + "' for node '" + id + "': " + why);
      }
      auto [addr_it, addr_new] = addr_owner.emplace(dedup_key, std::make_pair(id, line_no));
      if (!addr_new) {
        return LineError(source, line_no,
                         "duplicate address '" + node.address + "' (also node '" +
                             addr_it->second.first + "' on line " +
                             std::to_string(addr_it->second.second) + ")");
      }
      if (leaving) {
        leaving_lines[node.id] = line_no;
        config.leaving.push_back(std::move(node));
      } else {
        config.nodes.push_back(std::move(node));
      }
    } else if (head == "previous") {
      if (previous_line != 0) {
        return LineError(
            source, line_no,
            "duplicate 'previous' line (first on line " + std::to_string(previous_line) + ")");
      }
      if (words.size() < 2) {
        return LineError(source, line_no, "'previous' needs at least one node id");
      }
      previous_line = line_no;
      std::unordered_set<std::string> seen;
      for (size_t i = 1; i < words.size(); ++i) {
        std::string id(words[i]);
        if (!ValidNodeId(id)) return LineError(source, line_no, BadIdReason(id));
        if (!seen.insert(id).second) {
          return LineError(source, line_no, "duplicate id '" + id + "' in 'previous'");
        }
        config.previous.push_back(std::move(id));
      }
    } else if (KnownKeys().count(head) != 0) {
      return LineError(source, line_no, "expected '=' after '" + std::string(head) + "'");
    } else {
      return LineError(source, line_no, "unknown key '" + std::string(head) + "'");
    }
  }

  // Whole-file rules. Each error names the line of the setting that completed the violation
  // (the last of the keys involved), or line 0 when every key involved took its default.
  auto line_of = [&](std::initializer_list<Key> keys) {
    int line = 0;
    for (Key k : keys) {
      auto it = key_lines.find(k);
      if (it != key_lines.end()) line = std::max(line, it->second);
    }
    return line;
  };
  const int n = config.replicas;
  const int w = config.write_quorum;
  const int r = config.read_quorum;

  if (key_lines.count(Key::kEpoch) == 0) {
    return LineError(source, 0, "missing required key 'epoch'");
  }
  if (w > n) {
    return LineError(source, line_of({Key::kWriteQuorum, Key::kReplicas}),
                     "write_quorum must not exceed replicas (" + std::to_string(w) + " > " +
                         std::to_string(n) + ")");
  }
  if (r > n) {
    return LineError(source, line_of({Key::kReadQuorum, Key::kReplicas}),
                     "read_quorum must not exceed replicas (" + std::to_string(r) + " > " +
                         std::to_string(n) + ")");
  }
  if (static_cast<int64_t>(r) + w <= n) {
    return LineError(source, line_of({Key::kReadQuorum, Key::kWriteQuorum, Key::kReplicas}),
                     "read_quorum + write_quorum must exceed replicas (" + std::to_string(r) +
                         " + " + std::to_string(w) + " <= " + std::to_string(n) + ")");
  }
  if (config.nodes.size() < static_cast<size_t>(n)) {
    return LineError(source, line_of({Key::kReplicas}),
                     "fewer nodes than replicas (" + std::to_string(config.nodes.size()) + " < " +
                         std::to_string(n) + ")");
  }
  for (const NodeInfo& gone : config.leaving) {
    if (std::find(config.previous.begin(), config.previous.end(), gone.id) ==
        config.previous.end()) {
      return LineError(source, leaving_lines[gone.id],
                       "leaving node '" + gone.id +
                           "' is not in 'previous' (only a node of the previous membership can "
                           "be leaving)");
    }
  }
  if (config.InTransition()) {
    for (const std::string& id : config.previous) {
      if (id_lines.count(id) == 0) {
        return LineError(source, previous_line,
                         "previous id '" + id +
                             "' has no address: list it as 'node <id> <host:port>' if it stays, "
                             "or 'leaving <id> <host:port>' if it is being removed");
      }
    }
    if (config.previous.size() < static_cast<size_t>(n)) {
      return LineError(source, previous_line,
                       "fewer previous ids than replicas (" +
                           std::to_string(config.previous.size()) + " < " + std::to_string(n) +
                           ")");
    }
  }
  return config;
}

Result<ClusterConfig> ClusterConfig::Load(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return IoError(path + ": " + std::strerror(errno));
  std::string text;
  char buf[8192];
  while (true) {
    ssize_t got = ::read(fd, buf, sizeof(buf));
    if (got < 0) {
      if (errno == EINTR) continue;
      int err = errno;
      ::close(fd);
      return IoError(path + ": " + std::strerror(err));
    }
    if (got == 0) break;
    text.append(buf, static_cast<size_t>(got));
  }
  ::close(fd);
  return Parse(text, path);
}

std::string ClusterConfig::Format() const {
  std::string out;
  out += "epoch = " + std::to_string(epoch) + "\n";
  out += "replicas = " + std::to_string(replicas) + "\n";
  out += "write_quorum = " + std::to_string(write_quorum) + "\n";
  out += "read_quorum = " + std::to_string(read_quorum) + "\n";
  out += "chunk_size = " + FormatSize(chunk_size) + "\n";
  for (const NodeInfo& node : nodes) out += "node " + node.id + " " + node.address + "\n";
  for (const NodeInfo& node : leaving) out += "leaving " + node.id + " " + node.address + "\n";
  if (!previous.empty()) {
    out += "previous";
    for (const std::string& id : previous) out += " " + id;
    out += "\n";
  }
  return out;
}

const NodeInfo* ClusterConfig::FindNode(const std::string& id) const {
  for (const NodeInfo& node : nodes) {
    if (node.id == id) return &node;
  }
  for (const NodeInfo& node : leaving) {
    if (node.id == id) return &node;
  }
  return nullptr;
}

std::vector<std::string> ClusterConfig::NodeIds() const {
  std::vector<std::string> ids;
  ids.reserve(nodes.size());
  for (const NodeInfo& node : nodes) ids.push_back(node.id);
  return ids;
}

}  // namespace quorumfs
