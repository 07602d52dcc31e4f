#include "models/io/npy.h"

#include <fstream>
#include <iterator>
#include <string>

#include <ATen/ATen.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace streamkv::models {
namespace {

using ::testing::HasSubstr;

std::string TempPath(const std::string& name) { return ::testing::TempDir() + "/" + name; }

std::string ReadBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

void WriteBytes(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
}

TEST(NpyTest, RoundTripsEverySupportedDtype) {
  at::manual_seed(1);
  const at::Tensor tensors[] = {
      at::randn({2, 3, 4}), at::randn({5}).to(at::kHalf), at::randint(0, 255, {3, 2}, at::kByte),
      at::randint(-9, 9, {4}, at::kInt), at::randint(-9, 9, {1, 1, 2}, at::kLong),
      at::scalar_tensor(2.5), at::empty({0, 3})};
  for (const at::Tensor& t : tensors) {
    const std::string path = TempPath("roundtrip.npy");
    ASSERT_TRUE(WriteNpy(path, t).ok());
    absl::StatusOr<at::Tensor> read = ReadNpy(path);
    ASSERT_TRUE(read.ok()) << read.status();
    EXPECT_EQ(read->scalar_type(), t.scalar_type());
    EXPECT_EQ(read->sizes(), t.sizes());
    EXPECT_TRUE(at::equal(*read, t));
  }
}

TEST(NpyTest, HeaderIsWhatNumpyWrites) {
  const std::string path = TempPath("header.npy");
  ASSERT_TRUE(WriteNpy(path, at::zeros({7}, at::kFloat)).ok());
  const std::string bytes = ReadBytes(path);
  EXPECT_EQ(bytes.substr(0, 8), std::string("\x93NUMPY\x01\x00", 8));
  const size_t header_size = static_cast<unsigned char>(bytes[8]) |
                             static_cast<unsigned char>(bytes[9]) << 8;
  EXPECT_EQ((10 + header_size) % 64, 0u);
  EXPECT_THAT(bytes.substr(10, header_size),
              HasSubstr("{'descr': '<f4', 'fortran_order': False, 'shape': (7,), }"));
  EXPECT_EQ(bytes.size(), 10 + header_size + 7 * 4);
}

TEST(NpyTest, NonContiguousTensorsAreWrittenInLogicalOrder) {
  const at::Tensor t = at::arange(6, at::kFloat).view({2, 3}).t();
  const std::string path = TempPath("transposed.npy");
  ASSERT_TRUE(WriteNpy(path, t).ok());
  EXPECT_TRUE(at::equal(*ReadNpy(path), t));
}

TEST(NpyTest, RejectsWhatItCannotRead) {
  const std::string path = TempPath("bad.npy");
  ASSERT_TRUE(WriteNpy(path, at::zeros({4, 4})).ok());
  const std::string good = ReadBytes(path);

  WriteBytes(path, good.substr(0, good.size() - 3));
  EXPECT_THAT(std::string(ReadNpy(path).status().message()), HasSubstr("truncated data"));

  WriteBytes(path, "PK\x03\x04 not numpy");
  EXPECT_THAT(std::string(ReadNpy(path).status().message()), HasSubstr("bad magic"));

  std::string fortran = good;
  fortran.replace(fortran.find("False"), 5, "True ");
  WriteBytes(path, fortran);
  EXPECT_THAT(std::string(ReadNpy(path).status().message()), HasSubstr("Fortran order"));

  std::string complex = good;
  complex.replace(complex.find("<f4"), 3, "<c8");
  WriteBytes(path, complex);
  EXPECT_THAT(std::string(ReadNpy(path).status().message()), HasSubstr("unsupported dtype '<c8'"));

  EXPECT_EQ(ReadNpy(TempPath("missing.npy")).status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(WriteNpy(path, at::zeros({2}, at::kDouble)).message()),
              HasSubstr("cannot write a Double tensor"));
}

}  // namespace
}  // namespace streamkv::models
