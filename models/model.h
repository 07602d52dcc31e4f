// The interface the server drives: a model family that streams frames through per-session state.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "cache/eviction_policy.h"
#include "cache/kv_cache.h"

namespace streamkv::models {

// What a session asks for when it opens a stream.
struct StreamOptions {
  std::string policy = "none";    // eviction policy name (cache::RegisteredPolicies)
  cache::PolicyParams policy_params;
  // Size of the frames the client will send, before preprocessing; the token count per frame,
  // and so the cache geometry, follows from it. Every frame of a stream must have this size.
  int64_t frame_height = 0;
  int64_t frame_width = 0;
};

// One frame as the model consumes it. Families read the fields they need; later families add
// actions or tokens here.
struct FrameInput {
  at::Tensor image;  // [3, H, W] uint8 RGB (as decoded) or float32 in [0, 1]
};

// Wall-clock milliseconds of one frame's stages.
struct FrameTimings {
  double preprocess_ms = 0;
  double model_ms = 0;  // backbone and heads, attention scoring included
  double evict_ms = 0;  // policy selection and cache compaction
};

// A frame's outputs by name (upstream output keys, e.g. "depth" [H, W, 1]), plus what happened
// to the cache.
struct FrameResult {
  std::vector<std::pair<std::string, at::Tensor>> outputs;
  FrameTimings timings;
  cache::EvictionOutcome eviction;

  // The output called `name`, or an undefined tensor when the model produced none.
  at::Tensor Output(absl::string_view name) const {
    for (const auto& [key, value] : outputs) {
      if (key == name) return value;
    }
    return at::Tensor();
  }
};

// A session's state inside a model: its caches and policy. Owned by the session; used by one
// thread at a time.
class StreamState {
 public:
  virtual ~StreamState() = default;
  virtual int64_t frames_processed() const = 0;
  // Every cache of the stream (the backbone's first), for metrics and introspection.
  virtual std::vector<const cache::KvCache*> caches() const = 0;
};

// A loaded model family. Thread-safe: streams are independent; weights are read-only.
class Model {
 public:
  virtual ~Model() = default;
  virtual absl::string_view name() const = 0;
  virtual c10::Device device() const = 0;
  virtual std::vector<std::string> output_names() const = 0;
  // Names of the caches every stream holds, in StreamState::caches() order ("backbone" first).
  virtual std::vector<std::string> cache_names() const = 0;

  // InvalidArgument naming the field for an unknown policy, bad parameter or frame size.
  virtual absl::StatusOr<std::unique_ptr<StreamState>> OpenStream(
      const StreamOptions& options) const = 0;
  // InvalidArgument for a frame that does not fit the stream; the stream stays usable.
  virtual absl::StatusOr<FrameResult> ProcessFrame(StreamState& stream,
                                                   const FrameInput& frame) const = 0;
};

}  // namespace streamkv::models
