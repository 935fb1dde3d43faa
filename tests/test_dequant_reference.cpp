// dequantize_row against an independent NumPy implementation of ggml's block formats
// (tests/reference/make_dequant_cases.py), bit for bit, for every readable type.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "io/gguf.h"
#include "tensor/dtype.h"

namespace skiff {
namespace {

namespace fs = std::filesystem;

class DequantReference : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    std::string pattern = (fs::temp_directory_path() / "skiff_dequant_XXXXXX").string();
    ASSERT_NE(mkdtemp(pattern.data()), nullptr);
    dir_ = pattern;
    path_ = (fs::path(dir_) / "cases.gguf").string();
    const std::string command = std::string("/usr/bin/python3 ") + SKIFF_SOURCE_DIR +
                                "/tests/reference/make_dequant_cases.py " + path_;
    ASSERT_EQ(std::system(command.c_str()), 0) << command;
  }
  static void TearDownTestSuite() {
    std::error_code ignored;
    fs::remove_all(dir_, ignored);
  }
  static std::string dir_;
  static std::string path_;
};
std::string DequantReference::dir_;
std::string DequantReference::path_;

uint32_t bits_of(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

TEST_F(DequantReference, EveryReadableTypeMatchesNumpyBitForBit) {
  const GgufFile file = GgufFile::open(path_);
  const std::vector<DType> types = {DType::F16,  DType::BF16, DType::Q4_0, DType::Q4_1,
                                    DType::Q5_0, DType::Q5_1, DType::Q8_0, DType::Q4_K,
                                    DType::Q5_K, DType::Q6_K};
  for (DType type : types) {
    const std::string name(dtype_name(type));
    SCOPED_TRACE(name);
    const GgufTensorInfo* quant = file.find_tensor(name);
    const GgufTensorInfo* expected = file.find_tensor(name + ".expected");
    ASSERT_NE(quant, nullptr);
    ASSERT_NE(expected, nullptr);
    ASSERT_EQ(quant->type, type);
    ASSERT_EQ(expected->type, DType::F32);
    ASSERT_EQ(quant->dims, expected->dims);

    const int64_t row_length = quant->dims[0];
    const int64_t rows = quant->element_count() / row_length;
    const size_t quant_row_bytes = row_bytes(type, row_length);
    std::vector<float> got(static_cast<size_t>(row_length));
    std::vector<float> want(static_cast<size_t>(row_length));
    int mismatches = 0;
    for (int64_t r = 0; r < rows; ++r) {
      dequantize_row(type, quant->data + r * quant_row_bytes, got.data(), row_length);
      std::memcpy(want.data(), expected->data + r * row_length * sizeof(float),
                  want.size() * sizeof(float));
      for (int64_t i = 0; i < row_length; ++i) {
        const float g = got[static_cast<size_t>(i)], w = want[static_cast<size_t>(i)];
        if (std::isnan(g) && std::isnan(w)) continue;  // NaN payloads are not the point
        if (bits_of(g) != bits_of(w) && ++mismatches <= 5) {
          ADD_FAILURE() << name << " row " << r << " element " << i << ": got " << g << " (0x"
                        << std::hex << bits_of(g) << "), NumPy says " << w << " (0x" << bits_of(w)
                        << std::dec << ")";
        }
      }
    }
    EXPECT_EQ(mismatches, 0);
  }
}

}  // namespace
}  // namespace skiff
