#include "server/stream_reactor.h"

#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "server/log.h"
#include "server/status.h"

namespace streamkv::server {
namespace {

// The metric reason of a refused open or resume.
absl::string_view RejectionReason(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kInvalidArgument: return "invalid_argument";
    case absl::StatusCode::kResourceExhausted: return "budget";
    case absl::StatusCode::kUnavailable: return "shutting_down";
    case absl::StatusCode::kNotFound: return "not_found";
    case absl::StatusCode::kPermissionDenied: return "permission_denied";
    default: return "other";
  }
}

}  // namespace

grpc::Status CheckBearerToken(const ServiceEnv& env, const grpc::CallbackServerContext& call) {
  if (env.bearer_token.empty()) return grpc::Status::OK;
  const auto& metadata = call.client_metadata();
  const auto it = metadata.find("authorization");
  if (it != metadata.end() &&
      absl::string_view(it->second.data(), it->second.size()) ==
          absl::StrCat("Bearer ", env.bearer_token)) {
    return grpc::Status::OK;
  }
  return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                      "missing or wrong 'authorization: Bearer <token>' metadata");
}

StreamReactor* StreamReactor::Start(const ServiceEnv* env, grpc::CallbackServerContext* call) {
  std::shared_ptr<StreamReactor> reactor(new StreamReactor(env, call));
  StreamReactor* raw = reactor.get();
  {
    absl::MutexLock lock(&raw->mu_);
    raw->self_ = std::move(reactor);
  }
  raw->Begin();
  return raw;
}

StreamReactor::StreamReactor(const ServiceEnv* env, grpc::CallbackServerContext* call)
    : env_(env), call_(call) {}

void StreamReactor::Begin() {
  Ops ops;
  {
    absl::MutexLock lock(&mu_);
    if (grpc::Status auth = CheckBearerToken(*env_, *call_); !auth.ok()) {
      FinishLocked(auth, ops);
    } else {
      ReadLocked(ops);
    }
    Run(ops);
  }
}

void StreamReactor::Run(const Ops& ops) {
  if (ops.write != nullptr) StartWrite(ops.write);
  if (ops.read) StartRead(&request_);
  if (ops.finish) Finish(*ops.finish);
}

// ---- gRPC reactions -----------------------------------------------------------------------------

void StreamReactor::OnReadDone(bool ok) {
  Ops ops;
  bool end_session = false;
  std::optional<v1::OpenSession> open;
  std::optional<v1::ResumeSession> resume;
  {
    absl::MutexLock lock(&mu_);
    reading_ = false;
    if (finish_status_) {
      // The call is ending; whatever the client still sends is ignored.
    } else if (!ok) {
      HandleReadsDoneLocked(ops);
    } else if (phase_ == Phase::kAwaitingOpen && request_.has_open()) {
      phase_ = Phase::kOpening;
      open = std::move(*request_.mutable_open());
    } else if (phase_ == Phase::kAwaitingOpen && request_.has_resume()) {
      phase_ = Phase::kOpening;
      resume = std::move(*request_.mutable_resume());
    } else {
      HandleRequestLocked(ops, end_session);
    }
    Run(ops);
  }
  if (open) {
    // Opening runs model code (policy construction, cache allocation): off the gRPC thread.
    std::shared_ptr<StreamReactor> self = shared_from_this();
    env_->scheduler->Run([self, open = std::move(*open)] { self->HandleOpen(open); });
  }
  if (resume) HandleResume(*resume);
  if (end_session) EndSession();
}

void StreamReactor::HandleRequestLocked(Ops& ops, bool& end_session) {
  if (phase_ == Phase::kAwaitingOpen) {
    FinishLocked(grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                              "the first message of a stream must be open or resume"),
                 ops);
    return;
  }
  const std::shared_ptr<Session> session = session_.lock();
  if (session == nullptr) {  // freed a moment ago; Detached is on its way
    FinishLocked(grpc::Status(grpc::StatusCode::ABORTED, "the session was closed"), ops);
    return;
  }
  if (request_.has_frame()) {
    absl::Status refusal;
    if (!env_->sessions->admitting()) refusal = absl::UnavailableError("the server is shutting down");
    const Session::EnqueueResult queued = session->Enqueue(
        shared_from_this(), std::move(*request_.mutable_frame()), refusal,
        env_->sessions->clock()->Now());
    if (queued.dropped) return;  // resumed elsewhere: Detached(ABORTED) is on its way
    ++outstanding_;
    if (queued.schedule) env_->scheduler->Schedule(session);
    if (!refusal.ok()) {
      // Shutting down: read no more, so the queues drain and the call ends UNAVAILABLE.
    } else if (queued.queue_full) {
      paused_ = true;
    } else {
      ReadLocked(ops);
    }
  } else if (request_.has_end()) {
    phase_ = Phase::kEnding;
    session->MarkEnding();
    if (request_.end().discard_queued()) {
      session->RejectQueued(absl::CancelledError("discarded by EndSession"));
    }
    end_session = MaybeEndLocked(ops);
  } else {
    DetachLocked();
    FinishLocked(grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                              "this stream already carries a session; send frame or end"),
                 ops);
  }
}

