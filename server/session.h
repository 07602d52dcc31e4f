// A session: one client's model stream, KV cache and frame queue, living across streams.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <grpcpp/support/status.h>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "models/model.h"
#include "server/kv_budget.h"
#include "server/metrics.h"
#include "streamkv/v1/streamkv.pb.h"

namespace streamkv::server {

struct ServedModel;

// The stream a session answers on (implemented by the gRPC stream reactor). Every method may be
// called from any thread and must not block.
class SessionSink {
 public:
  virtual ~SessionSink() = default;
  // The session is now attached to this stream: `messages` are `opened` then replayed results,
  // to be sent before anything else. Called once per attachment.
  virtual void Attached(std::vector<std::shared_ptr<const v1::StreamResponse>> messages) = 0;
  // The answer to a frame this stream enqueued; answers arrive in enqueue order.
  virtual void FrameDone(std::shared_ptr<const v1::StreamResponse> response) = 0;
  // A frame this stream enqueued left the queue: the stream may read again.
  virtual void QueueSpace() = 0;
  // The session left this stream for good (ended, closed, resumed elsewhere, reaped, shutdown):
  // end the call with `status` once the messages already handed over are sent.
  virtual void Detached(const grpc::Status& status) = 0;
};

// What a session was opened with; fixed for its life.
struct SessionSpec {
  std::string id;
  std::string resume_token;
  std::string label;
  const ServedModel* model = nullptr;
  std::string policy;
  cache::PolicyParams policy_params;  // with defaults filled in
  std::vector<std::string> outputs;   // output names to return, in the model's order
  v1::TensorDtype dtype = v1::TENSOR_DTYPE_FLOAT32;
  int64_t budget_bytes = 0;
  int64_t frame_height = 0;  // 0 until known (from the open or the first frame)
  int64_t frame_width = 0;
};

// A frame received on a stream and waiting for a worker. A frame with a non-OK `rejection` is
// answered with that error in its turn, so answers keep the order of frames.
struct QueuedFrame {
  v1::Frame frame;
  absl::Status rejection;
  std::shared_ptr<SessionSink> origin;
  std::chrono::steady_clock::time_point received;
};

// The per-session state the frame worker uses; see Session::BeginFrame.
struct SessionWork {
  std::unique_ptr<models::StreamState> stream;  // null until the frame size is known
  std::unique_ptr<ServerMetrics::SessionCacheUsage> cache_usage;
  int64_t frame_height = 0;
  int64_t frame_width = 0;
  bool protected_overflow_logged = false;  // the overflow is logged once per session
};

// Owned by the SessionManager (and briefly by whoever is working on it). Thread-safe; the
// SessionWork is used only by the one worker that holds the session busy (BeginFrame..EndFrame).
class Session {
 public:
  struct Limits {
    int64_t max_queued_frames = 8;
    int64_t replay_frames = 4;
  };

  // `opened` holds the static fields of every SessionOpened this session sends.
  Session(SessionSpec spec, KvBudget::Reservation reservation, SessionWork work,
          v1::SessionOpened opened, Limits limits, ServerMetrics* metrics, absl::Time now);
  ~Session();

  const SessionSpec& spec() const { return spec_; }
  const std::string& id() const { return spec_.id; }

  // Attaches `sink`. A previously attached sink is returned (the caller detaches it with
  // ABORTED) and its queued frames are dropped. When a worker is busy with this session the
  // attachment completes when the frame ends (EndFrame); otherwise now: the returned messages
  // are handed to sink->Attached by the caller.
  struct AttachResult {
    bool closed = false;  // the session was freed meanwhile: nothing attached
    std::shared_ptr<SessionSink> previous;
    bool deferred = false;
    std::vector<std::shared_ptr<const v1::StreamResponse>> messages;
  };
  AttachResult Attach(std::shared_ptr<SessionSink> sink,
                      std::optional<uint64_t> last_received_sequence, absl::Time now);
  // Detaches `sink` if it is (or is about to be) attached, dropping its queued frames; the session
  // then awaits resume. False when `sink` was not attached.
  bool Detach(const SessionSink* sink, absl::Time now);
  // Removes every sink for good (the caller ends them with Detached) and drops queued frames.
  // Further frames are refused.
  std::vector<std::shared_ptr<SessionSink>> DetachForever();

