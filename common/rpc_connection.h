// RpcConnection: one Cap'n Proto two-party connection with quorumfs's message limits on the
// reading side (both client and server use it). The largest legal message is a 16 MiB chunk
// plus headers; anything larger is refused by the reader ("Message is too large") and the
// connection is closed.
#pragma once

#include <capnp/message.h>
#include <capnp/rpc-twoparty.h>
#include <kj/async-io.h>

namespace quorumfs {

constexpr uint64_t kMaxMessageBytes = 17 * 1024 * 1024;

capnp::ReaderOptions RpcReaderOptions();

class RpcConnection {
 public:
  // Server side: serves `bootstrap` on `stream`.
  RpcConnection(kj::Own<kj::AsyncIoStream> stream, capnp::Capability::Client bootstrap);
  // Client side. `options` other than the default is for tests that must send what a normal
  // client refuses to (a message over the limit).
  explicit RpcConnection(kj::Own<kj::AsyncIoStream> stream,
                         capnp::ReaderOptions options = RpcReaderOptions());

  // Client side: the server's bootstrap capability.
  capnp::Capability::Client Bootstrap();
  // Resolves when the peer disconnects or the connection fails.
  kj::Promise<void> OnDisconnect() { return network_.onDisconnect(); }

 private:
  kj::Own<kj::AsyncIoStream> stream_;
  capnp::TwoPartyVatNetwork network_;
  capnp::RpcSystem<capnp::rpc::twoparty::VatId> rpc_;
};

}  // namespace quorumfs