void StreamReactor::HandleReadsDoneLocked(Ops& ops) {
  if (call_->IsCancelled()) {
    CancelLocked(ops);
    return;
  }
  reads_done_ = true;
  switch (phase_) {
    case Phase::kAwaitingOpen:
      FinishLocked(grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                                "the stream closed before open or resume"),
                   ops);
      break;
    case Phase::kStreaming:
      if (outstanding_ == 0) {
        // The client is done without EndSession: the session stays, awaiting resume.
        DetachLocked();
        FinishLocked(grpc::Status::OK, ops);
      }
      break;
    default:  // opening: decided in Attached; ending: in FrameDone
      break;
  }
}

void StreamReactor::OnWriteDone(bool ok) {
  Ops ops;
  {
    absl::MutexLock lock(&mu_);
    writing_ = false;
    writes_.pop_front();
    if (!ok) {
      CancelLocked(ops);
    } else if (!writes_.empty()) {
      writing_ = true;
      ops.write = writes_.front().get();
    } else if (finish_status_ && !finish_called_) {
      finish_called_ = true;
      ops.finish = *finish_status_;
    }
    Run(ops);
  }
}

void StreamReactor::OnCancel() {
  Ops ops;
  {
    absl::MutexLock lock(&mu_);
    CancelLocked(ops);
    Run(ops);
  }
  env_->sessions->PublishSessionCounts();
}

void StreamReactor::CancelLocked(Ops& ops) {
  if (cancelled_) return;
  cancelled_ = true;
  // Answers not yet written cannot reach the client any more; the one being written completes.
  while (writes_.size() > (writing_ ? 1u : 0u)) writes_.pop_back();
  DetachLocked();
  FinishLocked(grpc::Status(grpc::StatusCode::CANCELLED, "the stream was cancelled"), ops);
}

void StreamReactor::OnDone() {
  std::shared_ptr<StreamReactor> self;
  absl::MutexLock lock(&mu_);
  phase_ = Phase::kFinished;
  // Invariant: once the call is done, no session points at it (a no-op on the usual paths).
  DetachLocked();
  self = std::move(self_);  // may be the last reference: released after the lock
}

// ---- Opening and resuming ----------------------------------------------------------------------

void StreamReactor::HandleOpen(const v1::OpenSession& open) {
  absl::StatusOr<std::shared_ptr<Session>> session = [&]() -> absl::StatusOr<std::shared_ptr<Session>> {
    absl::StatusOr<SessionSpec> spec = SpecFromOpen(open, *env_->models, env_->open_limits);
    if (!spec.ok()) return spec.status();
    SessionWork work;
    if (spec->frame_height > 0) {
      if (absl::Status s = OpenModelStream(*spec, spec->frame_height, spec->frame_width,
                                           env_->metrics, &work);
          !s.ok()) {
        return absl::InvalidArgumentError(absl::StrCat("frame_size: ", s.message()));
      }
    }
    return env_->sessions->Admit(*std::move(spec), std::move(work));
  }();
  if (!session.ok()) {
    if (session.status().code() == absl::StatusCode::kInvalidArgument) {
      env_->metrics->SessionRejected("invalid_argument");
    }
    Ops ops;
    {
      absl::MutexLock lock(&mu_);
      FinishLocked(ToGrpcStatus(session.status()), ops);
      Run(ops);
    }
    return;
  }
  bool abandoned = false;
  {
    absl::MutexLock lock(&mu_);
    abandoned = finish_status_.has_value();
    if (!abandoned) {
      session_ = *session;
      session_id_ = (*session)->id();
    }
  }
  if (abandoned) {
    // The client left before learning the session's id: nobody can resume it.
    env_->sessions->Remove((*session)->id(), EndReason::kEnd, grpc::Status::CANCELLED);
    return;
  }
  LogInfo("session ", (*session)->id(), " opened: model ", (*session)->spec().model->name,
          ", policy ", (*session)->spec().policy, ", budget ", (*session)->spec().budget_bytes,
          " bytes");
  Session::AttachResult attached =
      (*session)->Attach(shared_from_this(), std::nullopt, env_->sessions->clock()->Now());
  if (attached.closed) {
    Detached(grpc::Status(grpc::StatusCode::ABORTED, "the session was closed"));
    return;
  }
  Attached(std::move(attached.messages));
}

