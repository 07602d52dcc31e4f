#include "models/io/npy.h"

#include <cstdint>
#include <cstring>
#include <fstream>
#include <iterator>
#include <vector>

#include <ATen/ATen.h>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "models/io/npy_writer.h"

namespace streamkv::models {
namespace {

constexpr char kMagic[] = "\x93NUMPY";
constexpr size_t kMagicSize = 6;

struct DtypeName {
  at::ScalarType type;
  const char* descr;
};
constexpr DtypeName kDtypes[] = {{at::kFloat, "<f4"}, {at::kHalf, "<f2"}, {at::kByte, "|u1"},
                                 {at::kInt, "<i4"},   {at::kLong, "<i8"}};

absl::Status Error(const std::string& path, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("npy file ", path, ": ", what));
}

// The value text of `key` in a header dict such as {'descr': '<f4', 'shape': (2, 3), ...}.
bool HeaderField(absl::string_view header, absl::string_view key, absl::string_view& value) {
  const std::string quoted = absl::StrCat("'", key, "':");
  const size_t at = header.find(quoted);
  if (at == absl::string_view::npos) return false;
  value = absl::StripLeadingAsciiWhitespace(header.substr(at + quoted.size()));
  return true;
}

}  // namespace

absl::Status WriteNpy(const std::string& path, const at::Tensor& tensor) {
  const DtypeName* dtype = nullptr;
  for (const DtypeName& d : kDtypes) {
    if (d.type == tensor.scalar_type()) dtype = &d;
  }
  if (dtype == nullptr || !tensor.is_cpu()) {
    return Error(path, absl::StrCat("cannot write a ", c10::toString(tensor.scalar_type()),
                                    " tensor on ", tensor.device().str()));
  }
  const at::Tensor data = tensor.contiguous();
  return WriteNpyBytes(
      path, dtype->descr, data.sizes().vec(),
      absl::string_view(static_cast<const char*>(data.data_ptr()),
                        static_cast<size_t>(data.numel() * data.element_size())));
}

absl::StatusOr<at::Tensor> ReadNpy(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("npy file ", path, ": cannot open"));
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (bytes.size() < kMagicSize + 4 || bytes.compare(0, kMagicSize, kMagic) != 0) {
    return Error(path, "not a .npy file (bad magic)");
  }
  const int major = static_cast<unsigned char>(bytes[kMagicSize]);
  const size_t length_bytes = major == 1 ? 2 : 4;
  if (major < 1 || major > 3 || bytes.size() < kMagicSize + 2 + length_bytes) {
    return Error(path, absl::StrCat("unsupported format version ", major));
  }
  size_t header_size = 0;
  for (size_t i = 0; i < length_bytes; ++i) {
    header_size |= static_cast<size_t>(static_cast<unsigned char>(bytes[kMagicSize + 2 + i]))
                   << (8 * i);
  }
  const size_t data_start = kMagicSize + 2 + length_bytes + header_size;
  if (data_start > bytes.size()) return Error(path, "truncated header");
  const absl::string_view header(bytes.data() + kMagicSize + 2 + length_bytes, header_size);

  absl::string_view descr, fortran, shape_text;
  if (!HeaderField(header, "descr", descr) || !HeaderField(header, "fortran_order", fortran) ||
      !HeaderField(header, "shape", shape_text)) {
    return Error(path, "header lacks descr, fortran_order or shape");
  }
  if (!absl::StartsWith(fortran, "False")) return Error(path, "Fortran order is not supported");
  const DtypeName* dtype = nullptr;
  for (const DtypeName& d : kDtypes) {
    if (absl::StartsWith(descr, absl::StrCat("'", d.descr, "'"))) dtype = &d;
  }
  if (dtype == nullptr) {
    return Error(path, absl::StrCat("unsupported dtype ", descr.substr(0, descr.find(','))));
  }
  if (!absl::ConsumePrefix(&shape_text, "(")) return Error(path, "malformed shape");
  shape_text = shape_text.substr(0, shape_text.find(')'));
  std::vector<int64_t> shape;
  for (absl::string_view dim : absl::StrSplit(shape_text, ',', absl::SkipWhitespace())) {
    int64_t value = 0;
    if (!absl::SimpleAtoi(dim, &value) || value < 0) {
      return Error(path, absl::StrCat("malformed shape dimension '", dim, "'"));
    }
    shape.push_back(value);
  }
  at::Tensor tensor = at::empty(shape, at::TensorOptions().dtype(dtype->type));
  const size_t data_size = static_cast<size_t>(tensor.numel()) * tensor.element_size();
  if (bytes.size() - data_start < data_size) {
    return Error(path, absl::StrCat("truncated data: ", bytes.size() - data_start, " of ",
                                    data_size, " bytes"));
  }
  std::memcpy(tensor.data_ptr(), bytes.data() + data_start, data_size);
  return tensor;
}

}  // namespace streamkv::models
