#include "models/weights/checkpoint.h"

#include <unistd.h>

#include <cstdint>
#include <fstream>
#include <iterator>
#include <string>
#include <utility>
#include <vector>

#include <ATen/ATen.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

namespace streamkv::models {
namespace {

using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;

using NamedTensors = std::vector<std::pair<std::string, at::Tensor>>;

// A file name in the test temp dir unique to the running test and process.
std::string TempPath(const std::string& suffix = "") {
  const ::testing::TestInfo* info = ::testing::UnitTest::GetInstance()->current_test_info();
  return ::testing::TempDir() + "checkpoint_test_" + std::to_string(getpid()) + "_" + info->name() +
         suffix + ".safetensors";
}

std::string ReadBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void WriteBytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << path;
}

uint64_t HeaderLength(const std::string& bytes) {
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(bytes[i]);
  return n;
}

// A safetensors file with the given header text (unpadded) and `data_bytes` zero bytes of data.
void WriteRaw(const std::string& path, const std::string& header, size_t data_bytes) {
  std::string bytes(8, '\0');
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>((header.size() >> (8 * i)) & 0xff);
  WriteBytes(path, bytes + header + std::string(data_bytes, '\0'));
}

std::string OpenError(const std::string& path) {
  absl::StatusOr<std::unique_ptr<Checkpoint>> checkpoint = Checkpoint::Open(path);
  EXPECT_FALSE(checkpoint.ok()) << path;
  return std::string(checkpoint.status().message());
}

std::unique_ptr<Checkpoint> OpenOrDie(const std::string& path) {
  absl::StatusOr<std::unique_ptr<Checkpoint>> checkpoint = Checkpoint::Open(path);
  EXPECT_TRUE(checkpoint.ok()) << checkpoint.status();
  return checkpoint.ok() ? *std::move(checkpoint) : nullptr;
}

std::string TakeError(Checkpoint& checkpoint, const std::string& name, at::IntArrayRef shape) {
  try {
    checkpoint.Take(name, shape);
  } catch (const c10::Error& e) {
    return e.msg();
  }
  ADD_FAILURE() << "Take('" << name << "') did not throw";
  return "";
}

// Values exactly representable in float16 and bfloat16, so conversions round-trip exactly.
NamedTensors MixedTensors() {
  return {{"z.f32", at::arange(24, at::kFloat).reshape({2, 3, 4}) - 7.5},
          {"a.f16", (at::arange(6, at::kFloat) * 0.25 - 1).reshape({2, 3}).to(at::kHalf)},
          {"m.bf16", (at::arange(5, at::kFloat) * -4 + 2).to(at::kBFloat16)},
          {"scalar.f32", at::scalar_tensor(3.25, at::kFloat)},
          {"scalar.bf16", at::scalar_tensor(-0.5, at::kBFloat16)},
          {"empty.f16", at::empty({0, 3}, at::kHalf)}};
}

TEST(CheckpointTest, RoundTripsTensorsAsOwnedFloat32) {
  const std::string path = TempPath();
  const NamedTensors tensors = MixedTensors();
  ASSERT_TRUE(WriteSafetensors(path, tensors).ok());

  std::unique_ptr<Checkpoint> checkpoint = OpenOrDie(path);
  ASSERT_NE(checkpoint, nullptr);
  std::vector<at::Tensor> taken;
  for (const auto& [name, tensor] : tensors) {
    taken.push_back(checkpoint->Take(name, tensor.sizes()));
  }
  EXPECT_TRUE(checkpoint->CheckAllTaken().ok());
  checkpoint.reset();  // the taken tensors must not point into the unmapped file
  for (size_t i = 0; i < tensors.size(); ++i) {
    SCOPED_TRACE(tensors[i].first);
    EXPECT_EQ(taken[i].scalar_type(), at::kFloat);
    EXPECT_TRUE(taken[i].device().is_cpu());
    EXPECT_EQ(taken[i].sizes(), tensors[i].second.sizes());
    EXPECT_TRUE(at::equal(taken[i], tensors[i].second.to(at::kFloat)));
  }
}

TEST(CheckpointTest, KeysAreSortedAndContainsFindsThem) {
  const std::string path = TempPath();
  ASSERT_TRUE(WriteSafetensors(path, MixedTensors()).ok());
  std::unique_ptr<Checkpoint> checkpoint = OpenOrDie(path);
  ASSERT_NE(checkpoint, nullptr);
  EXPECT_THAT(checkpoint->Keys(),
              ElementsAre("a.f16", "empty.f16", "m.bf16", "scalar.bf16", "scalar.f32", "z.f32"));
  EXPECT_TRUE(checkpoint->Contains("m.bf16"));
  EXPECT_FALSE(checkpoint->Contains("m"));
}

TEST(CheckpointTest, WritesSortedPaddedHeaderAndDataInKeyOrder) {
  const std::string path = TempPath();
  ASSERT_TRUE(WriteSafetensors(path, {{"b", at::ones({3}, at::kFloat)},
                                      {"a", at::zeros({2}, at::kHalf)},
                                      {"c", at::full({1}, 2.0, at::kBFloat16)}})
                  .ok());
  const std::string bytes = ReadBytes(path);
  ASSERT_GE(bytes.size(), 8u);
  const uint64_t n = HeaderLength(bytes);
  EXPECT_EQ(n % 8, 0u);
  ASSERT_EQ(bytes.size(), 8 + n + 4 + 12 + 2);
  const std::string header = bytes.substr(8, n);
  const size_t a = header.find("\"a\"");
  const size_t b = header.find("\"b\"");
  const size_t c = header.find("\"c\"");
  ASSERT_NE(a, std::string::npos);
  ASSERT_NE(b, std::string::npos);
  ASSERT_NE(c, std::string::npos);
  EXPECT_LT(a, b);
  EXPECT_LT(b, c);
  const size_t json_end = header.find_last_not_of(' ');
  EXPECT_EQ(header[json_end], '}');
  EXPECT_GT(json_end + 8, n);  // at most 7 padding spaces

  const nlohmann::json parsed = nlohmann::json::parse(header);
  EXPECT_EQ(parsed["a"]["data_offsets"], nlohmann::json::array({0, 4}));
  EXPECT_EQ(parsed["b"]["data_offsets"], nlohmann::json::array({4, 16}));
  EXPECT_EQ(parsed["c"]["data_offsets"], nlohmann::json::array({16, 18}));
  EXPECT_EQ(parsed["c"]["dtype"], "BF16");
  EXPECT_EQ(bytes.substr(8 + n + 4, 4), std::string("\x00\x00\x80\x3f", 4));  // 1.0f
}

TEST(CheckpointTest, WritesNonContiguousTensorsInLogicalOrder) {
  const std::string path = TempPath();
  const at::Tensor transposed = at::arange(6, at::kFloat).reshape({2, 3}).t();
  ASSERT_FALSE(transposed.is_contiguous());
  ASSERT_TRUE(WriteSafetensors(path, {{"t", transposed}}).ok());
  std::unique_ptr<Checkpoint> checkpoint = OpenOrDie(path);
  ASSERT_NE(checkpoint, nullptr);
  EXPECT_TRUE(at::equal(checkpoint->Take("t", {3, 2}), transposed));
}

TEST(CheckpointTest, WriteReplacesFileAndLeavesNoTemporary) {
  const std::string path = TempPath();
  ASSERT_TRUE(WriteSafetensors(path, {{"old", at::ones({1})}}).ok());
  ASSERT_TRUE(WriteSafetensors(path, {{"new", at::ones({1})}}).ok());
  std::unique_ptr<Checkpoint> checkpoint = OpenOrDie(path);
  ASSERT_NE(checkpoint, nullptr);
  EXPECT_THAT(checkpoint->Keys(), ElementsAre("new"));
  EXPECT_FALSE(std::ifstream(path + ".tmp").good());
}

TEST(CheckpointTest, WriteRejectsUnsupportedTensors) {
  const std::string path = TempPath();
  const absl::Status int64 = WriteSafetensors(path, {{"ids", at::arange(3)}});
  EXPECT_EQ(int64.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(int64.message(), AllOf(HasSubstr("'ids'"), HasSubstr("Long")));

  const absl::Status duplicate =
      WriteSafetensors(path, {{"w", at::ones({1})}, {"w", at::zeros({1})}});
  EXPECT_EQ(duplicate.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(duplicate.message(), HasSubstr("'w'"));

  EXPECT_EQ(WriteSafetensors(path, {{"undefined", at::Tensor()}}).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(WriteSafetensors(path, {{"__metadata__", at::ones({1})}}).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(std::ifstream(path).good());
}

TEST(CheckpointTest, TakeWithWrongShapeNamesKeyAndBothShapes) {
  const std::string path = TempPath();
  ASSERT_TRUE(WriteSafetensors(path, {{"x", at::zeros({2, 3})}}).ok());
  std::unique_ptr<Checkpoint> checkpoint = OpenOrDie(path);
  ASSERT_NE(checkpoint, nullptr);
  EXPECT_EQ(TakeError(*checkpoint, "x", {3, 2}),
            "checkpoint " + path + ": key 'x' has shape [2, 3], expected [3, 2]");
  // A failed Take does not count as taking the key.
  EXPECT_THAT(checkpoint->CheckAllTaken().message(), HasSubstr("x"));
}

TEST(CheckpointTest, TakeMissingKeyNamesIt) {
  const std::string path = TempPath();
  ASSERT_TRUE(WriteSafetensors(path, {{"x", at::zeros({1})}}).ok());
  std::unique_ptr<Checkpoint> checkpoint = OpenOrDie(path);
  ASSERT_NE(checkpoint, nullptr);
  EXPECT_EQ(TakeError(*checkpoint, "aggregator.x.weight", {1}),
            "checkpoint " + path + ": missing key 'aggregator.x.weight'");
}

TEST(CheckpointTest, CheckAllTakenListsUntakenKeysSorted) {
  const std::string path = TempPath();
  ASSERT_TRUE(
      WriteSafetensors(path, {{"c", at::zeros({1})}, {"a", at::zeros({1})}, {"b", at::zeros({1})}})
          .ok());
  std::unique_ptr<Checkpoint> checkpoint = OpenOrDie(path);
  ASSERT_NE(checkpoint, nullptr);
  checkpoint->Take("b", {1});
  const absl::Status status = checkpoint->CheckAllTaken();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(status.message(), "checkpoint " + path + ": 2 unexpected keys: a, c");
  checkpoint->Take("a", {1});
  checkpoint->Take("c", {1});
  EXPECT_TRUE(checkpoint->CheckAllTaken().ok());
}

TEST(CheckpointTest, CheckAllTakenListsAtMostTenKeys) {
  const std::string path = TempPath();
  NamedTensors tensors;
  for (int i = 0; i < 12; ++i) tensors.emplace_back("k" + std::to_string(10 + i), at::zeros({1}));
  ASSERT_TRUE(WriteSafetensors(path, tensors).ok());
  std::unique_ptr<Checkpoint> checkpoint = OpenOrDie(path);
  ASSERT_NE(checkpoint, nullptr);
  const absl::Status status = checkpoint->CheckAllTaken();
  EXPECT_THAT(status.message(),
              AllOf(HasSubstr("12 unexpected keys: k10, k11, k12, k13, k14, k15, k16, k17, k18, "
                              "k19, ..."),
                    Not(HasSubstr("k20"))));
}

TEST(CheckpointTest, MetadataIsIgnored) {
  const std::string path = TempPath();
  WriteRaw(path,
           R"({"__metadata__":{"format":"pt"},"w":{"dtype":"F32","shape":[1],)"
           R"("data_offsets":[0,4]}})",
           4);
  std::unique_ptr<Checkpoint> checkpoint = OpenOrDie(path);
  ASSERT_NE(checkpoint, nullptr);
  EXPECT_THAT(checkpoint->Keys(), ElementsAre("w"));
  EXPECT_FALSE(checkpoint->Contains("__metadata__"));
  checkpoint->Take("w", {1});
  EXPECT_TRUE(checkpoint->CheckAllTaken().ok());
}

TEST(CheckpointTest, OpenRejectsTruncatedFiles) {
  const std::string path = TempPath();
  ASSERT_TRUE(WriteSafetensors(path, {{"w", at::ones({2, 3})}}).ok());
  const std::string bytes = ReadBytes(path);
  const uint64_t n = HeaderLength(bytes);
  for (const size_t length : {size_t{0}, size_t{4}, size_t{7}, size_t{8}, size_t{8 + n - 1},
                              size_t{8 + n}, bytes.size() - 1}) {
    SCOPED_TRACE(length);
    const std::string cut = TempPath("_cut");
    WriteBytes(cut, bytes.substr(0, length));
    EXPECT_THAT(OpenError(cut), AllOf(HasSubstr(cut), HasSubstr("truncated")));
  }
}

TEST(CheckpointTest, OpenRejectsAbsurdHeaderLength) {
  const std::string path = TempPath();
  WriteBytes(path, std::string("\x00\x00\x00\x00\x00\x00\x00\x40{}      ", 16));
  EXPECT_THAT(OpenError(path),
              AllOf(HasSubstr(path), HasSubstr("header length 4611686018427387904")));
}

TEST(CheckpointTest, OpenRejectsMissingFile) {
  const std::string path = TempPath();
  const absl::StatusOr<std::unique_ptr<Checkpoint>> checkpoint = Checkpoint::Open(path);
  EXPECT_EQ(checkpoint.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(checkpoint.status().message(), HasSubstr(path));
}

TEST(CheckpointTest, OpenRejectsDirectory) {
  EXPECT_THAT(OpenError(::testing::TempDir()), HasSubstr("not a regular file"));
}

TEST(CheckpointTest, OpenRejectsInvalidJsonHeader) {
  const std::string path = TempPath();
  WriteRaw(path, R"({"w": {"dtype": "F32",)", 0);
  EXPECT_THAT(OpenError(path), AllOf(HasSubstr(path), HasSubstr("not valid JSON")));
}

TEST(CheckpointTest, OpenRejectsNonObjectHeader) {
  const std::string path = TempPath();
  WriteRaw(path, R"([{"dtype":"F32","shape":[1],"data_offsets":[0,4]}])", 4);
  EXPECT_THAT(OpenError(path), AllOf(HasSubstr(path), HasSubstr("not a JSON object")));
}

TEST(CheckpointTest, OpenRejectsUnsupportedDtypeNamingKey) {
  const std::string path = TempPath();
  WriteRaw(path, R"({"ids":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}})", 8);
  EXPECT_THAT(OpenError(path), AllOf(HasSubstr(path), HasSubstr("'ids'"), HasSubstr("'I64'")));
}

TEST(CheckpointTest, OpenRejectsMalformedEntries) {
  const std::string path = TempPath();
  for (const char* header : {
           R"({"w":[1]})",
           R"({"w":{"shape":[1],"data_offsets":[0,4]}})",
           R"({"w":{"dtype":32,"shape":[1],"data_offsets":[0,4]}})",
           R"({"w":{"dtype":"F32","data_offsets":[0,4]}})",
           R"({"w":{"dtype":"F32","shape":1,"data_offsets":[0,4]}})",
           R"({"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})",
           R"({"w":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}})",
           R"({"w":{"dtype":"F32","shape":[1]}})",
           R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[4]}})",
           R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,"4"]}})",
       }) {
    SCOPED_TRACE(header);
    WriteRaw(path, header, 4);
    EXPECT_THAT(OpenError(path), AllOf(HasSubstr(path), HasSubstr("'w'")));
  }
}

