#include "models/weights/checkpoint.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <iterator>
#include <limits>
#include <map>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace streamkv::models {
namespace {

// safetensors bytes are little-endian and are copied into tensors verbatim.
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "safetensors I/O needs a little-endian host");

constexpr uint64_t kPrefixBytes = 8;  // the little-endian uint64 header length
constexpr size_t kMaxListedKeys = 10;
constexpr char kMetadataKey[] = "__metadata__";

struct Dtype {
  const char* name;
  at::ScalarType type;
};
constexpr Dtype kDtypes[] = {{"F32", at::kFloat}, {"F16", at::kHalf}, {"BF16", at::kBFloat16}};

const char* DtypeName(at::ScalarType type) {
  const auto it = std::find_if(std::begin(kDtypes), std::end(kDtypes),
                               [type](const Dtype& d) { return d.type == type; });
  return it == std::end(kDtypes) ? nullptr : it->name;
}

// One tensor of the header. [begin, end) lies inside the data section and holds exactly
// numel(shape) elements of dtype.
struct Entry {
  at::ScalarType dtype;
  std::vector<int64_t> shape;
  uint64_t begin;
  uint64_t end;
  bool taken = false;
};

// Closes the descriptor on every return path.
struct FileDescriptor {
  explicit FileDescriptor(int fd) : fd(fd) {}
  ~FileDescriptor() {
    if (fd >= 0) close(fd);
  }
  FileDescriptor(const FileDescriptor&) = delete;
  FileDescriptor& operator=(const FileDescriptor&) = delete;
  int fd;
};

template <typename... Args>
absl::Status Invalid(const std::string& path, const Args&... args) {
  return absl::InvalidArgumentError(absl::StrCat("checkpoint ", path, ": ", args...));
}

bool IsUnsignedArray(const nlohmann::json& value) {
  return value.is_array() && std::all_of(value.begin(), value.end(), [](const nlohmann::json& v) {
           return v.is_number_unsigned();
         });
}

absl::StatusOr<Entry> ParseEntry(const std::string& path, const std::string& key,
                                 const nlohmann::json& value, uint64_t data_size) {
  if (!value.is_object()) return Invalid(path, "key '", key, "' is not a JSON object");
  const auto dtype = value.find("dtype");
  const auto shape = value.find("shape");
  const auto offsets = value.find("data_offsets");
  if (dtype == value.end() || !dtype->is_string()) {
    return Invalid(path, "key '", key, "' lacks a string \"dtype\"");
  }
  if (shape == value.end() || !IsUnsignedArray(*shape)) {
    return Invalid(path, "key '", key, "' lacks a \"shape\" array of non-negative integers");
  }
  if (offsets == value.end() || !IsUnsignedArray(*offsets) || offsets->size() != 2) {
    return Invalid(path, "key '", key,
                   "' lacks \"data_offsets\" [begin, end] of non-negative integers");
  }
  const std::string& dtype_name = dtype->get_ref<const std::string&>();
  const auto known = std::find_if(std::begin(kDtypes), std::end(kDtypes),
                                  [&](const Dtype& d) { return dtype_name == d.name; });
  if (known == std::end(kDtypes)) {
    return Invalid(path, "key '", key, "' has unsupported dtype '", dtype_name,
                   "' (supported: F32, F16, BF16)");
  }
  Entry entry;
  entry.dtype = known->type;
  uint64_t bytes = at::elementSize(entry.dtype);
  for (const nlohmann::json& d : *shape) {
    const uint64_t dim = d.get<uint64_t>();
    if (dim > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ||
        __builtin_mul_overflow(bytes, dim, &bytes)) {
      return Invalid(path, "key '", key, "' has a shape too large to address");
    }
    entry.shape.push_back(static_cast<int64_t>(dim));
  }
  entry.begin = (*offsets)[0].get<uint64_t>();
  entry.end = (*offsets)[1].get<uint64_t>();
  if (entry.begin > entry.end || entry.end - entry.begin != bytes) {
    return Invalid(path, "key '", key, "' has data_offsets [", entry.begin, ", ", entry.end,
                   "] but its shape ", c10::str(at::IntArrayRef(entry.shape)), " and dtype ",
                   dtype_name, " need ", bytes, " bytes");
  }
  if (entry.end > data_size) {
    return Invalid(path, "key '", key, "' has data_offsets [", entry.begin, ", ", entry.end,
                   "] past the end of the ", data_size, "-byte data section (truncated file?)");
  }
  return entry;
}

