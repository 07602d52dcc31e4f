// The per-session key/value cache of a streaming transformer (DESIGN.md §3).
#pragma once

#include <cstdint>
#include <vector>

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

namespace streamkv::cache {

// What a cached token stands for; policies protect tokens by role.
enum class TokenRole : uint8_t {
  kCamera = 0,    // VGGT camera token
  kRegister = 1,  // VGGT register token
  kPatch = 2,     // image patch token
  kAction = 3,    // world-model action token
  kImage = 4,     // world-model VQ image token
};

// Camera and register tokens carry a frame's summary and are never evicted by score.
constexpr bool IsSpecialRole(TokenRole role) {
  return role == TokenRole::kCamera || role == TokenRole::kRegister;
}

// How finely tokens are selected: one keep list per layer, or one per head (equal counts per head
// so K/V stay rectangular). Per-head caches keep one metadata row per head.
enum class Granularity { kLayer, kHead };

// Shape facts of a model's cache that sizing and budgets depend on.
struct CacheGeometry {
  int64_t num_layers = 0;
  int64_t num_heads = 0;
  int64_t head_dim = 0;
  c10::ScalarType dtype = c10::kFloat;
  // Tokens one frame adds to each layer (VGGT: 5 special + patches); 0 when frames vary.
  int64_t tokens_per_frame = 0;

  // Bytes one cached token occupies in one layer: its key and value for every head plus its
  // metadata row(s).
  int64_t BytesPerToken(Granularity granularity) const;
};

// Bytes of metadata per token per metadata row: frame (int32), position (int32), role (uint8),
// score (float32), exposure (int32).
inline constexpr int64_t kMetadataBytesPerToken = 4 + 4 + 1 + 4 + 4;

// The tokens one frame appends to every layer.
struct FrameTokens {
  int64_t frame_index = 0;  // non-decreasing over a session
  at::Tensor roles;         // [N] uint8 TokenRole, on the cache's device
};

// Live view of one layer: every tensor is narrowed to the live length T and writable in place.
struct LayerView {
  at::Tensor keys;      // [H, T, D]
  at::Tensor values;    // [H, T, D]
  at::Tensor frame;     // [G, T] int32 frame index
  at::Tensor position;  // [G, T] int32 position within the frame
  at::Tensor role;      // [G, T] uint8 TokenRole
  at::Tensor score;     // [G, T] float32 policy score; +inf marks a protected token
  at::Tensor exposure;  // [G, T] int32 number of frames that scored the token
};

// Per-layer counts for metrics and session introspection.
struct CacheSnapshot {
  std::vector<int64_t> tokens;  // live tokens per layer
  std::vector<int64_t> bytes;   // live bytes per layer (K, V and metadata)
  int64_t total_tokens = 0;
  int64_t total_bytes = 0;      // Σ bytes
  int64_t allocated_bytes = 0;  // bytes held by the cache's tensors (capacity, not length)
};

struct KvCacheOptions {
  CacheGeometry geometry;
  c10::Device device = c10::kCPU;
  Granularity granularity = Granularity::kLayer;
  // Tokens per layer allocated up front; 0 allocates on the first append.
  int64_t initial_capacity = 0;
  // Capacity multiplier when an append does not fit (> 1): appends cost amortised O(frame).
  double growth_factor = 1.5;
};

// K/V tensors [H, capacity, D] and token metadata [G, capacity] for every cached layer of one
// session, with a live length per layer. Not thread-safe: a session's cache is used by one thread
// at a time.
class KvCache {
 public:
  explicit KvCache(const KvCacheOptions& options);

  KvCache(const KvCache&) = delete;
  KvCache& operator=(const KvCache&) = delete;
  KvCache(KvCache&&) = default;
  KvCache& operator=(KvCache&&) = default;

  const KvCacheOptions& options() const { return options_; }
  int64_t num_layers() const { return options_.geometry.num_layers; }
  // Metadata rows per layer: 1, or num_heads for per-head caches.
  int64_t metadata_rows() const;

  int64_t length(int64_t layer) const;
  int64_t capacity(int64_t layer) const;

  // Appends keys and values [H, N, D] of frame `tokens.frame_index` to `layer`. Score and exposure
  // start at 0. Positions count the frame's tokens appended so far, so a frame may arrive in parts.
  void Append(int64_t layer, const at::Tensor& keys, const at::Tensor& values,
              const FrameTokens& tokens);

  // Keeps only the listed tokens of `layer`, in order: keep is [K] (layer) or [H, K] (per head,
  // per-head caches only), int64, strictly increasing, on any device.
  void Compact(int64_t layer, const at::Tensor& keep);

  // Ensures `layer` can hold `tokens` without reallocating.
  void Reserve(int64_t layer, int64_t tokens);

  LayerView layer(int64_t index) const;

  // Live bytes of `layer`: exactly what its live tokens occupy.
  int64_t LiveBytes(int64_t layer) const;
  CacheSnapshot Snapshot() const;

 private:
  struct Layer {
    at::Tensor keys, values;                             // [H, capacity, D]
    at::Tensor frame, position, role, score, exposure;   // [G, capacity]
    int64_t length = 0;
    int64_t last_frame = -1;        // frame of the latest append
    int64_t appended_in_frame = 0;  // tokens of `last_frame` appended, evicted or not
  };

  void Grow(Layer& layer, int64_t capacity);
  Layer& at_layer(int64_t index);
  const Layer& at_layer(int64_t index) const;

  KvCacheOptions options_;
  std::vector<Layer> layers_;
};

}  // namespace streamkv::cache