TEST(CheckpointTest, OpenRejectsOffsetsBeyondDataSection) {
  const std::string path = TempPath();
  WriteRaw(path, R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", 8);
  EXPECT_THAT(OpenError(path),
              AllOf(HasSubstr(path), HasSubstr("'w'"), HasSubstr("8-byte data section")));
}

TEST(CheckpointTest, OpenRejectsOffsetsNotMatchingShape) {
  const std::string path = TempPath();
  for (const char* header : {
           R"({"w":{"dtype":"F16","shape":[2,3],"data_offsets":[0,24]}})",
           R"({"w":{"dtype":"F32","shape":[],"data_offsets":[0,0]}})",
           R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[8,4]}})",
       }) {
    SCOPED_TRACE(header);
    WriteRaw(path, header, 32);
    EXPECT_THAT(OpenError(path), AllOf(HasSubstr(path), HasSubstr("'w'"), HasSubstr("need")));
  }
}

TEST(CheckpointTest, OpenRejectsOverflowingShape) {
  const std::string path = TempPath();
  WriteRaw(path, R"({"w":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,0]}})",
           0);
  EXPECT_THAT(OpenError(path), AllOf(HasSubstr("'w'"), HasSubstr("too large")));
}

}  // namespace
}  // namespace streamkv::models
