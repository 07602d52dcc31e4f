// Test helper: random parameters for a module's parameter listing, as an opened checkpoint.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "absl/strings/match.h"
#include "models/stream3r/layers.h"
#include "models/weights/checkpoint.h"

namespace streamkv::models::stream3r {

// Every listed parameter but `skip` drawn from N(0, 0.2²) (LayerNorm weights shifted to near 1),
// written as `file` under the test temp dir and opened again.
inline std::unique_ptr<Checkpoint> WriteRandomCheckpoint(const ParameterShapeList& shapes,
                                                         const std::string& file,
                                                         const std::string& skip = "",
                                                         uint64_t seed = 1234) {
  at::manual_seed(seed);
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (const auto& [name, shape] : shapes) {
    if (name == skip) continue;
    at::Tensor t = at::randn(shape) * 0.2;
    if (absl::StrContains(name, "norm") && absl::EndsWith(name, ".weight")) t.add_(1.0);
    tensors.emplace_back(name, t);
  }
  const std::string path = ::testing::TempDir() + "/" + file;
  const absl::Status written = WriteSafetensors(path, tensors);
  EXPECT_TRUE(written.ok()) << written;
  auto checkpoint = Checkpoint::Open(path);
  EXPECT_TRUE(checkpoint.ok()) << checkpoint.status();
  return std::move(checkpoint).value();
}

}  // namespace streamkv::models::stream3r
