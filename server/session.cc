#include "server/session.h"

#include <utility>

#include "absl/strings/str_cat.h"

namespace streamkv::server {
namespace {

int64_t UnixMillis(absl::Time t) { return absl::ToUnixMillis(t); }

}  // namespace

uint64_t AnswerSequence(const v1::StreamResponse& response) {
  return response.has_result() ? response.result().sequence() : response.error().sequence();
}

Session::Session(SessionSpec spec, KvBudget::Reservation reservation, SessionWork work,
                 v1::SessionOpened opened, Limits limits, ServerMetrics* metrics, absl::Time now)
    : spec_(std::move(spec)),
      opened_(std::move(opened)),
      limits_(limits),
      metrics_(metrics),
      opened_at_(now),
      reservation_(std::move(reservation)),
      work_(std::move(work)),
      last_activity_(now) {
  cache_.set_budget_bytes(spec_.budget_bytes);
}

Session::~Session() {
  absl::MutexLock lock(&mu_);
  DropQueueLocked();
}

void Session::DropQueueLocked() {
  metrics_->AddQueuedFrames(-static_cast<int64_t>(queue_.size()));
  queue_.clear();
}

std::vector<std::shared_ptr<const v1::StreamResponse>> Session::AttachMessagesLocked(
    std::optional<uint64_t> last_received_sequence, bool resumed) {
  auto opened = std::make_shared<v1::StreamResponse>();
  v1::SessionOpened& o = *opened->mutable_opened();
  o = opened_;
  o.set_resumed(resumed);
  o.set_frames_processed(frames_processed_);
  if (last_processed_sequence_) o.set_last_processed_sequence(*last_processed_sequence_);
  std::vector<std::shared_ptr<const v1::StreamResponse>> messages = {std::move(opened)};
  if (last_received_sequence) {
    for (const auto& answer : replay_) {
      if (AnswerSequence(*answer) > *last_received_sequence) messages.push_back(answer);
    }
  }
  // Frames queued on an earlier stream were dropped, so the client resends from the last one
  // processed.
  last_accepted_sequence_ = last_processed_sequence_;
  attached_once_ = true;
  return messages;
}

Session::AttachResult Session::Attach(std::shared_ptr<SessionSink> sink,
                                      std::optional<uint64_t> last_received_sequence,
                                      absl::Time now) {
  absl::MutexLock lock(&mu_);
  AttachResult result;
  if (closed_) {
    result.closed = true;
    return result;
  }
  result.previous = std::exchange(sink_, nullptr);
  if (pending_attach_) {
    result.previous = std::move(pending_attach_->sink);
    pending_attach_.reset();
  }
  DropQueueLocked();
  last_activity_ = now;
  if (busy_) {
    pending_attach_ = PendingAttach{std::move(sink), last_received_sequence};
    result.deferred = true;
    return result;
  }
  result.messages = AttachMessagesLocked(last_received_sequence, attached_once_);
  sink_ = std::move(sink);
  return result;
}

bool Session::Detach(const SessionSink* sink, absl::Time now) {
  absl::MutexLock lock(&mu_);
  if (pending_attach_ && pending_attach_->sink.get() == sink) {
    pending_attach_.reset();
  } else if (sink_ != nullptr && sink_.get() == sink) {
    sink_.reset();
  } else {
    return false;
  }
  DropQueueLocked();
  ending_ = false;
  last_activity_ = now;
  return true;
}

std::vector<std::shared_ptr<SessionSink>> Session::DetachForever() {
  absl::MutexLock lock(&mu_);
  closed_ = true;
  DropQueueLocked();
  std::vector<std::shared_ptr<SessionSink>> sinks;
  if (sink_ != nullptr) sinks.push_back(std::exchange(sink_, nullptr));
  if (pending_attach_) sinks.push_back(std::move(pending_attach_->sink));
  pending_attach_.reset();
  return sinks;
}

Session::EnqueueResult Session::Enqueue(std::shared_ptr<SessionSink> sink, v1::Frame frame,
                                        absl::Status refusal, absl::Time now) {
  absl::MutexLock lock(&mu_);
  EnqueueResult result;
  if (sink == nullptr || sink != sink_) {
    result.dropped = true;
    return result;
  }
  const uint64_t sequence = frame.sequence();
  if (refusal.ok() && last_accepted_sequence_) {
    if (sequence == *last_accepted_sequence_) {
      refusal = absl::AlreadyExistsError(
          absl::StrCat("frame sequence ", sequence, " was already received"));
    } else if (sequence < *last_accepted_sequence_) {
      refusal = absl::OutOfRangeError(absl::StrCat("frame sequence ", sequence,
                                                   " is not after the last accepted sequence ",
                                                   *last_accepted_sequence_));
    }
  }
  if (refusal.ok()) {
    last_accepted_sequence_ = sequence;
  } else {
    frame.clear_image();  // only its sequence number is needed to answer it
  }
  queue_.push_back(QueuedFrame{std::move(frame), std::move(refusal), std::move(sink),
                               std::chrono::steady_clock::now()});
  metrics_->AddQueuedFrames(1);
  last_activity_ = now;
  result.schedule = !std::exchange(scheduled_, true);
  result.queue_full = static_cast<int64_t>(queue_.size()) >= limits_.max_queued_frames;
  return result;
}

void Session::RejectQueued(const absl::Status& status) {
  absl::MutexLock lock(&mu_);
  for (QueuedFrame& frame : queue_) {
    if (frame.rejection.ok()) frame.rejection = status;
    frame.frame.clear_image();
  }
}

void Session::MarkEnding() {
  absl::MutexLock lock(&mu_);
  ending_ = true;
}

std::optional<QueuedFrame> Session::BeginFrame(SessionWork** work) {
  absl::MutexLock lock(&mu_);
  if (queue_.empty()) {
    scheduled_ = false;
    return std::nullopt;
  }
  QueuedFrame frame = std::move(queue_.front());
  queue_.pop_front();
  metrics_->AddQueuedFrames(-1);
  busy_ = true;
  *work = &work_;
  return frame;
}

Session::Completion Session::EndFrame(const QueuedFrame& frame,
                                      std::shared_ptr<const v1::StreamResponse> answer,
                                      bool processed, const v1::CacheState* cache,
                                      absl::Time now) {
  absl::MutexLock lock(&mu_);
  busy_ = false;
  last_activity_ = now;
  if (processed) {
    ++frames_processed_;
    last_processed_sequence_ = frame.frame.sequence();
  }
  if (cache != nullptr) cache_ = *cache;
  if (limits_.replay_frames > 0) {
    replay_.push_back(answer);
    if (static_cast<int64_t>(replay_.size()) > limits_.replay_frames) replay_.pop_front();
  }
  Completion completion;
  if (sink_ != nullptr && frame.origin == sink_) completion.deliver_to = sink_;
  if (pending_attach_) {
    completion.attach_messages =
        AttachMessagesLocked(pending_attach_->last_received_sequence, attached_once_);
    sink_ = std::move(pending_attach_->sink);
    completion.attached = sink_;
    pending_attach_.reset();
  }
  completion.reschedule = !queue_.empty();
  if (!completion.reschedule) scheduled_ = false;
  return completion;
}

Session::Expiry Session::CheckExpiry(absl::Time now, absl::Duration idle_timeout,
                                     absl::Duration grace) const {
  absl::MutexLock lock(&mu_);
  if (busy_ || !queue_.empty() || closed_) return Expiry::kNone;
  const bool attached = sink_ != nullptr || pending_attach_.has_value();
  if (attached) return now - last_activity_ >= idle_timeout ? Expiry::kIdle : Expiry::kNone;
  return now - last_activity_ >= grace ? Expiry::kExpired : Expiry::kNone;
}

bool Session::AwaitQuiet(absl::Time deadline) const {
  absl::MutexLock lock(&mu_);
  auto quiet = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) {
    return sink_ == nullptr && !pending_attach_ && !busy_ && queue_.empty();
  };
  return mu_.AwaitWithDeadline(absl::Condition(&quiet), deadline);
}

