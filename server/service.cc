#include "server/service.h"

#include "absl/strings/str_cat.h"
#include "server/log.h"
#include "server/status.h"
#include "server/stream_reactor.h"

namespace streamkv::server {
namespace {

// Answers a unary call with `status`.
grpc::ServerUnaryReactor* Reply(grpc::CallbackServerContext* context, const grpc::Status& status) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(status);
  return reactor;
}

}  // namespace

grpc::ServerBidiReactor<v1::StreamRequest, v1::StreamResponse>* StreamKvService::Stream(
    grpc::CallbackServerContext* context) {
  return StreamReactor::Start(env_, context);
}

grpc::ServerUnaryReactor* StreamKvService::GetSession(grpc::CallbackServerContext* context,
                                                      const v1::GetSessionRequest* request,
                                                      v1::SessionInfo* response) {
  if (grpc::Status auth = CheckBearerToken(*env_, *context); !auth.ok()) return Reply(context, auth);
  absl::StatusOr<std::shared_ptr<Session>> session = env_->sessions->Find(request->session_id());
  if (!session.ok()) return Reply(context, ToGrpcStatus(session.status()));
  *response = (*session)->Info();
  return Reply(context, grpc::Status::OK);
}

grpc::ServerUnaryReactor* StreamKvService::ListSessions(grpc::CallbackServerContext* context,
                                                        const v1::ListSessionsRequest*,
                                                        v1::ListSessionsResponse* response) {
  if (grpc::Status auth = CheckBearerToken(*env_, *context); !auth.ok()) return Reply(context, auth);
  for (const std::shared_ptr<Session>& session : env_->sessions->List()) {
    *response->add_sessions() = session->Info();
  }
  return Reply(context, grpc::Status::OK);
}

grpc::ServerUnaryReactor* StreamKvService::CloseSession(grpc::CallbackServerContext* context,
                                                        const v1::CloseSessionRequest* request,
                                                        v1::CloseSessionResponse* response) {
  if (grpc::Status auth = CheckBearerToken(*env_, *context); !auth.ok()) return Reply(context, auth);
  absl::StatusOr<std::shared_ptr<Session>> session =
      env_->sessions->FindAuthorized(request->session_id(), request->resume_token());
  if (!session.ok()) return Reply(context, ToGrpcStatus(session.status()));
  response->set_frames_processed((*session)->frames_processed());
  env_->sessions->Remove(request->session_id(), EndReason::kCloseRpc,
                         grpc::Status(grpc::StatusCode::ABORTED,
                                      "the session was closed by CloseSession"));
  LogInfo("session ", request->session_id(), " closed by CloseSession");
  return Reply(context, grpc::Status::OK);
}

grpc::ServerUnaryReactor* StreamKvService::DescribeServer(grpc::CallbackServerContext* context,
                                                          const v1::DescribeServerRequest*,
                                                          v1::ServerDescription* response) {
  if (grpc::Status auth = CheckBearerToken(*env_, *context); !auth.ok()) return Reply(context, auth);
  *response = description_;
  const KvBudget& budget = env_->sessions->budget();
  v1::Budgets& budgets = *response->mutable_budgets();
  budgets.set_kv_reserved_bytes(budget.reserved());
  int64_t in_use = 0;
  for (const std::shared_ptr<Session>& session : env_->sessions->List()) {
    in_use += session->Info().cache().bytes();
  }
  budgets.set_kv_in_use_bytes(in_use);
  return Reply(context, grpc::Status::OK);
}

}  // namespace streamkv::server
