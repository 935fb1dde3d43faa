// Element types: traits table, half/bfloat16 conversions (against known values and, where the
// CPU has F16C, the hardware converter), and quantize -> dequantize error bounds.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>
#endif

#include "base/error.h"
#include "tensor/dtype.h"

namespace skiff {
namespace {

const std::vector<DType> kAllTypes = {
    DType::F32,  DType::F16,  DType::Q4_0, DType::Q4_1, DType::Q5_0,
    DType::Q5_1, DType::Q8_0, DType::Q8_1, DType::Q2_K, DType::Q3_K,
    DType::Q4_K, DType::Q5_K, DType::Q6_K, DType::Q8_K, DType::BF16,
};

float from_bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}
uint32_t to_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

// ---- traits ---------------------------------------------------------------------------------

TEST(DTypeTraits, NamesSizesAndIdsMatchGgml) {
  struct Expected {
    DType type;
    const char* name;
    int block_size, block_bytes;
    bool can_dequantize;
  };
  const Expected table[] = {
      {DType::F32, "f32", 1, 4, true},       {DType::F16, "f16", 1, 2, true},
      {DType::Q4_0, "q4_0", 32, 18, true},   {DType::Q4_1, "q4_1", 32, 20, true},
      {DType::Q5_0, "q5_0", 32, 22, true},   {DType::Q5_1, "q5_1", 32, 24, true},
      {DType::Q8_0, "q8_0", 32, 34, true},   {DType::Q8_1, "q8_1", 32, 36, false},
      {DType::Q2_K, "q2_K", 256, 84, false}, {DType::Q3_K, "q3_K", 256, 110, false},
      {DType::Q4_K, "q4_K", 256, 144, true}, {DType::Q5_K, "q5_K", 256, 176, true},
      {DType::Q6_K, "q6_K", 256, 210, true}, {DType::Q8_K, "q8_K", 256, 292, false},
      {DType::BF16, "bf16", 1, 2, true},
  };
  for (const Expected& e : table) {
    SCOPED_TRACE(e.name);
    const auto t = dtype_traits(static_cast<uint32_t>(e.type));
    ASSERT_TRUE(t.has_value());
    EXPECT_EQ(t->name, e.name);
    EXPECT_EQ(t->block_size, e.block_size);
    EXPECT_EQ(t->block_bytes, e.block_bytes);
    EXPECT_EQ(t->can_dequantize, e.can_dequantize);
    EXPECT_EQ(&traits(e.type), &traits(e.type));  // one table entry, not a copy
    EXPECT_EQ(traits(e.type).name, e.name);
    EXPECT_EQ(dtype_name(e.type), e.name);
  }
}

TEST(DTypeTraits, ParseIsCaseInsensitiveAndRoundTrips) {
  for (DType type : kAllTypes) {
    const std::string name(dtype_name(type));
    EXPECT_EQ(parse_dtype(name), type) << name;
    std::string upper = name;
    for (char& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    EXPECT_EQ(parse_dtype(upper), type) << upper;
  }
  EXPECT_EQ(parse_dtype("Q4_k"), DType::Q4_K);
  EXPECT_FALSE(parse_dtype("q4_2").has_value());
  EXPECT_FALSE(parse_dtype("").has_value());
  EXPECT_FALSE(parse_dtype("f32 ").has_value());
}

TEST(DTypeTraits, UnknownIdsHaveNoTraits) {
  for (uint32_t id : {4u, 5u, 16u, 17u, 29u, 31u, 1000u, 0xFFFFFFFFu}) {
    EXPECT_FALSE(dtype_traits(id).has_value()) << id;
  }
  EXPECT_THROW(traits(static_cast<DType>(4)), Error);
}

TEST(DTypeTraits, RowBytes) {
  EXPECT_EQ(row_bytes(DType::F32, 64), 256u);
  EXPECT_EQ(row_bytes(DType::F16, 64), 128u);
  EXPECT_EQ(row_bytes(DType::Q4_0, 64), 36u);
  EXPECT_EQ(row_bytes(DType::Q8_0, 4096), 128u * 34u);
  EXPECT_EQ(row_bytes(DType::Q4_K, 4096), 16u * 144u);
  EXPECT_EQ(row_bytes(DType::Q6_K, 256), 210u);
}

// ---- fp16 -----------------------------------------------------------------------------------

TEST(Fp16, KnownValues) {
  const std::pair<float, uint16_t> cases[] = {
      {0.0f, 0x0000},
      {-0.0f, 0x8000},
      {1.0f, 0x3C00},
      {-2.0f, 0xC000},
      {0.5f, 0x3800},
      {65504.0f, 0x7BFF},
      {0.333251953125f, 0x3555},           // 1/3 as a half
      {std::ldexp(1.0f, -14), 0x0400},     // smallest normal
      {std::ldexp(1.0f, -24), 0x0001},     // smallest subnormal
      {std::ldexp(1023.0f, -24), 0x03FF},  // largest subnormal
  };
  for (const auto& [f, h] : cases) {
    EXPECT_EQ(fp32_to_fp16(f), h) << f;
    EXPECT_EQ(to_bits(fp16_to_fp32(h)), to_bits(f)) << h;
  }
  EXPECT_EQ(fp32_to_fp16(std::numeric_limits<float>::infinity()), 0x7C00);
  EXPECT_EQ(fp32_to_fp16(-std::numeric_limits<float>::infinity()), 0xFC00);
  EXPECT_TRUE(std::isinf(fp16_to_fp32(0x7C00)));
  EXPECT_LT(fp16_to_fp32(0xFC00), 0.0f);
}

TEST(Fp16, RoundsToNearestEven) {
  // Halves near 1 are 2^-10 apart.
  EXPECT_EQ(fp32_to_fp16(1.0f + std::ldexp(1.0f, -11)), 0x3C00);      // tie -> even (down)
  EXPECT_EQ(fp32_to_fp16(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3C02);  // tie -> even (up)
  EXPECT_EQ(fp32_to_fp16(1.0f + std::ldexp(1.0f, -11) + std::ldexp(1.0f, -20)), 0x3C01);
  EXPECT_EQ(fp32_to_fp16(65519.0f), 0x7BFF);
  EXPECT_EQ(fp32_to_fp16(65520.0f), 0x7C00);  // tie at the top rounds to infinity
  EXPECT_EQ(fp32_to_fp16(1e10f), 0x7C00);
  EXPECT_EQ(fp32_to_fp16(-1e10f), 0xFC00);
  // Subnormal range.
  EXPECT_EQ(fp32_to_fp16(std::ldexp(1.0f, -25)), 0x0000);  // tie -> even (zero)
  EXPECT_EQ(fp32_to_fp16(std::ldexp(1.0f, -25) * 1.0001f), 0x0001);
  EXPECT_EQ(fp32_to_fp16(std::ldexp(3.0f, -25)), 0x0002);  // 1.5 ulp -> 2
  EXPECT_EQ(fp32_to_fp16(std::ldexp(1.0f, -26)), 0x0000);
  EXPECT_EQ(fp32_to_fp16(-std::ldexp(1.0f, -30)), 0x8000);
  EXPECT_EQ(fp32_to_fp16(std::ldexp(2047.0f, -25)), 0x0400);  // rounds up into the normals
  EXPECT_EQ(fp32_to_fp16(std::numeric_limits<float>::denorm_min()), 0x0000);
}

TEST(Fp16, NanStaysNan) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const uint16_t h = fp32_to_fp16(nan);
  EXPECT_EQ(h & 0x7C00, 0x7C00);
  EXPECT_NE(h & 0x03FF, 0);
  EXPECT_TRUE(std::isnan(fp16_to_fp32(h)));
  EXPECT_TRUE(std::isnan(fp16_to_fp32(0x7C01)));  // signalling
  EXPECT_TRUE(std::isnan(fp16_to_fp32(0xFE00)));
  // A NaN whose payload lives only in the low bits must not become infinity.
  EXPECT_TRUE(std::isnan(fp16_to_fp32(fp32_to_fp16(from_bits(0x7F800001u)))));
}

TEST(Fp16, EveryHalfRoundTrips) {
  for (uint32_t h = 0; h <= 0xFFFF; ++h) {
    const float f = fp16_to_fp32(static_cast<uint16_t>(h));
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(fp16_to_fp32(fp32_to_fp16(f))));
      continue;
    }
    ASSERT_EQ(fp32_to_fp16(f), h) << std::hex << h;
  }
}

