// The model work of one frame: decode, budget check, model, eviction, output encoding, metrics.
#pragma once

#include <memory>
#include <optional>

#include "models/io/image.h"
#include "server/clock.h"
#include "server/metrics.h"
#include "server/session.h"
#include "streamkv/v1/streamkv.pb.h"

namespace streamkv::server {

struct FrameProcessorOptions {
  models::ImageLimits image_limits;
};

// Runs on the scheduler's workers. Thread-safe (sessions are processed one frame at a time).
class FrameProcessor {
 public:
  FrameProcessor(FrameProcessorOptions options, ServerMetrics* metrics, Clock* clock);

  // Scheduler::FrameRunner: answers the next queued frame of `session` on its stream; true when
  // more frames wait. Never throws: every failure becomes that frame's error.
  bool RunOne(const std::shared_ptr<Session>& session);

 private:
  struct Answer {
    std::shared_ptr<v1::StreamResponse> response;
    bool processed = false;
    std::optional<v1::CacheState> cache;
  };
  Answer Process(const Session& session, SessionWork& work, const QueuedFrame& frame);
  Answer Fail(const Session& session, uint64_t sequence, const absl::Status& status);
  void PublishGpuMemory(c10::Device device);

  const FrameProcessorOptions options_;
  ServerMetrics* const metrics_;
  Clock* const clock_;
};

}  // namespace streamkv::server