absl::Status WriteAll(int fd, const void* data, size_t size, const std::string& path) {
  const char* p = static_cast<const char*>(data);
  while (size > 0) {
    const ssize_t n = write(fd, p, size);
    if (n < 0) {
      const int error = errno;
      if (error == EINTR) continue;
      return absl::ErrnoToStatus(error, absl::StrCat("WriteSafetensors ", path, ": write"));
    }
    p += n;
    size -= static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

// Writes the length prefix, `header` and the tensors' bytes (contiguous, in map order) to `path`.
absl::Status WriteFile(const std::string& path, const std::string& header,
                       const std::map<std::string, at::Tensor>& tensors) {
  FileDescriptor file(open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (file.fd < 0) {
    const int error = errno;
    return absl::ErrnoToStatus(error, absl::StrCat("WriteSafetensors ", path, ": open"));
  }
  const uint64_t header_size = header.size();
  absl::Status status = WriteAll(file.fd, &header_size, sizeof header_size, path);
  if (status.ok()) status = WriteAll(file.fd, header.data(), header.size(), path);
  for (auto it = tensors.begin(); status.ok() && it != tensors.end(); ++it) {
    status = WriteAll(file.fd, it->second.data_ptr(), it->second.nbytes(), path);
  }
  if (status.ok() && close(std::exchange(file.fd, -1)) != 0) {
    const int error = errno;
    return absl::ErrnoToStatus(error, absl::StrCat("WriteSafetensors ", path, ": close"));
  }
  return status;
}

}  // namespace

struct Checkpoint::Impl {
  ~Impl() {
    if (mapping != nullptr) munmap(mapping, mapping_size);
  }

  std::string path;
  void* mapping = nullptr;  // the whole file, read-only
  size_t mapping_size = 0;
  const char* data = nullptr;  // the data section, inside the mapping
  std::map<std::string, Entry> entries;
};

Checkpoint::Checkpoint(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Checkpoint::~Checkpoint() = default;

absl::StatusOr<std::unique_ptr<Checkpoint>> Checkpoint::Open(const std::string& path) {
  FileDescriptor file(open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (file.fd < 0) {
    const int error = errno;
    const std::string message = absl::StrCat("checkpoint ", path, ": ", std::strerror(error));
    return error == ENOENT ? absl::NotFoundError(message) : absl::InvalidArgumentError(message);
  }
  struct stat info;
  if (fstat(file.fd, &info) != 0 || !S_ISREG(info.st_mode)) {
    return Invalid(path, "not a regular file");
  }
  const uint64_t size = static_cast<uint64_t>(info.st_size);
  if (size < kPrefixBytes) {
    return Invalid(path, "file is ", size,
                   " bytes, too short for the 8-byte header length (truncated file?)");
  }
  auto impl = std::make_unique<Impl>();
  impl->path = path;
  void* mapping = mmap(nullptr, size, PROT_READ, MAP_PRIVATE, file.fd, 0);
  if (mapping == MAP_FAILED) {
    const int error = errno;
    return Invalid(path, "mmap failed: ", std::strerror(error));
  }
  impl->mapping = mapping;
  impl->mapping_size = size;

  const char* bytes = static_cast<const char*>(mapping);
  uint64_t header_size;
  std::memcpy(&header_size, bytes, sizeof header_size);
  if (header_size > size - kPrefixBytes) {
    return Invalid(path, "header length ", header_size, " exceeds the ", size - kPrefixBytes,
                   " bytes after the length prefix (truncated file?)");
  }
  const char* header_begin = bytes + kPrefixBytes;
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(header_begin, header_begin + header_size);
  } catch (const nlohmann::json::exception& e) {
    return Invalid(path, "header is not valid JSON: ", e.what());
  }
  if (!header.is_object()) return Invalid(path, "header is not a JSON object");
  impl->data = header_begin + header_size;
  const uint64_t data_size = size - kPrefixBytes - header_size;
  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == kMetadataKey) continue;
    absl::StatusOr<Entry> entry = ParseEntry(path, it.key(), it.value(), data_size);
    if (!entry.ok()) return entry.status();
    impl->entries.emplace(it.key(), *std::move(entry));
  }
  return std::unique_ptr<Checkpoint>(new Checkpoint(std::move(impl)));
}

at::Tensor Checkpoint::Take(absl::string_view name, at::IntArrayRef shape) {
  const auto it = impl_->entries.find(std::string(name));
  TORCH_CHECK(it != impl_->entries.end(), "checkpoint ", impl_->path, ": missing key '", name, "'");
  Entry& entry = it->second;
  TORCH_CHECK(shape.equals(entry.shape), "checkpoint ", impl_->path, ": key '", name,
              "' has shape ", at::IntArrayRef(entry.shape), ", expected ", shape);
  entry.taken = true;
  // Copied before conversion: the data section need not be aligned for the dtype.
  at::Tensor raw = at::empty(entry.shape, at::TensorOptions().dtype(entry.dtype));
  if (entry.end > entry.begin) {
    std::memcpy(raw.data_ptr(), impl_->data + entry.begin, entry.end - entry.begin);
  }
  return raw.to(at::kFloat);
}

bool Checkpoint::Contains(absl::string_view name) const {
  return impl_->entries.count(std::string(name)) > 0;
}

absl::Status Checkpoint::CheckAllTaken() const {
  std::vector<absl::string_view> untaken;
  for (const auto& [key, entry] : impl_->entries) {
    if (!entry.taken) untaken.push_back(key);
  }
  if (untaken.empty()) return absl::OkStatus();
  const size_t listed = std::min(untaken.size(), kMaxListedKeys);
  return Invalid(impl_->path, untaken.size(), " unexpected keys: ",
                 absl::StrJoin(untaken.begin(), untaken.begin() + listed, ", "),
                 listed < untaken.size() ? ", ..." : "");
}

std::vector<std::string> Checkpoint::Keys() const {
  std::vector<std::string> keys;
  keys.reserve(impl_->entries.size());
  for (const auto& [key, entry] : impl_->entries) keys.push_back(key);
  return keys;
}

absl::Status WriteSafetensors(const std::string& path,
                              const std::vector<std::pair<std::string, at::Tensor>>& tensors) {
  // Sorted by name, contiguous: the header lists keys in this order and the data follows it.
  std::map<std::string, at::Tensor> sorted;
  for (const auto& [name, tensor] : tensors) {
    const std::string prefix = absl::StrCat("WriteSafetensors ", path, ": tensor '", name, "' ");
    if (!tensor.defined() || !tensor.device().is_cpu()) {
      return absl::InvalidArgumentError(absl::StrCat(prefix, "is not a defined CPU tensor"));
    }
    if (DtypeName(tensor.scalar_type()) == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(prefix, "has dtype ",
                                                     c10::toString(tensor.scalar_type()),
                                                     "; supported: float32, float16, bfloat16"));
    }
    if (name == kMetadataKey) {
      return absl::InvalidArgumentError(absl::StrCat(prefix, "uses the reserved name"));
    }
    if (!sorted.emplace(name, tensor.contiguous()).second) {
      return absl::InvalidArgumentError(absl::StrCat(prefix, "appears twice"));
    }
  }
  nlohmann::json header = nlohmann::json::object();
  uint64_t offset = 0;
  for (const auto& [name, tensor] : sorted) {
    const uint64_t end = offset + tensor.nbytes();
    header[name] = {{"dtype", DtypeName(tensor.scalar_type())},
                    {"shape", tensor.sizes().vec()},
                    {"data_offsets", nlohmann::json::array({offset, end})}};
    offset = end;
  }
  std::string text = header.dump();  // nlohmann::json objects dump their keys sorted
  text.append((kPrefixBytes - text.size() % kPrefixBytes) % kPrefixBytes, ' ');

  const std::string tmp = path + ".tmp";
  absl::Status status = WriteFile(tmp, text, sorted);
  if (status.ok() && std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int error = errno;
    status = absl::ErrnoToStatus(error, absl::StrCat("WriteSafetensors ", path, ": rename"));
  }
  if (!status.ok()) std::remove(tmp.c_str());
  return status;
}

}  // namespace streamkv::models