#if defined(__x86_64__)
__attribute__((target("f16c"))) uint16_t hardware_fp32_to_fp16(float f) {
  return static_cast<uint16_t>(_cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT));
}
__attribute__((target("f16c"))) float hardware_fp16_to_fp32(uint16_t h) { return _cvtsh_ss(h); }
bool cpu_has_f16c() {
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  return __get_cpuid(1, &eax, &ebx, &ecx, &edx) != 0 && (ecx & bit_F16C) != 0;
}

TEST(Fp16, MatchesF16cHardware) {
  if (!cpu_has_f16c()) GTEST_SKIP() << "no F16C on this CPU";
  for (uint32_t h = 0; h <= 0xFFFF; ++h) {
    const float f = hardware_fp16_to_fp32(static_cast<uint16_t>(h));
    if (std::isnan(f)) continue;
    ASSERT_EQ(to_bits(fp16_to_fp32(static_cast<uint16_t>(h))), to_bits(f)) << std::hex << h;
  }
  // Every float in the interesting exponent range at a coarse stride, plus random bits.
  std::mt19937 rng(7);
  int checked = 0;
  auto check = [&](uint32_t bits) {
    const float f = from_bits(bits);
    if (std::isnan(f)) return;
    ASSERT_EQ(fp32_to_fp16(f), hardware_fp32_to_fp16(f)) << std::hex << bits;
    ++checked;
  };
  for (uint32_t bits = 0x30000000u; bits < 0x48000000u; bits += 0x3FFu) {
    check(bits);
    check(bits | 0x80000000u);
    check(bits + 0x1000u);  // exact ties
  }
  for (int i = 0; i < 1000000; ++i) check(static_cast<uint32_t>(rng()));
  EXPECT_GT(checked, 1000000);
}
#endif

