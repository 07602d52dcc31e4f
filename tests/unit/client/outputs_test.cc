#include "client/outputs.h"

#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <limits>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "tests/unit/client/test_util.h"

namespace streamkv::client {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::SizeIs;
using ::testing::StartsWith;
using ::testing::UnorderedElementsAre;

using Matrix3 = std::array<std::array<double, 3>, 3>;

v1::Tensor F32(const std::string& name, const std::vector<int64_t>& shape,
               const std::vector<float>& values) {
  v1::Tensor tensor;
  tensor.set_name(name);
  tensor.set_dtype(v1::TENSOR_DTYPE_FLOAT32);
  for (int64_t d : shape) tensor.add_shape(d);
  tensor.set_data(values.data(), values.size() * sizeof(float));
  return tensor;
}

v1::Tensor F16(const std::string& name, const std::vector<int64_t>& shape,
               const std::vector<uint16_t>& bits) {
  v1::Tensor tensor;
  tensor.set_name(name);
  tensor.set_dtype(v1::TENSOR_DTYPE_FLOAT16);
  for (int64_t d : shape) tensor.add_shape(d);
  tensor.set_data(bits.data(), bits.size() * sizeof(uint16_t));
  return tensor;
}

// [R | t] row-major, as the server sends "extrinsic".
std::vector<float> Extrinsic(const Matrix3& r, const std::array<double, 3>& t) {
  std::vector<float> e;
  for (int i = 0; i < 3; ++i) {
    for (int j = 0; j < 3; ++j) e.push_back(static_cast<float>(r[i][j]));
    e.push_back(static_cast<float>(t[i]));
  }
  return e;
}

Matrix3 Identity() { return {{{1, 0, 0}, {0, 1, 0}, {0, 0, 1}}}; }

Matrix3 Rotation(int axis, double degrees) {
  const double a = degrees * M_PI / 180, c = std::cos(a), s = std::sin(a);
  switch (axis) {
    case 0: return {{{1, 0, 0}, {0, c, -s}, {0, s, c}}};
    case 1: return {{{c, 0, s}, {0, 1, 0}, {-s, 0, c}}};
    default: return {{{c, -s, 0}, {s, c, 0}, {0, 0, 1}}};
  }
}

Matrix3 Transposed(const Matrix3& m) {
  Matrix3 t;
  for (int i = 0; i < 3; ++i) {
    for (int j = 0; j < 3; ++j) t[i][j] = m[j][i];
  }
  return t;
}

// The rotation of unit quaternion (x, y, z, w).
Matrix3 FromQuaternion(const std::array<double, 4>& q) {
  const double x = q[0], y = q[1], z = q[2], w = q[3];
  return {{{1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)},
           {2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)},
           {2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)}}};
}

TEST(HalfToFloatTest, DecodesZerosOnesAndTheLargestHalf) {
  EXPECT_EQ(HalfToFloat(0x0000), 0.0f);
  EXPECT_FALSE(std::signbit(HalfToFloat(0x0000)));
  EXPECT_TRUE(std::signbit(HalfToFloat(0x8000)));
  EXPECT_EQ(HalfToFloat(0x3C00), 1.0f);
  EXPECT_EQ(HalfToFloat(0xC000), -2.0f);
  EXPECT_EQ(HalfToFloat(0x3555), 0.333251953125f);
  EXPECT_EQ(HalfToFloat(0x7BFF), 65504.0f);
}

TEST(HalfToFloatTest, DecodesSubnormals) {
  EXPECT_EQ(HalfToFloat(0x0001), std::ldexp(1.0f, -24));
  EXPECT_EQ(HalfToFloat(0x03FF), std::ldexp(1023.0f, -24));
  EXPECT_EQ(HalfToFloat(0x8001), -std::ldexp(1.0f, -24));
}

TEST(HalfToFloatTest, DecodesInfinitiesAndNan) {
  EXPECT_EQ(HalfToFloat(0x7C00), std::numeric_limits<float>::infinity());
  EXPECT_EQ(HalfToFloat(0xFC00), -std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::isnan(HalfToFloat(0x7E00)));
  EXPECT_TRUE(std::isnan(HalfToFloat(0xFC01)));
}

