#include "server/server.h"

#include <fstream>
#include <sstream>
#include <utility>

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "cache/policy_factory.h"
#include "server/log.h"

namespace streamkv::server {
namespace {

constexpr char kServiceName[] = "streamkv.v1.StreamKv";

absl::StatusOr<std::string> ReadFile(const std::string& path, absl::string_view flag) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::InvalidArgumentError(absl::StrCat(flag, ": cannot read ", path));
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> Credentials(const ServerOptions& o) {
  if (o.tls_cert_file.empty() != o.tls_key_file.empty()) {
    return absl::InvalidArgumentError("tls_cert_file and tls_key_file go together");
  }
  if (o.tls_cert_file.empty()) return grpc::InsecureServerCredentials();
  absl::StatusOr<std::string> cert = ReadFile(o.tls_cert_file, "tls_cert_file");
  if (!cert.ok()) return cert.status();
  absl::StatusOr<std::string> key = ReadFile(o.tls_key_file, "tls_key_file");
  if (!key.ok()) return key.status();
  grpc::SslServerCredentialsOptions ssl;
  ssl.pem_key_cert_pairs.push_back({*key, *cert});
  return grpc::SslServerCredentials(ssl);
}

}  // namespace

absl::StatusOr<std::unique_ptr<Server>> Server::Start(ServerOptions options,
                                                      ModelRegistry models) {
  if (models.models().empty()) return absl::InvalidArgumentError("no model to serve");
  if (options.workers < 1) return absl::InvalidArgumentError("workers must be at least 1");
  if (options.default_session_budget_bytes > options.max_session_budget_bytes) {
    return absl::InvalidArgumentError(
        "the default session budget exceeds the maximum session budget");
  }
  std::unique_ptr<Server> server(new Server(std::move(options), std::move(models)));
  if (absl::Status built = server->Build(); !built.ok()) return built;
  return server;
}

Server::Server(ServerOptions options, ModelRegistry models)
    : options_(std::move(options)), models_(std::move(models)) {}

absl::Status Server::Build() {
  std::vector<std::string> policies;
  for (const cache::PolicyDescriptor* policy : cache::RegisteredPolicies()) {
    policies.push_back(policy->name);
  }
  metrics_ = std::make_unique<ServerMetrics>(options_.build, models_.names(), policies);
  budget_ = std::make_unique<KvBudget>(
      options_.kv_budget_bytes, [metrics = metrics_.get(), total = options_.kv_budget_bytes](
                                    int64_t reserved) { metrics->SetKvBudget(total, reserved); });
  metrics_->SetKvBudget(options_.kv_budget_bytes, 0);
  sessions_ = std::make_unique<SessionManager>(options_.sessions, budget_.get(), metrics_.get(),
                                               options_.clock);
  processor_ = std::make_unique<FrameProcessor>(FrameProcessorOptions{options_.image_limits},
                                                metrics_.get(), options_.clock);
  scheduler_ = std::make_unique<Scheduler>(
      options_.workers,
      [processor = processor_.get()](const std::shared_ptr<Session>& session) {
        return processor->RunOne(session);
      });
  env_.models = &models_;
  env_.sessions = sessions_.get();
  env_.scheduler = scheduler_.get();
  env_.metrics = metrics_.get();
  env_.open_limits = {options_.default_session_budget_bytes, options_.max_session_budget_bytes,
                      options_.image_limits};
  env_.bearer_token = options_.bearer_token;
  service_ = std::make_unique<StreamKvService>(&env_, Describe());

  absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> credentials = Credentials(options_);
  if (!credentials.ok()) return credentials.status();
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(options_.listen_address, *credentials, &port_);
  builder.RegisterService(service_.get());
  builder.SetMaxReceiveMessageSize(static_cast<int>(options_.max_message_bytes));
  builder.SetMaxSendMessageSize(-1);
  grpc_server_ = builder.BuildAndStart();
  if (grpc_server_ == nullptr || port_ == 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen on ", options_.listen_address, " (address in use?)"));
  }
  grpc_server_->GetHealthCheckService()->SetServingStatus(true);
  grpc_server_->GetHealthCheckService()->SetServingStatus(kServiceName, true);

  if (!options_.metrics_address.empty()) {
    absl::StatusOr<std::unique_ptr<MetricsEndpoint>> endpoint =
        MetricsEndpoint::Start(options_.metrics_address, metrics_->registry());
    if (!endpoint.ok()) return endpoint.status();
    metrics_endpoint_ = std::move(*endpoint);
    metrics_port_ = metrics_endpoint_->port();
  }
  if (options_.reap_interval > absl::ZeroDuration()) reaper_ = std::thread([this] { ReapLoop(); });
  return absl::OkStatus();
}

v1::ServerDescription Server::Describe() const {
  v1::ServerDescription d;
  d.set_version(options_.build.version);
  d.set_device(options_.build.device);
  d.set_default_model(models_.models().front()->name);
  d.set_instance_id(options_.sessions.instance_id);
  for (const auto& model : models_.models()) *d.add_models() = model->description;
  for (const cache::PolicyDescriptor* policy : cache::RegisteredPolicies()) {
    v1::PolicyDescription& p = *d.add_policies();
    p.set_name(policy->name);
    p.set_summary(policy->summary);
    for (const cache::ParamSpec& spec : policy->params) {
      v1::ParamDescription& param = *p.add_params();
      param.set_name(spec.name);
      param.set_type(std::string(cache::ParamTypeName(spec.type)));
      param.set_default_value(spec.default_value);
      param.set_min(spec.min);
      param.set_max(spec.max);
      param.set_min_exclusive(spec.min_exclusive);
      for (const std::string& choice : spec.choices) param.add_choices(choice);
      param.set_help(spec.help);
    }
  }
  v1::Budgets& budgets = *d.mutable_budgets();
  budgets.set_kv_budget_bytes(options_.kv_budget_bytes);
  budgets.set_default_session_budget_bytes(options_.default_session_budget_bytes);
  budgets.set_max_session_budget_bytes(options_.max_session_budget_bytes);
  v1::Limits& limits = *d.mutable_limits();
  limits.set_max_message_bytes(options_.max_message_bytes);
  limits.set_max_image_width(options_.image_limits.max_width);
  limits.set_max_image_height(options_.image_limits.max_height);
  limits.set_max_queued_frames(
      static_cast<uint32_t>(options_.sessions.session_limits.max_queued_frames));
  limits.set_replay_frames(static_cast<uint32_t>(options_.sessions.session_limits.replay_frames));
  limits.set_idle_timeout_seconds(absl::ToDoubleSeconds(options_.sessions.idle_timeout));
  limits.set_resume_grace_seconds(absl::ToDoubleSeconds(options_.sessions.resume_grace));
  limits.set_max_sessions(static_cast<uint32_t>(options_.sessions.max_sessions));
  return d;
}

void Server::ReapLoop() {
  while (!stop_reaper_.WaitForNotificationWithTimeout(options_.reap_interval)) {
    if (int reaped = sessions_->ReapExpired(); reaped > 0) {
      LogInfo("reaped ", reaped, " idle or expired session(s)");
    }
    sessions_->PublishSessionCounts();
  }
}

void Server::Shutdown(absl::Duration drain) {
  {
    absl::MutexLock lock(&shutdown_mu_);
    if (std::exchange(shut_down_, true)) return;
  }
  LogInfo("shutting down: no new sessions; answering queued frames for up to ",
          absl::FormatDuration(drain));
  sessions_->StopAdmitting();
  grpc_server_->GetHealthCheckService()->SetServingStatus(false);
  const bool drained = scheduler_->WaitIdle(absl::Now() + drain);
  if (!drained) LogWarning("drain deadline passed with frames still queued");
  const grpc::Status unavailable(grpc::StatusCode::UNAVAILABLE, "the server is shutting down");
  for (const std::shared_ptr<Session>& session : sessions_->List()) {
    sessions_->Remove(session->id(), EndReason::kShutdown, unavailable);
  }
  // Streams were just finished; give their last writes a moment, then cancel whatever is left.
  grpc_server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  scheduler_->Stop();
  stop_reaper_.Notify();
  if (reaper_.joinable()) reaper_.join();
  LogInfo("shut down");
}

Server::~Server() {
  if (grpc_server_ != nullptr) Shutdown(absl::ZeroDuration());
}

}  // namespace streamkv::server