// ---- bf16 -----------------------------------------------------------------------------------

TEST(Bf16, KnownValuesAndRounding) {
  EXPECT_EQ(fp32_to_bf16(1.0f), 0x3F80);
  EXPECT_EQ(fp32_to_bf16(-2.0f), 0xC000);
  EXPECT_EQ(fp32_to_bf16(0.0f), 0x0000);
  EXPECT_EQ(fp32_to_bf16(-0.0f), 0x8000);
  EXPECT_EQ(bf16_to_fp32(0x3F80), 1.0f);
  EXPECT_EQ(bf16_to_fp32(0x4049), 3.140625f);
  EXPECT_EQ(fp32_to_bf16(from_bits(0x3F808000u)), 0x3F80);  // tie -> even (down)
  EXPECT_EQ(fp32_to_bf16(from_bits(0x3F818000u)), 0x3F82);  // tie -> even (up)
  EXPECT_EQ(fp32_to_bf16(from_bits(0x3F808001u)), 0x3F81);
  EXPECT_EQ(fp32_to_bf16(from_bits(0x3F807FFFu)), 0x3F80);
  EXPECT_EQ(fp32_to_bf16(std::numeric_limits<float>::infinity()), 0x7F80);
  EXPECT_EQ(fp32_to_bf16(-std::numeric_limits<float>::infinity()), 0xFF80);
  EXPECT_EQ(fp32_to_bf16(std::numeric_limits<float>::max()), 0x7F80);  // rounds up to inf
  // NaN stays NaN even when its payload sits only in the low 16 bits.
  EXPECT_TRUE(std::isnan(bf16_to_fp32(fp32_to_bf16(from_bits(0x7F800001u)))));
  EXPECT_TRUE(std::isnan(bf16_to_fp32(fp32_to_bf16(std::numeric_limits<float>::quiet_NaN()))));
  for (uint32_t h = 0; h <= 0xFFFF; ++h) {
    const float f = bf16_to_fp32(static_cast<uint16_t>(h));
    if (std::isnan(f)) continue;
    ASSERT_EQ(fp32_to_bf16(f), h) << std::hex << h;
  }
}

// ---- quantize -> dequantize -----------------------------------------------------------------

std::vector<float> random_row(std::mt19937& rng, int64_t n, float scale) {
  std::normal_distribution<float> normal(0.0f, scale);
  std::vector<float> x(static_cast<size_t>(n));
  for (float& v : x) v = normal(rng);
  return x;
}

std::vector<float> round_trip(DType type, const std::vector<float>& x) {
  const auto n = static_cast<int64_t>(x.size());
  std::vector<uint8_t> q(row_bytes(type, n));
  EXPECT_TRUE(quantize_row(type, x.data(), q.data(), n));
  std::vector<float> y(x.size());
  dequantize_row(type, q.data(), y.data(), n);
  return y;
}

