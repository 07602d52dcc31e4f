// What the gRPC handlers share: the server's components, read-only after start.
#pragma once

#include <string>

#include "server/metrics.h"
#include "server/model_registry.h"
#include "server/scheduler.h"
#include "server/session_manager.h"
#include "server/session_open.h"

namespace streamkv::server {

struct ServiceEnv {
  const ModelRegistry* models = nullptr;
  SessionManager* sessions = nullptr;
  Scheduler* scheduler = nullptr;
  ServerMetrics* metrics = nullptr;
  OpenLimits open_limits;
  // Expected "authorization: Bearer <token>" metadata on every streamkv call; empty: none.
  std::string bearer_token;
};

}  // namespace streamkv::server