void StreamReactor::HandleResume(const v1::ResumeSession& resume) {
  absl::StatusOr<std::shared_ptr<Session>> session =
      env_->sessions->admitting()
          ? env_->sessions->FindAuthorized(resume.session_id(), resume.resume_token())
          : absl::UnavailableError("the server is shutting down");
  if (!session.ok()) {
    env_->metrics->SessionRejected(RejectionReason(session.status().code()));
    Ops ops;
    {
      absl::MutexLock lock(&mu_);
      FinishLocked(ToGrpcStatus(session.status()), ops);
      Run(ops);
    }
    return;
  }
  {
    absl::MutexLock lock(&mu_);
    session_ = *session;
    session_id_ = (*session)->id();
  }
  std::optional<uint64_t> last_received;
  if (resume.has_last_received_sequence()) last_received = resume.last_received_sequence();
  Session::AttachResult attached =
      (*session)->Attach(shared_from_this(), last_received, env_->sessions->clock()->Now());
  if (attached.closed) {
    env_->metrics->SessionRejected("not_found");
    Detached(grpc::Status(grpc::StatusCode::NOT_FOUND, "the session expired or was closed"));
    return;
  }
  if (attached.previous != nullptr) {
    attached.previous->Detached(
        grpc::Status(grpc::StatusCode::ABORTED, "the session was resumed on another stream"));
  }
  env_->metrics->SessionResumed();
  LogInfo("session ", (*session)->id(), " resumed");
  if (!attached.deferred) Attached(std::move(attached.messages));
}

// ---- SessionSink ---------------------------------------------------------------------------------

void StreamReactor::Attached(std::vector<std::shared_ptr<const v1::StreamResponse>> messages) {
  Ops ops;
  {
    absl::MutexLock lock(&mu_);
    if (finish_status_) {
      DetachLocked();  // the call ended while the session was being attached
    } else {
      for (auto& message : messages) PushLocked(std::move(message), ops);
      phase_ = Phase::kStreaming;
      if (reads_done_) {
        DetachLocked();
        FinishLocked(grpc::Status::OK, ops);
      } else {
        ReadLocked(ops);
      }
    }
    Run(ops);
  }
  env_->sessions->PublishSessionCounts();
}

void StreamReactor::FrameDone(std::shared_ptr<const v1::StreamResponse> response) {
  Ops ops;
  bool end_session = false;
  {
    absl::MutexLock lock(&mu_);
    --outstanding_;
    PushLocked(std::move(response), ops);
    if (phase_ == Phase::kEnding) {
      end_session = MaybeEndLocked(ops);
    } else if (reads_done_ && outstanding_ == 0 && !finish_status_) {
      DetachLocked();
      FinishLocked(grpc::Status::OK, ops);
    }
    Run(ops);
  }
  if (end_session) EndSession();
}

bool StreamReactor::MaybeEndLocked(Ops& ops) {
  if (outstanding_ > 0 || finish_status_) return false;
  const std::shared_ptr<Session> session = session_.lock();
  if (session == nullptr) return false;  // freed meanwhile: Detached ends the call
  auto ended = std::make_shared<v1::StreamResponse>();
  ended->mutable_ended()->set_frames_processed(session->frames_processed());
  PushLocked(std::move(ended), ops);
  return true;
}

void StreamReactor::EndSession() {
  std::string id;
  {
    absl::MutexLock lock(&mu_);
    id = session_id_;
  }
  // Detaches this stream with OK, which finishes the call after `ended` is written.
  if (env_->sessions->Remove(id, EndReason::kEnd, grpc::Status::OK)) {
    LogInfo("session ", id, " ended by the client");
  }
}

void StreamReactor::QueueSpace() {
  Ops ops;
  {
    absl::MutexLock lock(&mu_);
    if (paused_ && phase_ == Phase::kStreaming && env_->sessions->admitting()) {
      paused_ = false;
      ReadLocked(ops);
    }
    Run(ops);
  }
}

void StreamReactor::Detached(const grpc::Status& status) {
  Ops ops;
  {
    absl::MutexLock lock(&mu_);
    FinishLocked(status, ops);
    Run(ops);
  }
}

// ---- Locked helpers --------------------------------------------------------------------------------

void StreamReactor::DetachLocked() {
  if (const std::shared_ptr<Session> session = session_.lock()) {
    session->Detach(this, env_->sessions->clock()->Now());
  }
}

void StreamReactor::PushLocked(std::shared_ptr<const v1::StreamResponse> message, Ops& ops) {
  if (finish_status_ || cancelled_) return;
  writes_.push_back(std::move(message));
  if (!writing_) {
    writing_ = true;
    ops.write = writes_.front().get();
  }
}

void StreamReactor::ReadLocked(Ops& ops) {
  if (reading_ || reads_done_ || finish_status_) return;
  reading_ = true;
  ops.read = true;
}

void StreamReactor::FinishLocked(const grpc::Status& status, Ops& ops) {
  if (finish_status_) return;
  finish_status_ = status;
  phase_ = Phase::kFinished;
  if (!writing_) {
    finish_called_ = true;
    ops.finish = status;
  }
}

}  // namespace streamkv::server
