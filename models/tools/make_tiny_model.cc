// Writes a deterministic random-weight STream3R checkpoint and its config.
//
//   streamkv-make-tiny-model --out_dir=models/tiny            # the built-in tiny configuration
//   streamkv-make-tiny-model --config=full.json --out_dir=...  # any config (e.g. for timing)
#include <iostream>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "models/stream3r/tiny_model.h"

ABSL_FLAG(std::string, out_dir, "", "Folder to write config.json and model.safetensors into");
ABSL_FLAG(std::string, config, "", "Config JSON to use instead of the built-in tiny one");
ABSL_FLAG(uint64_t, seed, 0, "Random seed; the same seed writes the same weights");

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("Writes a random-weight STream3R checkpoint and config.");
  absl::ParseCommandLine(argc, argv);
  namespace s3r = streamkv::models::stream3r;
  const std::string out_dir = absl::GetFlag(FLAGS_out_dir);
  if (out_dir.empty()) {
    std::cerr << "error: --out_dir is required\n";
    return 2;
  }
  s3r::Stream3rConfig config = s3r::TinyStream3rConfig();
  if (const std::string path = absl::GetFlag(FLAGS_config); !path.empty()) {
    absl::StatusOr<s3r::Stream3rConfig> loaded = s3r::LoadStream3rConfig(path);
    if (!loaded.ok()) {
      std::cerr << "error: " << loaded.status().message() << "\n";
      return 2;
    }
    config = *loaded;
  }
  if (absl::Status written = s3r::WriteRandomStream3r(out_dir, config, absl::GetFlag(FLAGS_seed));
      !written.ok()) {
    std::cerr << "error: " << written.message() << "\n";
    return 1;
  }
  std::cout << "wrote " << out_dir << "/config.json and " << out_dir << "/model.safetensors\n";
  return 0;
}