Session::State Session::state() const {
  absl::MutexLock lock(&mu_);
  return StateLocked();
}

Session::State Session::StateLocked() const {
  if (sink_ == nullptr && !pending_attach_) return State::kDetached;
  return ending_ ? State::kEnding : State::kAttached;
}

uint64_t Session::frames_processed() const {
  absl::MutexLock lock(&mu_);
  return frames_processed_;
}

v1::SessionInfo Session::Info() const {
  v1::SessionInfo info;
  info.set_session_id(spec_.id);
  info.set_model(opened_.model());
  info.set_policy(spec_.policy);
  info.mutable_policy_params()->insert(spec_.policy_params.begin(), spec_.policy_params.end());
  info.set_label(spec_.label);
  info.set_opened_unix_ms(UnixMillis(opened_at_));
  absl::MutexLock lock(&mu_);
  switch (StateLocked()) {
    case State::kAttached: info.set_state(v1::SessionInfo::STATE_ATTACHED); break;
    case State::kDetached: info.set_state(v1::SessionInfo::STATE_DETACHED); break;
    case State::kEnding: info.set_state(v1::SessionInfo::STATE_ENDING); break;
  }
  info.set_frames_processed(frames_processed_);
  if (last_processed_sequence_) info.set_last_processed_sequence(*last_processed_sequence_);
  info.set_queued_frames(static_cast<uint32_t>(queue_.size()));
  *info.mutable_cache() = cache_;
  info.set_last_activity_unix_ms(UnixMillis(last_activity_));
  return info;
}

}  // namespace streamkv::server
