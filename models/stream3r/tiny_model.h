// A small random-weight STream3R: the built-in default model and the test model.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/status.h"
#include "models/stream3r/config.h"

namespace streamkv::models::stream3r {

// The real architecture at small sizes: width 32, 4 aa blocks, 2 heads, 4 registers, a 1-block
// patch-embed ViT, frames resized to width 112 (8 patches per row). Fast enough for CI on CPU.
Stream3rConfig TinyStream3rConfig();

// Deterministic random parameters for `config` (same seed, same tensors): LayerNorm weights near
// 1, LayerScale gammas at init_values, other weights N(0, 1/fan_in).
std::vector<std::pair<std::string, at::Tensor>> RandomStream3rWeights(const Stream3rConfig& config,
                                                                      uint64_t seed);

// Writes <dir>/config.json and <dir>/model.safetensors, creating `dir`.
absl::Status WriteRandomStream3r(const std::string& dir, const Stream3rConfig& config,
                                 uint64_t seed);

}  // namespace streamkv::models::stream3r
