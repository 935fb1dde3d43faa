// MappedFile: the mapped and the huge-page copy give the same bytes; errors name the path.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <vector>

#include "base/error.h"
#include "base/mapped_file.h"
#include "test_util.h"

namespace skiff {
namespace {

TEST(MappedFile, HugePageCopyHoldsTheSameBytesAligned) {
  // Larger than a huge page and not a multiple of one, so the copy's tail is partial.
  std::vector<uint8_t> bytes((size_t{5} << 20) + 12345);
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<uint8_t>(i * 2654435761u >> 24);
  const std::string path = test::temp_path("mapped", "copy");
  write_file_atomically(path, bytes);
  {
    auto mapped = MappedFile::open(path);
    auto copy = MappedFile::open(path, Residency::kHugePages);
    EXPECT_FALSE(mapped->copied());
    EXPECT_TRUE(copy->copied());
    ASSERT_EQ(copy->size(), bytes.size());
    EXPECT_EQ(reinterpret_cast<uintptr_t>(copy->data()) % (size_t{2} << 20), 0u);
    EXPECT_EQ(std::memcmp(copy->data(), bytes.data(), bytes.size()), 0);
    EXPECT_EQ(std::memcmp(mapped->data(), bytes.data(), bytes.size()), 0);
  }
  std::filesystem::remove(path);
}

TEST(MappedFile, EmptyFileAndMissingFile) {
  const std::string path = test::temp_path("mapped", "empty");
  { std::ofstream(path, std::ios::binary); }
  for (Residency r : {Residency::kMapped, Residency::kHugePages}) {
    auto f = MappedFile::open(path, r);
    EXPECT_EQ(f->size(), 0u);
    try {
      MappedFile::open(path + ".missing", r);
      FAIL() << "opened a missing file";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(".missing"), std::string::npos) << e.what();
    }
  }
  std::filesystem::remove(path);
}

}  // namespace
}  // namespace skiff
