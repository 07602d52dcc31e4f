// The models a server serves, by name, with their published descriptions.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "models/model.h"
#include "streamkv/v1/streamkv.pb.h"

namespace streamkv::server {

// One served model. Immutable; the Model is thread-safe.
struct ServedModel {
  std::string name;
  std::unique_ptr<models::Model> model;
  v1::ModelDescription description;
};

// Where and how models run.
struct ModelPlacement {
  c10::Device device = c10::kCPU;
  // Cache and backbone dtype: float32 on CPU; bfloat16 on CUDA unless overridden.
  c10::ScalarType backbone_dtype = c10::kFloat;
};

// Loads a STream3R model (JSON config with upstream argument names, safetensors weights with
// upstream parameter names) under `name`.
absl::StatusOr<std::unique_ptr<ServedModel>> LoadStream3r(const std::string& config_path,
                                                          const std::string& weights_path,
                                                          const std::string& name,
                                                          const ModelPlacement& placement);
// The built-in default: the tiny random-weight STream3R (models/stream3r/tiny_model.h), made in a
// temporary folder and loaded like any other.
absl::StatusOr<std::unique_ptr<ServedModel>> LoadBuiltinTinyStream3r(
    const std::string& name, const ModelPlacement& placement);

// Served models; the first added is the default. Not thread-safe while adding; read-only after.
class ModelRegistry {
 public:
  void Add(std::unique_ptr<ServedModel> model) { models_.push_back(std::move(model)); }
  // The model `name`, or the default for an empty name; InvalidArgument naming the field and
  // the served models otherwise.
  absl::StatusOr<const ServedModel*> Find(absl::string_view name) const;
  const std::vector<std::unique_ptr<ServedModel>>& models() const { return models_; }
  std::vector<std::string> names() const;

 private:
  std::vector<std::unique_ptr<ServedModel>> models_;
};

}  // namespace streamkv::server
