// The streamkv.v1.StreamKv service: the Stream call and the unary session/server RPCs.
#pragma once

#include <grpcpp/grpcpp.h>

#include "server/service_env.h"
#include "streamkv/v1/streamkv.grpc.pb.h"

namespace streamkv::server {

// Thread-safe; handlers never block (model work runs on the scheduler).
class StreamKvService final : public v1::StreamKv::CallbackService {
 public:
  // `description` holds the static parts of DescribeServer's answer (budgets are filled per call).
  StreamKvService(const ServiceEnv* env, v1::ServerDescription description)
      : env_(env), description_(std::move(description)) {}

  grpc::ServerBidiReactor<v1::StreamRequest, v1::StreamResponse>* Stream(
      grpc::CallbackServerContext* context) override;
  grpc::ServerUnaryReactor* GetSession(grpc::CallbackServerContext* context,
                                       const v1::GetSessionRequest* request,
                                       v1::SessionInfo* response) override;
  grpc::ServerUnaryReactor* ListSessions(grpc::CallbackServerContext* context,
                                         const v1::ListSessionsRequest* request,
                                         v1::ListSessionsResponse* response) override;
  grpc::ServerUnaryReactor* CloseSession(grpc::CallbackServerContext* context,
                                         const v1::CloseSessionRequest* request,
                                         v1::CloseSessionResponse* response) override;
  grpc::ServerUnaryReactor* DescribeServer(grpc::CallbackServerContext* context,
                                           const v1::DescribeServerRequest* request,
                                           v1::ServerDescription* response) override;

 private:
  const ServiceEnv* const env_;
  const v1::ServerDescription description_;
};

}  // namespace streamkv::server