// Per-block worst-case error bounds from each format's step size (with slack for the f16
// rounding of the scales); K-quants get an RMS bound since their scales are themselves
// quantized.
TEST(Quantize, BlockErrorBounds) {
  std::mt19937 rng(42);
  const int64_t n = 1024;
  for (float scale : {1e-3f, 1.0f, 300.0f}) {
    const std::vector<float> x = random_row(rng, n, scale);
    for (DType type : {DType::Q4_0, DType::Q4_1, DType::Q5_0, DType::Q5_1, DType::Q8_0}) {
      SCOPED_TRACE(std::string(dtype_name(type)) + " scale " + std::to_string(scale));
      const std::vector<float> y = round_trip(type, x);
      for (int64_t b = 0; b < n / 32; ++b) {
        float amax = 0, min = x[b * 32], max = x[b * 32];
        for (int j = 0; j < 32; ++j) {
          amax = std::max(amax, std::fabs(x[b * 32 + j]));
          min = std::min(min, x[b * 32 + j]);
          max = std::max(max, x[b * 32 + j]);
        }
        float bound = 0;
        switch (type) {
          // Symmetric types map the signed extreme exactly; the other side may clamp one step.
          case DType::Q4_0:
            bound = amax / 8 * 1.01f;
            break;
          case DType::Q5_0:
            bound = amax / 16 * 1.01f;
            break;
          case DType::Q8_0:
            bound = amax / 127 * 0.51f + amax * 2e-3f;
            break;
          case DType::Q4_1:
            bound = (max - min) / 15 * 0.51f + amax * 4e-3f;
            break;
          case DType::Q5_1:
            bound = (max - min) / 31 * 0.51f + amax * 4e-3f;
            break;
          default:
            break;
        }
        for (int j = 0; j < 32; ++j) {
          ASSERT_LE(std::fabs(y[b * 32 + j] - x[b * 32 + j]), bound)
              << "block " << b << " element " << j << " x=" << x[b * 32 + j];
        }
      }
    }
  }
}

double relative_rms_error(const std::vector<float>& x, const std::vector<float>& y) {
  double err = 0, ref = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    err += (double(y[i]) - x[i]) * (double(y[i]) - x[i]);
    ref += double(x[i]) * x[i];
  }
  return std::sqrt(err / ref);
}

TEST(Quantize, RelativeRmsErrorPerType) {
  std::mt19937 rng(3);
  const std::vector<float> x = random_row(rng, 4096, 0.02f);
  // Measured values for Gaussian data are about half these limits.
  const std::pair<DType, double> limits[] = {
      {DType::Q4_0, 0.15}, {DType::Q4_1, 0.12}, {DType::Q5_0, 0.075}, {DType::Q5_1, 0.06},
      {DType::Q8_0, 0.01}, {DType::Q4_K, 0.12}, {DType::Q6_K, 0.03},  {DType::F16, 1e-3},
      {DType::BF16, 5e-3}, {DType::F32, 0.0},
  };
  for (const auto& [type, limit] : limits) {
    EXPECT_LE(relative_rms_error(x, round_trip(type, x)), limit) << dtype_name(type);
  }
}

TEST(Quantize, FloatTypesAreExactOrCorrectlyRounded) {
  std::mt19937 rng(5);
  const std::vector<float> x = random_row(rng, 64, 10.0f);
  const std::vector<float> f32 = round_trip(DType::F32, x);
  const std::vector<float> f16 = round_trip(DType::F16, x);
  const std::vector<float> bf16 = round_trip(DType::BF16, x);
  for (size_t i = 0; i < x.size(); ++i) {
    EXPECT_EQ(to_bits(f32[i]), to_bits(x[i]));
    EXPECT_EQ(f16[i], fp16_to_fp32(fp32_to_fp16(x[i])));
    EXPECT_EQ(bf16[i], bf16_to_fp32(fp32_to_bf16(x[i])));
  }
}

TEST(Quantize, Q4_0MatchesHandComputedBlock) {
  // x = -16..15: the extreme -16 gives d = -16 / -8 = 2, and q = (int)(x/2 + 8.5) capped at 15.
  std::vector<float> x(32);
  for (int j = 0; j < 32; ++j) x[j] = static_cast<float>(j - 16);
  const std::vector<float> y = round_trip(DType::Q4_0, x);
  for (int j = 0; j < 32; ++j) {
    const int q = std::min(15, static_cast<int>(std::floor(x[j] / 2 + 8.5f)));
    EXPECT_EQ(y[j], static_cast<float>((q - 8) * 2)) << j;
  }
}

