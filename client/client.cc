#include "client/client.h"

#include <fstream>
#include <sstream>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace streamkv::client {

absl::Status FromGrpc(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
}

absl::Status SetPolicyParams(absl::string_view text, v1::OpenSession* open) {
  for (absl::string_view item : absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    const size_t eq = item.find('=');
    if (eq == absl::string_view::npos) {
      return absl::InvalidArgumentError(absl::StrCat("policy parameter '", item,
                                                     "' is not name=value"));
    }
    (*open->mutable_policy_params())[std::string(absl::StripAsciiWhitespace(item.substr(0, eq)))] =
        std::string(absl::StripAsciiWhitespace(item.substr(eq + 1)));
  }
  return absl::OkStatus();
}

SessionStream::~SessionStream() {
  if (!finished_) {
    context_->TryCancel();
    Finish().IgnoreError();
  }
}

bool SessionStream::Send(const v1::Frame& frame) {
  v1::StreamRequest request;
  *request.mutable_frame() = frame;
  return stream_->Write(request);
}

bool SessionStream::End(bool discard_queued) {
  v1::StreamRequest request;
  request.mutable_end()->set_discard_queued(discard_queued);
  return stream_->Write(request) && stream_->WritesDone();
}

bool SessionStream::CloseSend() { return stream_->WritesDone(); }

bool SessionStream::Read(v1::StreamResponse* response) { return stream_->Read(response); }

absl::Status SessionStream::Finish() {
  finished_ = true;
  return FromGrpc(stream_->Finish());
}

void SessionStream::Cancel() { context_->TryCancel(); }

absl::StatusOr<std::unique_ptr<Client>> Client::Connect(const ClientOptions& options) {
  std::shared_ptr<grpc::ChannelCredentials> credentials = grpc::InsecureChannelCredentials();
  if (!options.tls_ca_file.empty()) {
    std::ifstream in(options.tls_ca_file);
    if (!in) return absl::InvalidArgumentError(absl::StrCat("cannot read ", options.tls_ca_file));
    std::stringstream roots;
    roots << in.rdbuf();
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = roots.str();
    credentials = grpc::SslCredentials(ssl);
  }
  grpc::ChannelArguments arguments;
  arguments.SetMaxReceiveMessageSize(static_cast<int>(options.max_message_bytes));
  arguments.SetMaxSendMessageSize(-1);
  return std::unique_ptr<Client>(
      new Client(options, grpc::CreateCustomChannel(options.address, credentials, arguments)));
}

absl::StatusOr<std::unique_ptr<Client>> Client::WithAddress(const std::string& address) const {
  ClientOptions options = options_;
  options.address = address;
  return Connect(options);
}

Client::Client(ClientOptions options, std::shared_ptr<grpc::Channel> channel)
    : options_(std::move(options)),
      channel_(std::move(channel)),
      stub_(v1::StreamKv::NewStub(channel_)) {}

std::unique_ptr<grpc::ClientContext> Client::NewContext() const {
  auto context = std::make_unique<grpc::ClientContext>();
  if (!options_.bearer_token.empty()) {
    context->AddMetadata("authorization", "Bearer " + options_.bearer_token);
  }
  return context;
}

absl::StatusOr<std::unique_ptr<SessionStream>> Client::StartStream(
    const v1::StreamRequest& first) {
  std::unique_ptr<SessionStream> stream(new SessionStream());
  stream->context_ = NewContext();
  stream->stream_ = stub_->Stream(stream->context_.get());
  v1::StreamResponse response;
  if (!stream->stream_->Write(first) || !stream->stream_->Read(&response)) {
    stream->stream_->WritesDone();
    absl::Status status = stream->Finish();
    return status.ok() ? absl::UnavailableError("the stream ended before the session opened")
                       : status;
  }
  if (!response.has_opened()) {
    stream->context_->TryCancel();
    stream->Finish().IgnoreError();
    return absl::InternalError("the server's first answer was not SessionOpened");
  }
  stream->opened_ = std::move(*response.mutable_opened());
  return stream;
}

absl::StatusOr<std::unique_ptr<SessionStream>> Client::Open(const v1::OpenSession& open) {
  v1::StreamRequest request;
  *request.mutable_open() = open;
  return StartStream(request);
}

absl::StatusOr<std::unique_ptr<SessionStream>> Client::Resume(
    const std::string& session_id, const std::string& resume_token,
    std::optional<uint64_t> last_received_sequence) {
  v1::StreamRequest request;
  request.mutable_resume()->set_session_id(session_id);
  request.mutable_resume()->set_resume_token(resume_token);
  if (last_received_sequence) {
    request.mutable_resume()->set_last_received_sequence(*last_received_sequence);
  }
  return StartStream(request);
}

absl::StatusOr<v1::ServerDescription> Client::Describe() {
  v1::ServerDescription response;
  const grpc::Status status =
      stub_->DescribeServer(NewContext().get(), v1::DescribeServerRequest(), &response);
  if (!status.ok()) return FromGrpc(status);
  return response;
}

absl::StatusOr<v1::SessionInfo> Client::GetSession(const std::string& session_id) {
  v1::GetSessionRequest request;
  request.set_session_id(session_id);
  v1::SessionInfo response;
  const grpc::Status status = stub_->GetSession(NewContext().get(), request, &response);
  if (!status.ok()) return FromGrpc(status);
  return response;
}

absl::StatusOr<v1::ListSessionsResponse> Client::ListSessions() {
  v1::ListSessionsResponse response;
  const grpc::Status status =
      stub_->ListSessions(NewContext().get(), v1::ListSessionsRequest(), &response);
  if (!status.ok()) return FromGrpc(status);
  return response;
}

absl::StatusOr<v1::CloseSessionResponse> Client::CloseSession(const std::string& session_id,
                                                              const std::string& resume_token) {
  v1::CloseSessionRequest request;
  request.set_session_id(session_id);
  request.set_resume_token(resume_token);
  v1::CloseSessionResponse response;
  const grpc::Status status = stub_->CloseSession(NewContext().get(), request, &response);
  if (!status.ok()) return FromGrpc(status);
  return response;
}

}  // namespace streamkv::client
