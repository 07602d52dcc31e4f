#include "client/frame_source.h"

#include <turbojpeg.h>

#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/status/status.h"
#include "tests/unit/client/test_util.h"

namespace streamkv::client {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::StartsWith;

struct JpegSize {
  int width = 0;
  int height = 0;
};

// The size a JPEG declares in its header; 0 × 0 when it cannot be read.
JpegSize JpegHeaderSize(const std::string& jpeg) {
  tjhandle handle = tjInitDecompress();
  JpegSize size;
  int subsampling = 0, colorspace = 0;
  if (tjDecompressHeader3(handle, reinterpret_cast<const unsigned char*>(jpeg.data()),
                          jpeg.size(), &size.width, &size.height, &subsampling,
                          &colorspace) != 0) {
    size = JpegSize();
  }
  tjDestroy(handle);
  return size;
}

// Every frame `source` yields, failing the test on an error.
std::vector<v1::Frame> All(FrameSource& source) {
  std::vector<v1::Frame> frames;
  while (true) {
    absl::StatusOr<std::optional<v1::Frame>> next = source.Next();
    EXPECT_TRUE(next.ok()) << next.status();
    if (!next.ok() || !next->has_value()) return frames;
    frames.push_back(**std::move(next));
  }
}

TEST(ImageFolderSourceTest, YieldsTheJpegAndPngFilesInNameOrder) {
  ScratchDir dir;
  WriteFile(dir.path() + "/b.png", "png bytes");
  WriteFile(dir.path() + "/a.jpg", "jpg bytes");
  WriteFile(dir.path() + "/c.JPEG", "jpeg bytes");
  WriteFile(dir.path() + "/notes.txt", "not an image");
  WriteFile(dir.path() + "/d.gif", "not served");
  absl::StatusOr<std::unique_ptr<FrameSource>> source = ImageFolderSource(dir.path());
  ASSERT_TRUE(source.ok()) << source.status();
  EXPECT_EQ((*source)->size(), 3);
  std::vector<std::string> contents;
  for (const v1::Frame& frame : All(**source)) {
    EXPECT_TRUE(frame.has_encoded());
    contents.push_back(frame.encoded());
  }
  EXPECT_THAT(contents, ElementsAre("jpg bytes", "png bytes", "jpeg bytes"));
}

TEST(ImageFolderSourceTest, SkipsFoldersWhoseNamesLookLikeImages) {
  ScratchDir dir;
  WriteFile(dir.path() + "/a.jpg", "jpg bytes");
  std::filesystem::create_directory(dir.path() + "/b.jpg");
  absl::StatusOr<std::unique_ptr<FrameSource>> source = ImageFolderSource(dir.path());
  ASSERT_TRUE(source.ok()) << source.status();
  EXPECT_EQ((*source)->size(), 1);
  std::vector<std::string> contents;
  for (const v1::Frame& frame : All(**source)) contents.push_back(frame.encoded());
  EXPECT_THAT(contents, ElementsAre("jpg bytes"));
}

TEST(ImageFolderSourceTest, MissingFolderIsNotFound) {
  ScratchDir dir;
  absl::StatusOr<std::unique_ptr<FrameSource>> source =
      ImageFolderSource(dir.path() + "/missing");
  EXPECT_EQ(source.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(source.status().message(), HasSubstr("is not a folder"));
}

TEST(ImageFolderSourceTest, FolderWithoutImagesIsRefused) {
  ScratchDir dir;
  WriteFile(dir.path() + "/notes.txt", "not an image");
  absl::StatusOr<std::unique_ptr<FrameSource>> source = ImageFolderSource(dir.path());
  EXPECT_EQ(source.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(source.status().message(), HasSubstr("holds no JPEG or PNG"));
}

TEST(SyntheticSourceTest, YieldsCountRawFramesOfTheRequestedSize) {
  std::unique_ptr<FrameSource> source = SyntheticSource(3, 4, 6, SyntheticEncoding::kRaw);
  EXPECT_EQ(source->size(), 3);
  const std::vector<v1::Frame> frames = All(*source);
  ASSERT_EQ(frames.size(), 3u);
  for (const v1::Frame& frame : frames) {
    ASSERT_TRUE(frame.has_raw());
    EXPECT_EQ(frame.raw().height(), 4u);
    EXPECT_EQ(frame.raw().width(), 6u);
    EXPECT_EQ(frame.raw().rgb().size(), 4u * 6 * 3);
  }
  EXPECT_NE(frames[0].raw().rgb(), frames[1].raw().rgb());  // the pattern moves
}

TEST(SyntheticSourceTest, JpegFramesDecodeToTheRequestedSize) {
  std::unique_ptr<FrameSource> source = SyntheticSource(2, 24, 40, SyntheticEncoding::kJpeg);
  const std::vector<v1::Frame> frames = All(*source);
  ASSERT_EQ(frames.size(), 2u);
  for (const v1::Frame& frame : frames) {
    ASSERT_TRUE(frame.has_encoded());
    EXPECT_THAT(frame.encoded(), StartsWith("\xff\xd8\xff"));
    const JpegSize size = JpegHeaderSize(frame.encoded());
    EXPECT_EQ(size.height, 24);
    EXPECT_EQ(size.width, 40);
  }
}

TEST(SyntheticSourceTest, EmptySourceEndsAtOnce) {
  std::unique_ptr<FrameSource> source = SyntheticSource(0, 4, 4, SyntheticEncoding::kRaw);
  EXPECT_EQ(source->size(), 0);
  EXPECT_TRUE(All(*source).empty());
}

TEST(EncodeJpegTest, CompressesRgbOfTheGivenSize) {
  absl::StatusOr<std::string> jpeg = EncodeJpeg(std::string(8 * 5 * 3, '\x40'), 8, 5);
  ASSERT_TRUE(jpeg.ok()) << jpeg.status();
  const JpegSize size = JpegHeaderSize(*jpeg);
  EXPECT_EQ(size.height, 8);
  EXPECT_EQ(size.width, 5);
}

TEST(EncodeJpegTest, RefusesABufferOfTheWrongSize) {
  absl::StatusOr<std::string> jpeg = EncodeJpeg(std::string(10, '\0'), 8, 5);
  EXPECT_EQ(jpeg.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(jpeg.status().message(), HasSubstr("buffer size does not match"));
}

}  // namespace
}  // namespace streamkv::client
