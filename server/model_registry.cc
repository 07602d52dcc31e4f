#include "server/model_registry.h"

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "models/stream3r/stream3r_model.h"
#include "models/stream3r/tiny_model.h"

namespace streamkv::server {
namespace {

const char* DtypeName(c10::ScalarType dtype) {
  switch (dtype) {
    case c10::kBFloat16: return "bfloat16";
    case c10::kHalf: return "float16";
    default: return "float32";
  }
}

std::unique_ptr<ServedModel> Describe(std::unique_ptr<models::stream3r::Stream3rModel> model,
                                      const std::string& name, c10::ScalarType dtype) {
  auto served = std::make_unique<ServedModel>();
  served->name = name;
  v1::ModelDescription& d = served->description;
  d.set_name(name);
  d.set_family(std::string(model->name()));
  for (const std::string& output : model->output_names()) d.add_output_names(output);
  d.set_cached_layers(model->config().aggregator.depth);
  d.set_cache_dtype(DtypeName(dtype));
  d.set_image_width(model->config().aggregator.img_size);
  d.set_patch_size(model->config().aggregator.patch_size);
  served->model = std::move(model);
  return served;
}

// A fresh folder under the system's temporary directory.
absl::StatusOr<std::string> MakeTempDir() {
  std::string pattern = (std::filesystem::temp_directory_path() / "streamkv-model-XXXXXX").string();
  if (mkdtemp(pattern.data()) == nullptr) {
    return absl::InternalError(absl::StrCat("cannot create a temporary folder ", pattern));
  }
  return pattern;
}

}  // namespace

absl::StatusOr<std::unique_ptr<ServedModel>> LoadStream3r(const std::string& config_path,
                                                          const std::string& weights_path,
                                                          const std::string& name,
                                                          const ModelPlacement& placement) {
  models::stream3r::Stream3rModelOptions options;
  options.device = placement.device;
  options.backbone_dtype = placement.backbone_dtype;
  absl::StatusOr<std::unique_ptr<models::stream3r::Stream3rModel>> model =
      models::stream3r::Stream3rModel::Load(config_path, weights_path, options);
  if (!model.ok()) return model.status();
  return Describe(std::move(*model), name, placement.backbone_dtype);
}

absl::StatusOr<std::unique_ptr<ServedModel>> LoadBuiltinTinyStream3r(
    const std::string& name, const ModelPlacement& placement) {
  absl::StatusOr<std::string> dir = MakeTempDir();
  if (!dir.ok()) return dir.status();
  absl::StatusOr<std::unique_ptr<ServedModel>> served;
  if (absl::Status written = models::stream3r::WriteRandomStream3r(
          *dir, models::stream3r::TinyStream3rConfig(), /*seed=*/0);
      written.ok()) {
    served = LoadStream3r(*dir + "/config.json", *dir + "/model.safetensors", name, placement);
  } else {
    served = written;
  }
  std::error_code ignored;
  std::filesystem::remove_all(*dir, ignored);
  return served;
}

absl::StatusOr<const ServedModel*> ModelRegistry::Find(absl::string_view name) const {
  if (models_.empty()) return absl::FailedPreconditionError("the server serves no model");
  if (name.empty()) return models_.front().get();
  for (const auto& model : models_) {
    if (model->name == name) return model.get();
  }
  return absl::InvalidArgumentError(absl::StrCat("model: unknown model '", name,
                                                 "' (served: ", absl::StrJoin(names(), ", "),
                                                 ")"));
}

std::vector<std::string> ModelRegistry::names() const {
  std::vector<std::string> names;
  for (const auto& model : models_) names.push_back(model->name);
  return names;
}

}  // namespace streamkv::server
