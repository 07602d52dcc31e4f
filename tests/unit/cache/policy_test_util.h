// Helpers for cache and policy tests: a tiny cache whose tokens carry recognisable ids.
//
// A token's id is frame * P_tok + position (P_tok = geometry.tokens_per_frame). AppendFrame writes
// the id into every element of the token's K and V rows, so tests can check both the metadata and
// the tensors after compaction.
#pragma once

#include <cstdint>
#include <vector>

#include <ATen/ATen.h>

#include "absl/strings/string_view.h"
#include "cache/kv_cache.h"

namespace streamkv::cache::test_util {

// A float32 geometry small enough to reason about by hand.
inline CacheGeometry TinyGeometry(int64_t num_layers = 2, int64_t tokens_per_frame = 4,
                                  int64_t num_heads = 2, int64_t head_dim = 4) {
  CacheGeometry geometry;
  geometry.num_layers = num_layers;
  geometry.num_heads = num_heads;
  geometry.head_dim = head_dim;
  geometry.dtype = at::kFloat;
  geometry.tokens_per_frame = tokens_per_frame;
  return geometry;
}

// An empty CPU cache of `geometry`.
inline KvCache MakeCache(const CacheGeometry& geometry,
                         Granularity granularity = Granularity::kLayer) {
  KvCacheOptions options;
  options.geometry = geometry;
  options.granularity = granularity;
  return KvCache(options);
}

// Roles [N] uint8 from a pattern: C camera, R register, P patch, A action, I image.
inline at::Tensor Roles(absl::string_view pattern) {
  at::Tensor roles = at::empty({static_cast<int64_t>(pattern.size())}, at::kByte);
  uint8_t* data = roles.data_ptr<uint8_t>();
  for (size_t i = 0; i < pattern.size(); ++i) {
    TokenRole role = TokenRole::kPatch;
    switch (pattern[i]) {
      case 'C': role = TokenRole::kCamera; break;
      case 'R': role = TokenRole::kRegister; break;
      case 'P': role = TokenRole::kPatch; break;
      case 'A': role = TokenRole::kAction; break;
      case 'I': role = TokenRole::kImage; break;
      default: TORCH_CHECK(false, "Roles: unknown role letter '", pattern[i], "'");
    }
    data[i] = static_cast<uint8_t>(role);
  }
  return roles;
}

// Appends the tokens `roles` of frame `frame` to every layer; each token's K and V rows hold its
// id. A frame may be appended in parts (positions continue).
inline void AppendFrame(KvCache& cache, int64_t frame, absl::string_view roles) {
  const CacheGeometry& g = cache.options().geometry;
  TORCH_CHECK(g.tokens_per_frame > 0, "AppendFrame: ids need tokens_per_frame > 0");
  const auto n = static_cast<int64_t>(roles.size());
  const FrameTokens tokens{frame, Roles(roles)};
  const at::Tensor zeros = at::zeros({g.num_heads, n, g.head_dim}, at::TensorOptions(g.dtype));
  for (int64_t layer = 0; layer < cache.num_layers(); ++layer) {
    cache.Append(layer, zeros, zeros, tokens);
    const LayerView view = cache.layer(layer);
    const int64_t first = cache.length(layer) - n;
    const at::Tensor ids = view.frame.select(0, 0).narrow(0, first, n).to(at::kLong) *
                               g.tokens_per_frame +
                           view.position.select(0, 0).narrow(0, first, n);
    const at::Tensor rows = ids.to(g.dtype).view({1, n, 1}).expand({g.num_heads, n, g.head_dim});
    view.keys.narrow(1, first, n).copy_(rows);
    view.values.narrow(1, first, n).copy_(rows);
  }
}

// Elements of a 1-D tensor, converted.
template <typename T>
std::vector<T> ToVector(const at::Tensor& tensor) {
  const at::Tensor t = tensor.to(at::kDouble).cpu().contiguous();
  TORCH_CHECK(t.dim() == 1, "ToVector: need a 1-D tensor, got ", t.sizes());
  std::vector<T> out;
  out.reserve(t.numel());
  for (int64_t i = 0; i < t.numel(); ++i) out.push_back(static_cast<T>(t[i].item<double>()));
  return out;
}

// Ids of the live tokens of `layer` from its metadata row `row` (a head for per-head caches).
inline std::vector<int64_t> TokenIds(const KvCache& cache, int64_t layer, int64_t row = 0) {
  const LayerView view = cache.layer(layer);
  return ToVector<int64_t>(view.frame[row].to(at::kLong) *
                               cache.options().geometry.tokens_per_frame +
                           view.position[row]);
}

// Ids held by the keys of `layer`, head `head` (element 0 of each row).
inline std::vector<int64_t> KeyIds(const KvCache& cache, int64_t layer, int64_t head = 0) {
  return ToVector<int64_t>(cache.layer(layer).keys[head].select(1, 0));
}

// Ids held by the values of `layer`, head `head` (element 0 of each row).
inline std::vector<int64_t> ValueIds(const KvCache& cache, int64_t layer, int64_t head = 0) {
  return ToVector<int64_t>(cache.layer(layer).values[head].select(1, 0));
}

// Head-averaged scores [T] float32.
inline at::Tensor Scores(const std::vector<float>& values) {
  return at::tensor(values, at::kFloat);
}

// Per-head scores [H, T] float32, one row per head.
inline at::Tensor HeadScores(const std::vector<std::vector<float>>& rows) {
  std::vector<at::Tensor> tensors;
  for (const std::vector<float>& row : rows) tensors.push_back(Scores(row));
  return at::stack(tensors);
}

}  // namespace streamkv::cache::test_util