TEST(ToHostTensorTest, DecodesFloat32) {
  absl::StatusOr<HostTensor> host = ToHostTensor(F32("depth", {2, 1}, {1.5f, -3.0f}));
  ASSERT_TRUE(host.ok()) << host.status();
  EXPECT_THAT(host->shape, ElementsAre(2, 1));
  EXPECT_THAT(host->values, ElementsAre(1.5f, -3.0f));
}

TEST(ToHostTensorTest, DecodesFloat16) {
  absl::StatusOr<HostTensor> host = ToHostTensor(F16("depth", {3}, {0x3C00, 0xC000, 0x0001}));
  ASSERT_TRUE(host.ok()) << host.status();
  EXPECT_THAT(host->shape, ElementsAre(3));
  EXPECT_THAT(host->values, ElementsAre(1.0f, -2.0f, std::ldexp(1.0f, -24)));
}

TEST(ToHostTensorTest, RefusesDataThatDoesNotMatchTheShape) {
  absl::StatusOr<HostTensor> f32 = ToHostTensor(F32("depth", {2, 2}, {1, 2, 3}));
  EXPECT_EQ(f32.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(f32.status().message(), HasSubstr("depth has 12 bytes, its shape needs 16"));
  absl::StatusOr<HostTensor> f16 = ToHostTensor(F16("conf", {3}, {1, 2}));
  EXPECT_THAT(f16.status().message(), HasSubstr("conf has 4 bytes, its shape needs 6"));
}

TEST(ToHostTensorTest, RefusesAnUnknownDtype) {
  v1::Tensor tensor = F32("depth", {1}, {1});
  tensor.set_dtype(v1::TENSOR_DTYPE_UNSPECIFIED);
  EXPECT_THAT(ToHostTensor(tensor).status().message(), HasSubstr("unknown dtype"));
}

TEST(FindOutputTest, FindsByNameOrReturnsNull) {
  v1::FrameResult result;
  *result.add_outputs() = F32("depth", {1}, {1});
  *result.add_outputs() = F32("images", {1}, {2});
  ASSERT_NE(FindOutput(result, "images"), nullptr);
  EXPECT_EQ(FindOutput(result, "images"), &result.outputs(1));
  EXPECT_EQ(FindOutput(result, "extrinsic"), nullptr);
}

TEST(PoseFromExtrinsicTest, IdentityIsAtTheOriginUnrotated) {
  const CameraPose pose = PoseFromExtrinsic(Extrinsic(Identity(), {0, 0, 0}).data());
  for (double p : pose.position) EXPECT_NEAR(p, 0, 1e-12);
  EXPECT_NEAR(pose.quaternion[0], 0, 1e-12);
  EXPECT_NEAR(pose.quaternion[1], 0, 1e-12);
  EXPECT_NEAR(pose.quaternion[2], 0, 1e-12);
  EXPECT_NEAR(pose.quaternion[3], 1, 1e-12);
}

TEST(PoseFromExtrinsicTest, PositionIsMinusRTransposedTimesT) {
  // World to camera: 90° about z, then t = (1, 2, 3); so the camera turns −90° about z.
  const CameraPose pose = PoseFromExtrinsic(Extrinsic(Rotation(2, 90), {1, 2, 3}).data());
  EXPECT_NEAR(pose.position[0], -2, 1e-6);
  EXPECT_NEAR(pose.position[1], 1, 1e-6);
  EXPECT_NEAR(pose.position[2], -3, 1e-6);
  EXPECT_NEAR(pose.quaternion[0], 0, 1e-6);
  EXPECT_NEAR(pose.quaternion[1], 0, 1e-6);
  EXPECT_NEAR(pose.quaternion[2], -std::sqrt(0.5), 1e-6);
  EXPECT_NEAR(pose.quaternion[3], std::sqrt(0.5), 1e-6);
}

TEST(PoseFromExtrinsicTest, QuaternionIsInTheNonNegativeWHemisphere) {
  // Camera-to-world −160° about x: computed as w < 0 first, then flipped.
  const CameraPose pose = PoseFromExtrinsic(Extrinsic(Rotation(0, 160), {0, 0, 0}).data());
  const double half = -80 * M_PI / 180;
  EXPECT_NEAR(pose.quaternion[0], std::sin(half), 1e-6);
  EXPECT_NEAR(pose.quaternion[1], 0, 1e-6);
  EXPECT_NEAR(pose.quaternion[2], 0, 1e-6);
  EXPECT_NEAR(pose.quaternion[3], std::cos(half), 1e-6);
}

TEST(PoseFromExtrinsicTest, QuaternionIsTheCameraToWorldRotationOnEveryBranch) {
  // Small and large angles about each axis reach every branch of the conversion.
  for (int axis = 0; axis < 3; ++axis) {
    for (double degrees : {30.0, 160.0, 180.0, -170.0}) {
      const Matrix3 r = Rotation(axis, degrees);
      const CameraPose pose = PoseFromExtrinsic(Extrinsic(r, {0.5, -1, 2}).data());
      const std::array<double, 4>& q = pose.quaternion;
      EXPECT_NEAR(q[0] * q[0] + q[1] * q[1] + q[2] * q[2] + q[3] * q[3], 1, 1e-9);
      EXPECT_GE(q[3], 0) << "axis " << axis << ", " << degrees << "°";
      const Matrix3 expected = Transposed(r);
      const Matrix3 actual = FromQuaternion(q);
      for (int i = 0; i < 3; ++i) {
        for (int j = 0; j < 3; ++j) {
          EXPECT_NEAR(actual[i][j], expected[i][j], 1e-6)
              << "axis " << axis << ", " << degrees << "°, element " << i << j;
        }
      }
    }
  }
}

// ---- ResultWriter ------------------------------------------------------------------------------

// A frame of 2 × 2 pixels: depth, points (x = i, y = 10 + i, z = 20 + i for pixel i) with
// confidences `conf`, colours, and the camera of extrinsic `e` when given.
v1::FrameResult PointFrame(const std::vector<float>& conf, const std::vector<float>& e = {}) {
  v1::FrameResult result;
  *result.add_outputs() = F32("depth", {1, 2, 2, 1}, {1, 2, 3, 4});
  if (!e.empty()) *result.add_outputs() = F32("extrinsic", {1, 3, 4}, e);
  std::vector<float> xyz;
  for (int i = 0; i < 4; ++i) xyz.insert(xyz.end(), {float(i), 10.0f + i, 20.0f + i});
  *result.add_outputs() = F32("world_points", {1, 2, 2, 3}, xyz);
  *result.add_outputs() = F32("world_points_conf", {1, 2, 2}, conf);
  // Channel-first: red, green, blue planes.
  *result.add_outputs() =
      F32("images", {1, 3, 2, 2}, {1, 0, 0, 0, 0, 0.5f, 0, 0, 0, 0, 1, 0.2f});
  return result;
}

struct PlyFile {
  int64_t vertices = -1;
  std::string body;  // the binary vertices
};

PlyFile ReadPly(const std::string& path) {
  const std::string text = ReadFile(path);
  PlyFile ply;
  const std::string end = "end_header\n";
  const size_t body = text.find(end);
  EXPECT_NE(body, std::string::npos);
  if (body == std::string::npos) return ply;
  for (absl::string_view line : absl::StrSplit(text.substr(0, body), '\n')) {
    if (absl::ConsumePrefix(&line, "element vertex ")) {
      EXPECT_TRUE(absl::SimpleAtoi(line, &ply.vertices)) << line;
    }
  }
  ply.body = text.substr(body + end.size());
  return ply;
}

struct Vertex {
  float xyz[3];
  uint8_t rgb[3];
};

Vertex VertexAt(const PlyFile& ply, int index) {
  Vertex v;
  std::memcpy(v.xyz, ply.body.data() + 15 * index, 12);
  std::memcpy(v.rgb, ply.body.data() + 15 * index + 12, 3);
  return v;
}

class ResultWriterTest : public ::testing::Test {
 protected:
  ResultWriterTest() { options_.dir = scratch_.path() + "/out"; }

  std::unique_ptr<ResultWriter> NewWriter() {
    absl::StatusOr<std::unique_ptr<ResultWriter>> writer = ResultWriter::Create(options_);
    EXPECT_TRUE(writer.ok()) << writer.status();
    return writer.ok() ? *std::move(writer) : nullptr;
  }
  std::string Path(const std::string& name) const { return options_.dir + "/" + name; }

  ScratchDir scratch_;
  ResultWriterOptions options_;
};

TEST_F(ResultWriterTest, WritesEachOutputAsNpyWithItsDtypeAndShape) {
  auto writer = NewWriter();
  ASSERT_NE(writer, nullptr);
  ASSERT_TRUE(writer->Add(0, PointFrame({0, 1, 2, 3})).ok());
  v1::FrameResult half;
  *half.add_outputs() = F16("depth", {3}, {0x3C00, 0x4000, 0x4200});
  ASSERT_TRUE(writer->Add(12, half).ok());
  ASSERT_TRUE(writer->Finish().ok());

  const std::string npy = ReadFile(Path("frame_000000/depth.npy"));
  ASSERT_GE(npy.size(), 10u);
  EXPECT_EQ(npy.substr(0, 8), std::string("\x93NUMPY\x01\x00", 8));
  const size_t header_size = static_cast<uint8_t>(npy[8]) | static_cast<uint8_t>(npy[9]) << 8;
  EXPECT_EQ((10 + header_size) % 64, 0u);
  const std::string header = npy.substr(10, header_size);
  EXPECT_THAT(header, StartsWith("{'descr': '<f4', 'fortran_order': False, "
                                 "'shape': (1, 2, 2, 1), }"));
  EXPECT_EQ(header.back(), '\n');
  EXPECT_EQ(npy.substr(10 + header_size), PointFrame({0, 1, 2, 3}).outputs(0).data());
  EXPECT_TRUE(std::filesystem::exists(Path("frame_000000/world_points_conf.npy")));

  const std::string half_npy = ReadFile(Path("frame_000012/depth.npy"));
  EXPECT_THAT(half_npy, HasSubstr("{'descr': '<f2', 'fortran_order': False, 'shape': (3,), }"));
}

TEST_F(ResultWriterTest, TrajectoryHasALinePerFrameWithACamera) {
  options_.fps = 10;
  auto writer = NewWriter();
  ASSERT_NE(writer, nullptr);
  ASSERT_TRUE(writer->Add(0, PointFrame({0, 1, 2, 3}, Extrinsic(Identity(), {1, 2, 3}))).ok());
  ASSERT_TRUE(writer->Add(1, PointFrame({0, 1, 2, 3})).ok());  // no camera output
  ASSERT_TRUE(writer->Add(3, PointFrame({0, 1, 2, 3}, Extrinsic(Rotation(2, 90), {1, 2, 3}))).ok());
  ASSERT_TRUE(writer->Finish().ok());

  std::vector<std::string> lines = absl::StrSplit(ReadFile(Path("trajectory.tum")), '\n',
                                                  absl::SkipEmpty());
  ASSERT_THAT(lines, SizeIs(3));
  EXPECT_THAT(lines[0], StartsWith("# timestamp tx ty tz qx qy qz qw"));
  const double h = std::sqrt(0.5);
  const std::vector<std::vector<double>> expected = {{0.0, -1, -2, -3, 0, 0, 0, 1},
                                                     {0.3, -2, 1, -3, 0, 0, -h, h}};
  for (size_t row = 0; row < expected.size(); ++row) {
    std::vector<std::string> fields = absl::StrSplit(lines[row + 1], ' ');
    ASSERT_THAT(fields, SizeIs(8)) << lines[row + 1];
    for (size_t k = 0; k < fields.size(); ++k) {
      double value = 0;
      ASSERT_TRUE(absl::SimpleAtod(fields[k], &value)) << fields[k];
      EXPECT_NEAR(value, expected[row][k], 1e-6) << lines[row + 1];
    }
  }
  EXPECT_THAT(lines[2], StartsWith("0.300000 "));
}

TEST_F(ResultWriterTest, TokensCsvHasARowPerBackboneLayer) {
  auto writer = NewWriter();
  ASSERT_NE(writer, nullptr);
  v1::FrameResult first;
  for (int64_t tokens : {5, 6, 7}) first.mutable_cache()->add_layer_tokens(tokens);
  for (int64_t evicted : {1, 2}) first.mutable_cache()->add_layer_evicted(evicted);
  v1::FrameResult second;
  second.mutable_cache()->add_layer_tokens(9);
  ASSERT_TRUE(writer->Add(0, first).ok());
  ASSERT_TRUE(writer->Add(1, second).ok());
  ASSERT_TRUE(writer->Finish().ok());
  EXPECT_EQ(ReadFile(Path("cache_tokens.csv")),
            "frame,layer,tokens,evicted\n0,0,5,1\n0,1,6,2\n0,2,7,0\n1,0,9,0\n");
}

TEST_F(ResultWriterTest, PointCloudKeepsPointsAtOrAboveTheConfidencePercentile) {
  options_.ply_conf_percentile = 50;  // of 0, 1, 2, 3: the threshold is 1
  auto writer = NewWriter();
  ASSERT_NE(writer, nullptr);
  ASSERT_TRUE(writer->Add(0, PointFrame({0, 1, 2, 3})).ok());
  ASSERT_TRUE(writer->Add(1, PointFrame({3, 2, 1, 0})).ok());
  ASSERT_TRUE(writer->Finish().ok());
  const PlyFile ply = ReadPly(Path("points.ply"));
  EXPECT_EQ(ply.vertices, 6);
  EXPECT_EQ(ply.body.size(), 6u * 15);
  EXPECT_EQ(VertexAt(ply, 0).xyz[0], 1.0f);  // pixel 0 of the first frame fell below
}

TEST_F(ResultWriterTest, PointCloudAtTheTopPercentileKeepsOnlyTheMostConfident) {
  options_.ply_conf_percentile = 100;
  auto writer = NewWriter();
  ASSERT_NE(writer, nullptr);
  ASSERT_TRUE(writer->Add(0, PointFrame({0, 7, 2, 3})).ok());
  ASSERT_TRUE(writer->Finish().ok());
  const PlyFile ply = ReadPly(Path("points.ply"));
  ASSERT_EQ(ply.vertices, 1);
  EXPECT_THAT(VertexAt(ply, 0).xyz, ElementsAre(1.0f, 11.0f, 21.0f));
}

TEST_F(ResultWriterTest, AnEmptyPointMapAddsNoPoints) {
  auto writer = NewWriter();
  ASSERT_NE(writer, nullptr);
  v1::FrameResult empty;
  *empty.add_outputs() = F32("world_points", {0, 3}, {});
  *empty.add_outputs() = F32("world_points_conf", {0}, {});
  ASSERT_TRUE(writer->Add(0, empty).ok());
  ASSERT_TRUE(writer->Add(1, PointFrame({0, 1, 2, 3})).ok());
  ASSERT_TRUE(writer->Finish().ok());
  EXPECT_EQ(ReadPly(Path("points.ply")).vertices, 3);  // only the second frame's, as above
}

TEST_F(ResultWriterTest, PointCloudCarriesPositionsAndColours) {
  options_.ply_conf_percentile = 0;
  auto writer = NewWriter();
  ASSERT_NE(writer, nullptr);
  ASSERT_TRUE(writer->Add(0, PointFrame({0, 1, 2, 3})).ok());
  ASSERT_TRUE(writer->Finish().ok());
  const PlyFile ply = ReadPly(Path("points.ply"));
  ASSERT_EQ(ply.vertices, 4);
  ASSERT_EQ(ply.body.size(), 4u * 15);
  EXPECT_THAT(VertexAt(ply, 0).xyz, ElementsAre(0.0f, 10.0f, 20.0f));
  EXPECT_THAT(VertexAt(ply, 0).rgb, ElementsAre(255, 0, 0));
  EXPECT_THAT(VertexAt(ply, 1).rgb, ElementsAre(0, 128, 0));
  EXPECT_THAT(VertexAt(ply, 3).xyz, ElementsAre(3.0f, 13.0f, 23.0f));
  EXPECT_THAT(VertexAt(ply, 3).rgb, ElementsAre(0, 0, 51));
}

TEST_F(ResultWriterTest, PointsWithoutAnImageAreWhite) {
  options_.ply_conf_percentile = 0;
  auto writer = NewWriter();
  ASSERT_NE(writer, nullptr);
  v1::FrameResult result = PointFrame({0, 1, 2, 3});
  result.mutable_outputs()->RemoveLast();  // images
  ASSERT_TRUE(writer->Add(0, result).ok());
  ASSERT_TRUE(writer->Finish().ok());
  const PlyFile ply = ReadPly(Path("points.ply"));
  ASSERT_EQ(ply.vertices, 4);
  EXPECT_THAT(VertexAt(ply, 2).rgb, ElementsAre(255, 255, 255));
}

TEST_F(ResultWriterTest, PointCloudIsSampledDownToPlyMaxPoints) {
  options_.ply_conf_percentile = 0;
  options_.ply_max_points = 5;
  auto writer = NewWriter();
  ASSERT_NE(writer, nullptr);
  for (int frame = 0; frame < 3; ++frame) {
    ASSERT_TRUE(writer->Add(frame, PointFrame({0, 1, 2, 3})).ok());
  }
  ASSERT_TRUE(writer->Finish().ok());
  const PlyFile ply = ReadPly(Path("points.ply"));
  EXPECT_EQ(ply.vertices, 5);
  EXPECT_EQ(ply.body.size(), 5u * 15);
}

TEST_F(ResultWriterTest, FinishNamesTheFilesWritten) {
  auto writer = NewWriter();
  ASSERT_NE(writer, nullptr);
  ASSERT_TRUE(writer->Add(0, PointFrame({0, 1, 2, 3})).ok());
  absl::StatusOr<std::vector<std::string>> written = writer->Finish();
  ASSERT_TRUE(written.ok()) << written.status();
  EXPECT_THAT(*written, UnorderedElementsAre(Path("frame_*/*.npy"), Path("trajectory.tum"),
                                             Path("cache_tokens.csv"), Path("points.ply")));
}

TEST_F(ResultWriterTest, WritesOnlyWhatItIsAskedFor) {
  options_.npy = false;
  options_.trajectory = false;
  options_.point_cloud = false;
  options_.tokens_csv = false;
  auto writer = NewWriter();
  ASSERT_NE(writer, nullptr);
  ASSERT_TRUE(writer->Add(0, PointFrame({0, 1, 2, 3}, Extrinsic(Identity(), {0, 0, 0}))).ok());
  absl::StatusOr<std::vector<std::string>> written = writer->Finish();
  ASSERT_TRUE(written.ok()) << written.status();
  EXPECT_THAT(*written, IsEmpty());
  EXPECT_TRUE(std::filesystem::is_empty(options_.dir));
}

TEST_F(ResultWriterTest, CreateFailsWhereTheFolderCannotBeMade) {
  WriteFile(scratch_.path() + "/file", "not a folder");
  options_.dir = scratch_.path() + "/file/out";
  absl::StatusOr<std::unique_ptr<ResultWriter>> writer = ResultWriter::Create(options_);
  EXPECT_EQ(writer.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(writer.status().message(), HasSubstr("cannot create"));
}

TEST_F(ResultWriterTest, AddRefusesMalformedCameraAndPoints) {
  auto writer = NewWriter();
  ASSERT_NE(writer, nullptr);
  v1::FrameResult camera;
  *camera.add_outputs() = F32("extrinsic", {3, 3}, std::vector<float>(9, 0));
  EXPECT_THAT(writer->Add(0, camera).message(), HasSubstr("extrinsic is not 3x4"));

  v1::FrameResult points;
  *points.add_outputs() = F32("world_points", {2, 3}, std::vector<float>(6, 0));
  *points.add_outputs() = F32("world_points_conf", {3}, {1, 2, 3});
  EXPECT_THAT(writer->Add(1, points).message(), HasSubstr("disagree in size"));
}

}  // namespace
}  // namespace streamkv::client
