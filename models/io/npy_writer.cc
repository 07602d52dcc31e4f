#include "models/io/npy_writer.h"

#include <fstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace streamkv {
namespace {

constexpr char kMagic[] = "\x93NUMPY";
constexpr size_t kMagicSize = 6;

// Bytes per element of a .npy type descriptor ("<f4" → 4), 0 when malformed.
size_t ElementSize(absl::string_view descr) {
  size_t size = 0;
  if (descr.size() < 3 || !absl::SimpleAtoi(descr.substr(2), &size)) return 0;
  return size;
}

}  // namespace

absl::Status WriteNpyBytes(const std::string& path, absl::string_view descr,
                           const std::vector<int64_t>& shape, absl::string_view data) {
  size_t elements = 1;
  for (int64_t d : shape) elements *= static_cast<size_t>(d);
  if (ElementSize(descr) == 0 || elements * ElementSize(descr) != data.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("npy file ", path, ": ", data.size(), " bytes do not hold shape (",
                     absl::StrJoin(shape, ", "), ") of ", descr));
  }
  std::string dims = absl::StrJoin(shape, ", ");
  if (shape.size() == 1) dims += ",";
  std::string header = absl::StrCat("{'descr': '", descr,
                                    "', 'fortran_order': False, 'shape': (", dims, "), }");
  // Magic (6) + version (2) + header length (2) + header + '\n', padded to a multiple of 64.
  const size_t unpadded = kMagicSize + 4 + header.size() + 1;
  header.append((64 - unpadded % 64) % 64, ' ');
  header.push_back('\n');

  std::ofstream out(path, std::ios::binary);
  if (!out) return absl::InvalidArgumentError(absl::StrCat("npy file ", path, ": cannot open for writing"));
  const uint16_t header_size = static_cast<uint16_t>(header.size());
  out.write(kMagic, kMagicSize);
  out.put(1);
  out.put(0);
  out.put(static_cast<char>(header_size & 0xff));
  out.put(static_cast<char>(header_size >> 8));
  out.write(header.data(), static_cast<std::streamsize>(header.size()));
  out.write(data.data(), static_cast<std::streamsize>(data.size()));
  if (!out) return absl::InvalidArgumentError(absl::StrCat("npy file ", path, ": write failed"));
  return absl::OkStatus();
}

}  // namespace streamkv
