// The assembled server: gRPC service, health and reflection, sessions, scheduler, metrics.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <thread>

#include <grpcpp/grpcpp.h>

#include "absl/status/statusor.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "models/io/image.h"
#include "server/clock.h"
#include "server/frame_processor.h"
#include "server/kv_budget.h"
#include "server/metrics.h"
#include "server/metrics_endpoint.h"
#include "server/model_registry.h"
#include "server/scheduler.h"
#include "server/service.h"
#include "server/service_env.h"
#include "server/session_manager.h"

namespace streamkv::server {

struct ServerOptions {
  std::string listen_address = "0.0.0.0:50051";  // port 0 picks a free port
  std::string metrics_address = "0.0.0.0:9464";  // Prometheus /metrics; empty: none
  int workers = 1;                               // model worker threads
  int64_t kv_budget_bytes = 4LL << 30;           // all sessions together
  int64_t default_session_budget_bytes = 1LL << 30;
  int64_t max_session_budget_bytes = 4LL << 30;
  SessionManagerOptions sessions;
  models::ImageLimits image_limits;
  int64_t max_message_bytes = 64LL << 20;  // larger requests fail with RESOURCE_EXHAUSTED
  std::string tls_cert_file;               // PEM; with tls_key_file enables TLS
  std::string tls_key_file;
  std::string bearer_token;  // required on streamkv calls when set (not on health/reflection)
  // How often idle and expired sessions are reaped; zero: never (tests call ReapExpired).
  absl::Duration reap_interval = absl::Seconds(1);
  Clock* clock = Clock::Real();
  BuildInfo build;
};

// Thread-safe. Start → (serve) → Shutdown; the destructor shuts down without a drain.
class Server {
 public:
  static absl::StatusOr<std::unique_ptr<Server>> Start(ServerOptions options,
                                                       ModelRegistry models);
  ~Server();

  int port() const { return port_; }
  int metrics_port() const { return metrics_port_; }

  // Graceful shutdown: refuses new sessions and frames (health turns NOT_SERVING), answers the
  // frames already queued for up to `drain`, then ends every stream with UNAVAILABLE, frees
  // every session and stops. Idempotent.
  void Shutdown(absl::Duration drain);

  SessionManager& sessions() { return *sessions_; }

 private:
  Server(ServerOptions options, ModelRegistry models);
  absl::Status Build();
  v1::ServerDescription Describe() const;
  void ReapLoop();

  const ServerOptions options_;
  const ModelRegistry models_;
  // Destroyed in reverse order: the gRPC server first, then the workers, then the sessions.
  std::unique_ptr<ServerMetrics> metrics_;
  std::unique_ptr<KvBudget> budget_;
  std::unique_ptr<SessionManager> sessions_;
  std::unique_ptr<FrameProcessor> processor_;
  std::unique_ptr<Scheduler> scheduler_;
  ServiceEnv env_;
  std::unique_ptr<StreamKvService> service_;
  std::unique_ptr<grpc::Server> grpc_server_;
  std::unique_ptr<MetricsEndpoint> metrics_endpoint_;
  int port_ = 0;
  int metrics_port_ = 0;
  absl::Notification stop_reaper_;
  std::thread reaper_;
  absl::Mutex shutdown_mu_;
  bool shut_down_ ABSL_GUARDED_BY(shutdown_mu_) = false;
};

}  // namespace streamkv::server