TEST(Quantize, Q8_0MatchesHandComputedBlock) {
  std::vector<float> x(32);
  for (int j = 0; j < 32; ++j) x[j] = static_cast<float>(j) / 31.0f * 2.0f - 1.0f;
  std::vector<uint8_t> q(34);
  ASSERT_TRUE(quantize_row(DType::Q8_0, x.data(), q.data(), 32));
  const uint16_t d_bits = static_cast<uint16_t>(q[0] | (q[1] << 8));
  EXPECT_EQ(d_bits, fp32_to_fp16(1.0f / 127));
  for (int j = 0; j < 32; ++j) {
    EXPECT_EQ(static_cast<int8_t>(q[2 + j]), static_cast<int>(std::round(x[j] * 127))) << j;
  }
}

TEST(Quantize, ZerosStayZero) {
  const std::vector<float> x(512, 0.0f);
  for (DType type : {DType::Q4_0, DType::Q4_1, DType::Q5_0, DType::Q5_1, DType::Q8_0, DType::Q4_K,
                     DType::Q6_K, DType::F16, DType::BF16}) {
    for (float v : round_trip(type, x)) ASSERT_EQ(v, 0.0f) << dtype_name(type);
  }
}

TEST(Quantize, ConstantBlocksSurvive) {
  const std::vector<float> x(256, 0.75f);  // within the f16 rounding of the scale
  for (DType type : {DType::Q4_0, DType::Q5_0, DType::Q8_0, DType::Q6_K}) {
    for (float v : round_trip(type, x)) ASSERT_NEAR(v, 0.75f, 1e-3f) << dtype_name(type);
  }
}

TEST(Quantize, HostileInputsDoNotCrash) {
  // NaN, infinities, huge and denormal values: output is garbage but the code must stay
  // defined (the sanitizer build checks float->int conversions).
  const float inf = std::numeric_limits<float>::infinity();
  std::vector<float> x(512);
  for (size_t i = 0; i < x.size(); ++i) {
    const float specials[] = {std::numeric_limits<float>::quiet_NaN(),
                              inf,
                              -inf,
                              3e38f,
                              -3e38f,
                              1e-40f,
                              1e-38f,
                              0.0f,
                              1.0f};
    x[i] = specials[i % 9];
  }
  std::vector<float> tiny(512, 1e-38f);  // scale underflows to a subnormal, 1/d overflows
  for (DType type : {DType::Q4_0, DType::Q4_1, DType::Q5_0, DType::Q5_1, DType::Q8_0, DType::Q4_K,
                     DType::Q6_K, DType::F16, DType::BF16}) {
    std::vector<uint8_t> q(row_bytes(type, 512));
    std::vector<float> y(512);
    EXPECT_TRUE(quantize_row(type, x.data(), q.data(), 512));
    dequantize_row(type, q.data(), y.data(), 512);
    EXPECT_TRUE(quantize_row(type, tiny.data(), q.data(), 512));
    dequantize_row(type, q.data(), y.data(), 512);
  }
}

TEST(Quantize, UnsupportedTypesAndBadLengths) {
  const std::vector<float> x(256, 1.0f);
  std::vector<uint8_t> q(1024);
  std::vector<float> y(256);
  for (DType type : {DType::Q8_1, DType::Q2_K, DType::Q3_K, DType::Q5_K, DType::Q8_K}) {
    EXPECT_FALSE(quantize_row(type, x.data(), q.data(), 256)) << dtype_name(type);
  }
  for (DType type : {DType::Q8_1, DType::Q2_K, DType::Q3_K, DType::Q8_K}) {
    EXPECT_THROW(dequantize_row(type, q.data(), y.data(), 256), Error) << dtype_name(type);
  }
  EXPECT_THROW(dequantize_row(DType::Q4_0, q.data(), y.data(), 48), Error);
  EXPECT_THROW(dequantize_row(DType::Q4_K, q.data(), y.data(), 128), Error);
  EXPECT_THROW(quantize_row(DType::Q8_0, x.data(), q.data(), 33), Error);
  try {
    dequantize_row(DType::Q6_K, q.data(), y.data(), 100);
    FAIL() << "expected an Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("q6_K"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace skiff
