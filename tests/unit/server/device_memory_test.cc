#include "server/device_memory.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <string>

#include <gtest/gtest.h>

namespace streamkv::server {
namespace {

// A file holding `text`, removed when the test ends.
class TempFile {
 public:
  explicit TempFile(const std::string& text) {
    char name[] = "/tmp/streamkv-memory-XXXXXX";
    close(mkstemp(name));
    path_ = name;
    std::ofstream(path_) << text;
  }
  ~TempFile() { std::remove(path_.c_str()); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

TEST(AvailableMemoryTest, ACgroupLimitBelowPhysicalMemoryWins) {
  const int64_t physical = AvailableMemoryBytes("/nonexistent/memory.max");
  ASSERT_GT(physical, int64_t{1} << 20);
  EXPECT_EQ(AvailableMemoryBytes(TempFile("1048576\n").path()), 1048576);
}

TEST(AvailableMemoryTest, NoLimitMeansPhysicalMemory) {
  const int64_t physical = AvailableMemoryBytes("/nonexistent/memory.max");
  EXPECT_EQ(AvailableMemoryBytes(TempFile("max\n").path()), physical);
  EXPECT_EQ(AvailableMemoryBytes(TempFile(std::to_string(physical * 2)).path()), physical);
}

TEST(AvailableCoresTest, ACgroupQuotaRoundsUpAndNeverExceedsTheHardware) {
  const int hardware = AvailableCores("/nonexistent/cpu.max");
  ASSERT_GE(hardware, 1);
  EXPECT_EQ(AvailableCores(TempFile("150000 100000\n").path()), std::min(2, hardware));
  EXPECT_EQ(AvailableCores(TempFile("50000 100000\n").path()), 1);
  EXPECT_EQ(AvailableCores(TempFile("max 100000\n").path()), hardware);
  EXPECT_EQ(AvailableCores(TempFile("100000000 100000\n").path()), hardware);
}

TEST(DeviceMemoryTest, TheCpuHasNoDeviceFigures) {
  EXPECT_FALSE(QueryDeviceMemory(c10::kCPU).has_value());
}

}  // namespace
}  // namespace streamkv::server