  // Queues a frame from `sink`. Sequence errors and refusals become rejections answered in turn.
  // A frame from a stream that no longer carries the session (it was resumed elsewhere a moment
  // ago) is dropped: that stream is being ended.
  struct EnqueueResult {
    bool dropped = false;
    bool schedule = false;    // the caller hands the session to the scheduler
    bool queue_full = false;  // the caller stops reading until QueueSpace
  };
  EnqueueResult Enqueue(std::shared_ptr<SessionSink> sink, v1::Frame frame, absl::Status refusal,
                        absl::Time now);
  // Turns every queued frame into a rejection with `status` (EndSession.discard_queued).
  void RejectQueued(const absl::Status& status);
  // The client sent EndSession; for SessionInfo and the sessions gauge.
  void MarkEnding();

  // The worker's side. BeginFrame takes the next queued frame (nullopt: none) and the work state;
  // EndFrame records its answer and says where to deliver it and whether more frames wait.
  std::optional<QueuedFrame> BeginFrame(SessionWork** work);
  struct Completion {
    std::shared_ptr<SessionSink> deliver_to;  // the frame's stream, if still attached
    std::shared_ptr<SessionSink> attached;    // a deferred attachment that completed now
    std::vector<std::shared_ptr<const v1::StreamResponse>> attach_messages;
    bool reschedule = false;
  };
  // `processed`: the frame went through the model (it counts in frames_processed).
  Completion EndFrame(const QueuedFrame& frame, std::shared_ptr<const v1::StreamResponse> answer,
                      bool processed, const v1::CacheState* cache, absl::Time now);

  // True when the session should be reaped at `now`: attached and idle for `idle_timeout`, or
  // detached for `grace`. A session with queued or running frames is never reaped.
  enum class Expiry { kNone, kIdle, kExpired };
  Expiry CheckExpiry(absl::Time now, absl::Duration idle_timeout, absl::Duration grace) const;

  // Waits until no stream is attached and no frame is queued or running, or until `deadline`;
  // true when quiet.
  bool AwaitQuiet(absl::Time deadline) const;

  enum class State { kAttached, kDetached, kEnding };
  State state() const;
  uint64_t frames_processed() const;
  v1::SessionInfo Info() const;

 private:
  std::vector<std::shared_ptr<const v1::StreamResponse>> AttachMessagesLocked(
      std::optional<uint64_t> last_received_sequence, bool resumed)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void DropQueueLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  State StateLocked() const ABSL_SHARED_LOCKS_REQUIRED(mu_);

  const SessionSpec spec_;
  const v1::SessionOpened opened_;
  const Limits limits_;
  ServerMetrics* const metrics_;
  const absl::Time opened_at_;
  // Declared before work_, so destroyed after it: the budget share returns once the cache is gone.
  KvBudget::Reservation reservation_;
  SessionWork work_;  // see the class comment

  mutable absl::Mutex mu_;
  std::shared_ptr<SessionSink> sink_ ABSL_GUARDED_BY(mu_);
  struct PendingAttach {
    std::shared_ptr<SessionSink> sink;
    std::optional<uint64_t> last_received_sequence;
  };
  std::optional<PendingAttach> pending_attach_ ABSL_GUARDED_BY(mu_);
  bool attached_once_ ABSL_GUARDED_BY(mu_) = false;
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  bool ending_ ABSL_GUARDED_BY(mu_) = false;
  std::deque<QueuedFrame> queue_ ABSL_GUARDED_BY(mu_);
  bool scheduled_ ABSL_GUARDED_BY(mu_) = false;  // in the scheduler's ready list or running
  bool busy_ ABSL_GUARDED_BY(mu_) = false;       // a worker holds the work state
  std::optional<uint64_t> last_accepted_sequence_ ABSL_GUARDED_BY(mu_);
  std::optional<uint64_t> last_processed_sequence_ ABSL_GUARDED_BY(mu_);
  uint64_t frames_processed_ ABSL_GUARDED_BY(mu_) = 0;
  // Answers to the latest frames, oldest first, for replay on resume.
  std::deque<std::shared_ptr<const v1::StreamResponse>> replay_ ABSL_GUARDED_BY(mu_);
  v1::CacheState cache_ ABSL_GUARDED_BY(mu_);
  absl::Time last_activity_ ABSL_GUARDED_BY(mu_);
};

// The sequence number a frame answer is for.
uint64_t AnswerSequence(const v1::StreamResponse& response);

}  // namespace streamkv::server
