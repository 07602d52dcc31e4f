// The C++ client library: a connection to a streamkv server, its unary RPCs, and session streams.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include <grpcpp/grpcpp.h>

#include "absl/status/statusor.h"
#include "streamkv/v1/streamkv.grpc.pb.h"

namespace streamkv::client {

struct ClientOptions {
  std::string address = "localhost:50051";  // host:port
  std::string bearer_token;                 // sent as "authorization: Bearer <token>" when set
  std::string tls_ca_file;                  // PEM roots; set to connect with TLS
  int64_t max_message_bytes = 256LL << 20;  // largest answer accepted
};

// One Stream call. Send and Read may run on two threads at once; the rest is for the owner.
class SessionStream {
 public:
  ~SessionStream();

  // The server's first answer.
  const v1::SessionOpened& opened() const { return opened_; }
  // False once the stream is broken (then Finish says why).
  bool Send(const v1::Frame& frame);
  // Sends EndSession and closes the sending side.
  bool End(bool discard_queued = false);
  // Closes the sending side without EndSession: the session stays on the server for resume.
  bool CloseSend();
  // The next answer; false when the stream is over.
  bool Read(v1::StreamResponse* response);
  // The call's status, once Read returned false.
  absl::Status Finish();
  // Cancels the call from any thread (a simulated disconnect).
  void Cancel();

 private:
  friend class Client;
  SessionStream() = default;
  std::unique_ptr<grpc::ClientContext> context_;
  std::unique_ptr<grpc::ClientReaderWriter<v1::StreamRequest, v1::StreamResponse>> stream_;
  v1::SessionOpened opened_;
  bool finished_ = false;
};

// A channel to one server. Thread-safe.
class Client {
 public:
  static absl::StatusOr<std::unique_ptr<Client>> Connect(const ClientOptions& options);

  const ClientOptions& options() const { return options_; }
  // A client for `address` with the same credentials (resume through a pod's own address).
  absl::StatusOr<std::unique_ptr<Client>> WithAddress(const std::string& address) const;

  // Opens a session; the call's status (INVALID_ARGUMENT naming the field, RESOURCE_EXHAUSTED,
  // ...) when the server refuses it.
  absl::StatusOr<std::unique_ptr<SessionStream>> Open(const v1::OpenSession& open);
  // Resumes a session on a new stream (NOT_FOUND, PERMISSION_DENIED, ... when refused).
  absl::StatusOr<std::unique_ptr<SessionStream>> Resume(
      const std::string& session_id, const std::string& resume_token,
      std::optional<uint64_t> last_received_sequence);

  absl::StatusOr<v1::ServerDescription> Describe();
  absl::StatusOr<v1::SessionInfo> GetSession(const std::string& session_id);
  absl::StatusOr<v1::ListSessionsResponse> ListSessions();
  absl::StatusOr<v1::CloseSessionResponse> CloseSession(const std::string& session_id,
                                                        const std::string& resume_token);

 private:
  Client(ClientOptions options, std::shared_ptr<grpc::Channel> channel);
  std::unique_ptr<grpc::ClientContext> NewContext() const;
  absl::StatusOr<std::unique_ptr<SessionStream>> StartStream(const v1::StreamRequest& first);

  const ClientOptions options_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::StreamKv::Stub> stub_;
};

// grpc::Status as absl::Status (same code and message).
absl::Status FromGrpc(const grpc::Status& status);

// Parses the command-line form "name=value,name=value" into open->policy_params (the server
// validates names and values). InvalidArgument naming an item without '='.
absl::Status SetPolicyParams(absl::string_view text, v1::OpenSession* open);

}  // namespace streamkv::client
