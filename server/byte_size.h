// Byte counts for flags: "512", "64K", "1.5GiB", "4G", "8Gi" (K/M/G/T are powers of 1024; a
// trailing "B", "iB" or, as in Kubernetes, "i" is optional).
#pragma once

#include <cstdint>
#include <string>

#include "absl/strings/string_view.h"

namespace streamkv::server {

struct ByteSize {
  int64_t bytes = 0;
};

// Parses `text`; false (with `error` set) for anything else, negative sizes included.
bool ParseByteSize(absl::string_view text, int64_t* bytes, std::string* error);

// Abseil flags support.
bool AbslParseFlag(absl::string_view text, ByteSize* size, std::string* error);
std::string AbslUnparseFlag(ByteSize size);

}  // namespace streamkv::server
