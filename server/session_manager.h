// Admission, lookup and the one path that frees sessions.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <grpcpp/support/status.h>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/clock.h"
#include "server/kv_budget.h"
#include "server/metrics.h"
#include "server/session.h"

namespace streamkv::server {

struct SessionManagerOptions {
  int64_t max_sessions = 64;
  // An attached session with no frame for this long is freed (its stream ends DEADLINE_EXCEEDED).
  absl::Duration idle_timeout = absl::Minutes(10);
  // A detached session not resumed within this is freed.
  absl::Duration resume_grace = absl::Seconds(60);
  Session::Limits session_limits;
  std::string instance_id;       // SessionOpened.instance_id
  std::string instance_address;  // SessionOpened.instance_address
};

// Why a session was freed; each maps to a metric reason and, for an attached stream, a status.
enum class EndReason { kEnd, kCloseRpc, kIdle, kExpired, kShutdown };

// Owns every live session. Thread-safe.
class SessionManager {
 public:
  SessionManager(SessionManagerOptions options, KvBudget* budget, ServerMetrics* metrics,
                 Clock* clock);

  // Admits a session for `spec` (id and resume token are assigned here): UNAVAILABLE while
  // shutting down, RESOURCE_EXHAUSTED when max_sessions are open or the budget cannot hold
  // spec.budget_bytes (saying how much is free).
  absl::StatusOr<std::shared_ptr<Session>> Admit(SessionSpec spec, SessionWork work);
  // NOT_FOUND for an unknown (or expired) id, PERMISSION_DENIED for a wrong token.
  absl::StatusOr<std::shared_ptr<Session>> FindAuthorized(const std::string& id,
                                                          const std::string& resume_token) const;
  // NOT_FOUND for an unknown id.
  absl::StatusOr<std::shared_ptr<Session>> Find(const std::string& id) const;
  std::vector<std::shared_ptr<Session>> List() const;

  // Frees session `id`: the one path that does. Its attached stream, if any, ends with `status`;
  // its cache and budget share are returned once nobody works on it any more. False when `id`
  // was already gone.
  bool Remove(const std::string& id, EndReason reason, const grpc::Status& status);

  // Frees sessions idle past the idle timeout (their streams end DEADLINE_EXCEEDED) or detached
  // past the grace period; returns how many.
  int ReapExpired();
  // Refuses new sessions from now on (shutdown).
  void StopAdmitting();
  bool admitting() const;
  // Publishes the session-state gauges.
  void PublishSessionCounts() const;

  Clock* clock() const { return clock_; }
  const KvBudget& budget() const { return *budget_; }

 private:
  // The one path that frees a session, once it is out of sessions_: ends its stream with
  // `status`, counts it, and drops the manager's reference.
  void Free(std::shared_ptr<Session> session, EndReason reason, const grpc::Status& status);

  const SessionManagerOptions options_;
  KvBudget* const budget_;
  ServerMetrics* const metrics_;
  Clock* const clock_;

  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, std::shared_ptr<Session>> sessions_ ABSL_GUARDED_BY(mu_);
  bool admitting_ ABSL_GUARDED_BY(mu_) = true;
};

// A random 128-bit value as 32 hex digits, from the operating system's entropy source.
std::string RandomHexId();

}  // namespace streamkv::server
