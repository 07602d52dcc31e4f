#include "server/byte_size.h"

#include <cmath>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace streamkv::server {

bool ParseByteSize(absl::string_view text, int64_t* bytes, std::string* error) {
  absl::string_view rest = absl::StripAsciiWhitespace(text);
  const std::string upper = absl::AsciiStrToUpper(rest);
  absl::string_view unit = upper;
  // Split the number from its unit at the first letter.
  size_t split = 0;
  while (split < unit.size() && !absl::ascii_isalpha(static_cast<unsigned char>(unit[split]))) {
    ++split;
  }
  absl::string_view number = absl::StripAsciiWhitespace(unit.substr(0, split));
  unit = unit.substr(split);
  if (!absl::ConsumeSuffix(&unit, "IB") && !absl::ConsumeSuffix(&unit, "B")) {
    absl::ConsumeSuffix(&unit, "I");  // Kubernetes' Ki, Mi, Gi
  }
  double scale = 1;
  if (unit == "K") {
    scale = 1024.0;
  } else if (unit == "M") {
    scale = 1024.0 * 1024;
  } else if (unit == "G") {
    scale = 1024.0 * 1024 * 1024;
  } else if (unit == "T") {
    scale = 1024.0 * 1024 * 1024 * 1024;
  } else if (!unit.empty()) {
    *error = absl::StrCat("unknown unit in '", text, "' (use B, K, M, G or T)");
    return false;
  }
  double value = 0;
  if (!absl::SimpleAtod(number, &value) || !(value >= 0) || value * scale > 9.0e18) {
    *error = absl::StrCat("'", text, "' is not a byte size such as 512, 64K or 4GiB");
    return false;
  }
  *bytes = static_cast<int64_t>(std::llround(value * scale));
  return true;
}

bool AbslParseFlag(absl::string_view text, ByteSize* size, std::string* error) {
  return ParseByteSize(text, &size->bytes, error);
}

std::string AbslUnparseFlag(ByteSize size) { return absl::StrCat(size.bytes); }

}  // namespace streamkv::server
