#include "server/log.h"

#include <cstdio>
#include <string>

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace streamkv::server {

void Log(LogLevel level, absl::string_view message) {
  const char* name = level == LogLevel::kInfo ? "INFO" : level == LogLevel::kWarning ? "WARN" : "ERROR";
  const std::string line =
      absl::StrCat(absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::Now(), absl::UTCTimeZone()), " ",
                   name, " ", message, "\n");
  std::fwrite(line.data(), 1, line.size(), stderr);  // one write per line: lines never interleave
}

}  // namespace streamkv::server
