// `quorumfs status`: one screen on the cluster's health.
#pragma once

#include <string>

namespace quorumfs {

// Returns the process exit code: 0 when every replica set has a read and a write quorum,
// 2 otherwise, 8 on an operational error (bad cluster file).
int RunStatus(const std::string& cluster_file, bool json, double timeout_s);

}  // namespace quorumfs
