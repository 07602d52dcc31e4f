#include "cache/kv_cache.h"

#include <algorithm>
#include <cmath>

#include <ATen/ATen.h>

#include "kernels/compaction.h"

namespace streamkv::cache {

int64_t CacheGeometry::BytesPerToken(Granularity granularity) const {
  const int64_t rows = granularity == Granularity::kHead ? num_heads : 1;
  return 2 * num_heads * head_dim * static_cast<int64_t>(c10::elementSize(dtype)) +
         rows * kMetadataBytesPerToken;
}

KvCache::KvCache(const KvCacheOptions& options) : options_(options) {
  const CacheGeometry& g = options_.geometry;
  TORCH_CHECK(g.num_layers > 0 && g.num_heads > 0 && g.head_dim > 0,
              "KvCache: num_layers, num_heads and head_dim must be positive");
  TORCH_CHECK(options_.growth_factor > 1.0, "KvCache: growth_factor must exceed 1, got ",
              options_.growth_factor);
  TORCH_CHECK(options_.initial_capacity >= 0, "KvCache: initial_capacity must be >= 0");
  layers_.resize(g.num_layers);
  for (Layer& layer : layers_) Grow(layer, options_.initial_capacity);
}

int64_t KvCache::metadata_rows() const {
  return options_.granularity == Granularity::kHead ? options_.geometry.num_heads : 1;
}

KvCache::Layer& KvCache::at_layer(int64_t index) {
  TORCH_CHECK(index >= 0 && index < num_layers(), "KvCache: layer ", index, " outside [0, ",
              num_layers(), ")");
  return layers_[index];
}

const KvCache::Layer& KvCache::at_layer(int64_t index) const {
  return const_cast<KvCache*>(this)->at_layer(index);
}

int64_t KvCache::length(int64_t layer) const { return at_layer(layer).length; }

int64_t KvCache::capacity(int64_t layer) const {
  const Layer& l = at_layer(layer);
  return l.keys.defined() ? l.keys.size(1) : 0;
}

// Reallocates `layer` to `capacity` tokens, carrying the live prefix over.
void KvCache::Grow(Layer& layer, int64_t capacity) {
  const CacheGeometry& g = options_.geometry;
  const int64_t rows = metadata_rows();
  const auto device = options_.device;
  auto grown = [&](const at::Tensor& old, at::IntArrayRef sizes, c10::ScalarType dtype) {
    at::Tensor fresh = at::empty(sizes, at::TensorOptions().dtype(dtype).device(device));
    if (old.defined() && layer.length > 0) {
      fresh.narrow(1, 0, layer.length).copy_(old.narrow(1, 0, layer.length));
    }
    return fresh;
  };
  layer.keys = grown(layer.keys, {g.num_heads, capacity, g.head_dim}, g.dtype);
  layer.values = grown(layer.values, {g.num_heads, capacity, g.head_dim}, g.dtype);
  layer.frame = grown(layer.frame, {rows, capacity}, at::kInt);
  layer.position = grown(layer.position, {rows, capacity}, at::kInt);
  layer.role = grown(layer.role, {rows, capacity}, at::kByte);
  layer.score = grown(layer.score, {rows, capacity}, at::kFloat);
  layer.exposure = grown(layer.exposure, {rows, capacity}, at::kInt);
}

void KvCache::Reserve(int64_t layer, int64_t tokens) {
  Layer& l = at_layer(layer);
  if (tokens > capacity(layer)) Grow(l, tokens);
}

void KvCache::Append(int64_t layer, const at::Tensor& keys, const at::Tensor& values,
                     const FrameTokens& tokens) {
  const CacheGeometry& g = options_.geometry;
  Layer& l = at_layer(layer);
  TORCH_CHECK(keys.dim() == 3 && keys.size(0) == g.num_heads && keys.size(2) == g.head_dim,
              "KvCache::Append: keys must be [H=", g.num_heads, ", N, D=", g.head_dim, "], got ",
              keys.sizes());
  TORCH_CHECK(values.sizes() == keys.sizes(), "KvCache::Append: values ", values.sizes(),
              " differ from keys ", keys.sizes());
  const int64_t n = keys.size(1);
  TORCH_CHECK(tokens.roles.dim() == 1 && tokens.roles.size(0) == n &&
                  tokens.roles.scalar_type() == at::kByte,
              "KvCache::Append: roles must be uint8 [N=", n, "]");
  TORCH_CHECK(tokens.frame_index >= l.last_frame, "KvCache::Append: frame ", tokens.frame_index,
              " precedes frame ", l.last_frame, " already cached in layer ", layer);

  if (l.length + n > capacity(layer)) {
    const auto grown = static_cast<int64_t>(std::ceil(capacity(layer) * options_.growth_factor));
    Grow(l, std::max(l.length + n, grown));
  }
  if (tokens.frame_index != l.last_frame) {
    l.last_frame = tokens.frame_index;
    l.appended_in_frame = 0;
  }
  const int64_t first_position = l.appended_in_frame;
  l.keys.narrow(1, l.length, n).copy_(keys);
  l.values.narrow(1, l.length, n).copy_(values);
  l.frame.narrow(1, l.length, n).fill_(tokens.frame_index);
  l.position.narrow(1, l.length, n)
      .copy_(at::arange(first_position, first_position + n, l.position.options()));
  l.role.narrow(1, l.length, n).copy_(tokens.roles);
  l.score.narrow(1, l.length, n).zero_();
  l.exposure.narrow(1, l.length, n).zero_();
  l.length += n;
  l.appended_in_frame += n;
}

void KvCache::Compact(int64_t layer, const at::Tensor& keep) {
  Layer& l = at_layer(layer);
  TORCH_CHECK(keep.dim() == 1 || options_.granularity == Granularity::kHead,
              "KvCache::Compact: per-head keep lists need a per-head cache");
  const int64_t kept = keep.size(-1);
  const at::Tensor index = keep.to(l.keys.device());
  kernels::CheckKeepList(index, l.length);  // once for the seven tensors below
  for (at::Tensor* t : {&l.keys, &l.values, &l.frame, &l.position, &l.role, &l.score,
                        &l.exposure}) {
    kernels::CompactRows(*t, index, l.length, /*keep_checked=*/true);
  }
  l.length = kept;
}

LayerView KvCache::layer(int64_t index) const {
  const Layer& l = at_layer(index);
  auto live = [&](const at::Tensor& t) { return t.narrow(1, 0, l.length); };
  return LayerView{live(l.keys),     live(l.values), live(l.frame),   live(l.position),
                   live(l.role),     live(l.score),  live(l.exposure)};
}

int64_t KvCache::LiveBytes(int64_t layer) const {
  return at_layer(layer).length * options_.geometry.BytesPerToken(options_.granularity);
}

CacheSnapshot KvCache::Snapshot() const {
  CacheSnapshot snapshot;
  snapshot.tokens.reserve(layers_.size());
  snapshot.bytes.reserve(layers_.size());
  for (int64_t i = 0; i < num_layers(); ++i) {
    const Layer& l = layers_[i];
    snapshot.tokens.push_back(l.length);
    snapshot.bytes.push_back(LiveBytes(i));
    snapshot.total_tokens += l.length;
    snapshot.total_bytes += snapshot.bytes.back();
    for (const at::Tensor* t : {&l.keys, &l.values, &l.frame, &l.position, &l.role, &l.score,
                                &l.exposure}) {
      snapshot.allocated_bytes += t->numel() * t->element_size();
    }
  }
  return snapshot;
}

}  // namespace streamkv::cache
