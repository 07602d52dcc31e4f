// Streams a whole frame source through one session: a window of frames in flight, answers in
// order, and reconnect-and-resume after a broken stream.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "client/client.h"
#include "client/frame_source.h"
#include "streamkv/v1/streamkv.pb.h"

namespace streamkv::client {

struct RunnerOptions {
  v1::OpenSession open;
  int max_in_flight = 4;  // frames sent and not yet answered
  // Reconnect-and-resume attempts after the stream breaks (UNAVAILABLE, CANCELLED, ...); 0: none.
  int max_resumes = 0;
  absl::Duration resume_backoff = absl::Milliseconds(200);
  // Send EndSession after the last frame (frees the session); false leaves it for resume.
  bool end_session = true;
};

// One frame's answer, in source order. Exactly one of result and error is set; both point into
// the runner's buffers and live for the callback only.
struct FrameAnswer {
  int64_t index = 0;  // 0-based position in the source; sequence = index + 1
  uint64_t sequence = 0;
  const v1::FrameResult* result = nullptr;
  const v1::FrameError* error = nullptr;
  double latency_ms = 0;  // from sending the frame (the last time) to receiving its answer
};

struct RunSummary {
  v1::SessionOpened opened;  // as first opened
  int64_t frames_sent = 0;
  int64_t results = 0;
  int64_t errors = 0;
  int64_t lost = 0;  // processed frames whose answers were lost in a reconnect
  int64_t resumes = 0;
};

// Thread-compatible: one Run at a time; Disconnect may be called from any thread.
class StreamRunner {
 public:
  StreamRunner(Client* client, RunnerOptions options);

  // Streams every frame of `source`, calling `on_answer` (on this thread) per answer. Returns the
  // summary once the session ended, or the error that stopped it.
  absl::StatusOr<RunSummary> Run(FrameSource& source,
                                 const std::function<void(const FrameAnswer&)>& on_answer);

  // Breaks the current stream as a network failure would (demos and tests of resume).
  void Disconnect();

 private:
  absl::Status RunAttempt(SessionStream& stream, FrameSource& source,
                          const std::function<void(const FrameAnswer&)>& on_answer,
                          RunSummary& summary, bool& ended);

  Client* const client_;
  const RunnerOptions options_;
  absl::Mutex mu_;
  SessionStream* current_ ABSL_GUARDED_BY(mu_) = nullptr;

  // Frames sent and not answered, oldest first; shared by the writer and the reader of an attempt.
  struct Pending {
    int64_t index;
    v1::Frame frame;
    absl::Time sent_at;
  };
  absl::Mutex pending_mu_;
  std::deque<Pending> pending_ ABSL_GUARDED_BY(pending_mu_);
  bool source_done_ ABSL_GUARDED_BY(pending_mu_) = false;
  int64_t next_index_ ABSL_GUARDED_BY(pending_mu_) = 0;
  absl::Status source_error_ ABSL_GUARDED_BY(pending_mu_);
  std::optional<uint64_t> last_received_;
};

}  // namespace streamkv::client
