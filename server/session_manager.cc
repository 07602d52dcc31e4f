#include "server/session_manager.h"

#include <random>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "server/model_registry.h"

namespace streamkv::server {
namespace {

absl::string_view ReasonName(EndReason reason) {
  switch (reason) {
    case EndReason::kEnd: return "end";
    case EndReason::kCloseRpc: return "close_rpc";
    case EndReason::kIdle: return "idle";
    case EndReason::kExpired: return "expired";
    case EndReason::kShutdown: return "shutdown";
  }
  return "unknown";
}

// Compares without an early exit, so the time taken does not reveal a matching prefix.
bool ConstantTimeEquals(const std::string& a, const std::string& b) {
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}

}  // namespace

std::string RandomHexId() {
  // libstdc++'s random_device reads the kernel's entropy source (getrandom or /dev/urandom).
  std::random_device entropy;
  std::string hex;
  for (int i = 0; i < 4; ++i) hex += absl::StrFormat("%08x", entropy());
  return hex;
}

SessionManager::SessionManager(SessionManagerOptions options, KvBudget* budget,
                               ServerMetrics* metrics, Clock* clock)
    : options_(std::move(options)), budget_(budget), metrics_(metrics), clock_(clock) {}

absl::StatusOr<std::shared_ptr<Session>> SessionManager::Admit(SessionSpec spec,
                                                               SessionWork work) {
  std::shared_ptr<Session> session;
  {
    absl::MutexLock lock(&mu_);
    if (!admitting_) {
      metrics_->SessionRejected("shutting_down");
      return absl::UnavailableError("the server is shutting down");
    }
    if (static_cast<int64_t>(sessions_.size()) >= options_.max_sessions) {
      metrics_->SessionRejected("max_sessions");
      return absl::ResourceExhaustedError(
          absl::StrCat("the server holds its maximum of ", options_.max_sessions, " sessions"));
    }
    absl::StatusOr<KvBudget::Reservation> reservation = budget_->Reserve(spec.budget_bytes);
    if (!reservation.ok()) {
      metrics_->SessionRejected("budget");
      return reservation.status();
    }
    do {
      spec.id = RandomHexId();
    } while (sessions_.contains(spec.id));
    spec.resume_token = RandomHexId();

    v1::SessionOpened opened;
    opened.set_session_id(spec.id);
    opened.set_resume_token(spec.resume_token);
    opened.set_model(spec.model->name);
    opened.set_policy(spec.policy);
    opened.mutable_policy_params()->insert(spec.policy_params.begin(), spec.policy_params.end());
    opened.set_kv_budget_bytes(spec.budget_bytes);
    opened.set_max_queued_frames(static_cast<uint32_t>(options_.session_limits.max_queued_frames));
    opened.set_instance_id(options_.instance_id);
    opened.set_instance_address(options_.instance_address);
    metrics_->SessionOpened(spec.model->name, spec.policy);
    session = std::make_shared<Session>(std::move(spec), std::move(*reservation), std::move(work),
                                        std::move(opened), options_.session_limits, metrics_,
                                        clock_->Now());
    sessions_.emplace(session->id(), session);
  }
  return session;
}

absl::StatusOr<std::shared_ptr<Session>> SessionManager::Find(const std::string& id) const {
  absl::MutexLock lock(&mu_);
  const auto it = sessions_.find(id);
  if (it == sessions_.end()) {
    return absl::NotFoundError(
        absl::StrCat("session '", id, "' does not exist (never opened, ended, or expired)"));
  }
  return it->second;
}

absl::StatusOr<std::shared_ptr<Session>> SessionManager::FindAuthorized(
    const std::string& id, const std::string& resume_token) const {
  absl::StatusOr<std::shared_ptr<Session>> session = Find(id);
  if (!session.ok()) return session.status();
  if (!ConstantTimeEquals((*session)->spec().resume_token, resume_token)) {
    return absl::PermissionDeniedError(absl::StrCat("wrong resume token for session '", id, "'"));
  }
  return session;
}

std::vector<std::shared_ptr<Session>> SessionManager::List() const {
  absl::MutexLock lock(&mu_);
  std::vector<std::shared_ptr<Session>> sessions;
  for (const auto& [id, session] : sessions_) sessions.push_back(session);
  return sessions;
}

bool SessionManager::Remove(const std::string& id, EndReason reason, const grpc::Status& status) {
  std::shared_ptr<Session> session;
  {
    absl::MutexLock lock(&mu_);
    const auto it = sessions_.find(id);
    if (it == sessions_.end()) return false;
    session = std::move(it->second);
    sessions_.erase(it);
  }
  Free(std::move(session), reason, status);
  return true;
}

void SessionManager::Free(std::shared_ptr<Session> session, EndReason reason,
                          const grpc::Status& status) {
  for (const std::shared_ptr<SessionSink>& sink : session->DetachForever()) sink->Detached(status);
  if (reason == EndReason::kIdle || reason == EndReason::kExpired) {
    metrics_->SessionReaped(ReasonName(reason));
  } else {
    metrics_->SessionClosed(ReasonName(reason));
  }
  // The cache and the reservation go with the last reference: here, or when a worker finishes
  // the frame it is running.
  session.reset();
  PublishSessionCounts();
}

int SessionManager::ReapExpired() {
  const absl::Time now = clock_->Now();
  // Expiry is decided and the session taken out under one lock, so a resume cannot slip in
  // between (a resume that found the session before attaches to a closed one and is refused).
  std::vector<std::pair<std::shared_ptr<Session>, Session::Expiry>> expired;
  {
    absl::MutexLock lock(&mu_);
    for (auto it = sessions_.begin(); it != sessions_.end();) {
      const Session::Expiry expiry =
          it->second->CheckExpiry(now, options_.idle_timeout, options_.resume_grace);
      if (expiry == Session::Expiry::kNone) {
        ++it;
        continue;
      }
      expired.emplace_back(std::move(it->second), expiry);
      sessions_.erase(it++);
    }
  }
  const grpc::Status idle(grpc::StatusCode::DEADLINE_EXCEEDED,
                          absl::StrCat("session idle for more than ",
                                       absl::FormatDuration(options_.idle_timeout)));
  const grpc::Status gone(grpc::StatusCode::NOT_FOUND,
                          absl::StrCat("session not resumed within ",
                                       absl::FormatDuration(options_.resume_grace)));
  for (auto& [session, expiry] : expired) {
    const bool was_idle = expiry == Session::Expiry::kIdle;
    Free(std::move(session), was_idle ? EndReason::kIdle : EndReason::kExpired,
         was_idle ? idle : gone);
  }
  return static_cast<int>(expired.size());
}

void SessionManager::StopAdmitting() {
  absl::MutexLock lock(&mu_);
  admitting_ = false;
}

bool SessionManager::admitting() const {
  absl::MutexLock lock(&mu_);
  return admitting_;
}

void SessionManager::PublishSessionCounts() const {
  int64_t counts[3] = {0, 0, 0};
  for (const std::shared_ptr<Session>& session : List()) {
    ++counts[static_cast<int>(session->state())];
  }
  metrics_->SetSessions(counts[static_cast<int>(Session::State::kAttached)],
                        counts[static_cast<int>(Session::State::kDetached)],
                        counts[static_cast<int>(Session::State::kEnding)]);
}

}  // namespace streamkv::server
