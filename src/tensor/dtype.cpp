// Element types: the traits table, half/bfloat16 conversions, and the reference (scalar)
// dequantizers and quantizers. Each one follows ggml's reference C definition operation by
// operation, in float, so results match ggml bit for bit; fast kernels live elsewhere and are
// tested against these.
#include "tensor/dtype.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <cfloat>
#include <cmath>
#include <cstring>

#include "base/error.h"

// Bit-exactness with ggml (and the NumPy reference) needs a*b+c rounded twice, never fused
// into an FMA, even when this file is built with -mfma or -march=native.
#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

namespace skiff {

namespace {

constexpr int kQK = 32;     // elements per block of the 32-element formats
constexpr int kQK_K = 256;  // elements per K-quant super-block

struct TraitsEntry {
  DType type;
  DTypeTraits traits;
};

// Block byte sizes are those of ggml-common.h's block_* structs.
constexpr std::array<TraitsEntry, 15> kTraits = {{
    {DType::F32, {"f32", 1, 4, true}},
    {DType::F16, {"f16", 1, 2, true}},
    {DType::Q4_0, {"q4_0", kQK, 2 + 16, true}},
    {DType::Q4_1, {"q4_1", kQK, 2 + 2 + 16, true}},
    {DType::Q5_0, {"q5_0", kQK, 2 + 4 + 16, true}},
    {DType::Q5_1, {"q5_1", kQK, 2 + 2 + 4 + 16, true}},
    {DType::Q8_0, {"q8_0", kQK, 2 + 32, true}},
    {DType::Q8_1, {"q8_1", kQK, 2 + 2 + 32, false}},
    {DType::Q2_K, {"q2_K", kQK_K, 16 + 64 + 2 + 2, false}},
    {DType::Q3_K, {"q3_K", kQK_K, 32 + 64 + 12 + 2, false}},
    {DType::Q4_K, {"q4_K", kQK_K, 2 + 2 + 12 + 128, true}},
    {DType::Q5_K, {"q5_K", kQK_K, 2 + 2 + 12 + 32 + 128, true}},
    {DType::Q6_K, {"q6_K", kQK_K, 128 + 64 + 16 + 2, true}},
    {DType::Q8_K, {"q8_K", kQK_K, 4 + 256 + 2 * 16, false}},
    {DType::BF16, {"bf16", 1, 2, true}},
}};

const TraitsEntry* find_entry(uint32_t type_id) {
  for (const TraitsEntry& e : kTraits) {
    if (static_cast<uint32_t>(e.type) == type_id) return &e;
  }
  return nullptr;
}

uint32_t float_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

float bits_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

uint16_t load_u16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
uint32_t load_u32(const uint8_t* p) {
  return uint32_t{p[0]} | (uint32_t{p[1]} << 8) | (uint32_t{p[2]} << 16) | (uint32_t{p[3]} << 24);
}
void store_u16(uint8_t* p, uint16_t v) {
  p[0] = static_cast<uint8_t>(v);
  p[1] = static_cast<uint8_t>(v >> 8);
}
void store_u32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
float load_half(const uint8_t* p) { return fp16_to_fp32(load_u16(p)); }

// ggml writes `(int8_t)(float)` and `(uint8_t)(float)`, which x86 compiles to a 32-bit
// truncating convert keeping the low byte (0x80000000, hence 0, when out of int32 range or
// NaN). This gives that result without the undefined behaviour, so odd inputs (NaN, inf,
// tiny scales) neither crash nor upset the sanitizers, and normal inputs match exactly.
int32_t truncate_like_x86(float v) {
  if (!(v > -2147483648.0f && v < 2147483648.0f)) return INT32_MIN;
  return static_cast<int32_t>(v);
}
int8_t truncate_to_int8(float v) { return static_cast<int8_t>(truncate_like_x86(v) & 0xFF); }
uint8_t truncate_to_uint8(float v) { return static_cast<uint8_t>(truncate_like_x86(v) & 0xFF); }

// ggml's nearest_int: round half to even via the 1.5*2^23 trick (valid for |v| < 2^22).
int nearest_int(float v) {
  float shifted = v + 12582912.f;
  int32_t i;
  std::memcpy(&i, &shifted, sizeof i);
  return (i & 0x007fffff) - 0x00400000;
}

// The 6-bit scale and min of sub-block j in the 12-byte K-quant scales field.
void get_scale_min_k4(int j, const uint8_t* q, uint8_t* scale, uint8_t* min) {
  if (j < 4) {
    *scale = q[j] & 63;
    *min = q[j + 4] & 63;
  } else {
    *scale = static_cast<uint8_t>((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
    *min = static_cast<uint8_t>((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
  }
}

// ---- dequantizers: one block of `src` to block_size floats ----------------------------------

void dequantize_q4_0(const uint8_t* b, float* y) {
  const float d = load_half(b);
  const uint8_t* qs = b + 2;
  for (int j = 0; j < 16; ++j) {
    const int lo = (qs[j] & 0x0F) - 8;
    const int hi = (qs[j] >> 4) - 8;
    y[j] = static_cast<float>(lo) * d;
    y[j + 16] = static_cast<float>(hi) * d;
  }
}

void dequantize_q4_1(const uint8_t* b, float* y) {
  const float d = load_half(b);
  const float m = load_half(b + 2);
  const uint8_t* qs = b + 4;
  for (int j = 0; j < 16; ++j) {
    y[j] = static_cast<float>(qs[j] & 0x0F) * d + m;
    y[j + 16] = static_cast<float>(qs[j] >> 4) * d + m;
  }
}

void dequantize_q5_0(const uint8_t* b, float* y) {
  const float d = load_half(b);
  const uint32_t qh = load_u32(b + 2);
  const uint8_t* qs = b + 6;
  for (int j = 0; j < 16; ++j) {
    const int hi_lo = ((qh >> j) & 1) << 4;  // 5th bit of element j
    const int hi_hi = ((qh >> (j + 16)) & 1) << 4;
    const int lo = ((qs[j] & 0x0F) | hi_lo) - 16;
    const int hi = ((qs[j] >> 4) | hi_hi) - 16;
    y[j] = static_cast<float>(lo) * d;
    y[j + 16] = static_cast<float>(hi) * d;
  }
}

void dequantize_q5_1(const uint8_t* b, float* y) {
  const float d = load_half(b);
  const float m = load_half(b + 2);
  const uint32_t qh = load_u32(b + 4);
  const uint8_t* qs = b + 8;
  for (int j = 0; j < 16; ++j) {
    const int lo = (qs[j] & 0x0F) | static_cast<int>(((qh >> j) & 1) << 4);
    const int hi = (qs[j] >> 4) | static_cast<int>(((qh >> (j + 16)) & 1) << 4);
    y[j] = static_cast<float>(lo) * d + m;
    y[j + 16] = static_cast<float>(hi) * d + m;
  }
}

void dequantize_q8_0(const uint8_t* b, float* y) {
  const float d = load_half(b);
  for (int j = 0; j < 32; ++j) y[j] = static_cast<float>(static_cast<int8_t>(b[2 + j])) * d;
}

void dequantize_q4_k(const uint8_t* b, float* y) {
  const float d = load_half(b);
  const float dmin = load_half(b + 2);
  const uint8_t* scales = b + 4;
  const uint8_t* q = b + 16;
  // Four 64-element chunks; in each, low nibbles form one 32-element sub-block, high the next.
  for (int chunk = 0; chunk < 4; ++chunk) {
    uint8_t sc, m;
    get_scale_min_k4(2 * chunk, scales, &sc, &m);
    const float d1 = d * sc, m1 = dmin * m;
    get_scale_min_k4(2 * chunk + 1, scales, &sc, &m);
    const float d2 = d * sc, m2 = dmin * m;
    for (int l = 0; l < 32; ++l) *y++ = d1 * static_cast<float>(q[l] & 0xF) - m1;
    for (int l = 0; l < 32; ++l) *y++ = d2 * static_cast<float>(q[l] >> 4) - m2;
    q += 32;
  }
}

void dequantize_q5_k(const uint8_t* b, float* y) {
  const float d = load_half(b);
  const float dmin = load_half(b + 2);
  const uint8_t* scales = b + 4;
  const uint8_t* qh = b + 16;
  const uint8_t* ql = b + 48;
  uint8_t bit_lo = 1, bit_hi = 2;  // which qh bit holds the 5th bit, per chunk
  for (int chunk = 0; chunk < 4; ++chunk) {
    uint8_t sc, m;
    get_scale_min_k4(2 * chunk, scales, &sc, &m);
    const float d1 = d * sc, m1 = dmin * m;
    get_scale_min_k4(2 * chunk + 1, scales, &sc, &m);
    const float d2 = d * sc, m2 = dmin * m;
    for (int l = 0; l < 32; ++l) {
      *y++ = d1 * static_cast<float>((ql[l] & 0xF) + ((qh[l] & bit_lo) ? 16 : 0)) - m1;
    }
    for (int l = 0; l < 32; ++l) {
      *y++ = d2 * static_cast<float>((ql[l] >> 4) + ((qh[l] & bit_hi) ? 16 : 0)) - m2;
    }
    ql += 32;
    bit_lo = static_cast<uint8_t>(bit_lo << 2);
    bit_hi = static_cast<uint8_t>(bit_hi << 2);
  }
}

void dequantize_q6_k(const uint8_t* b, float* y) {
  const uint8_t* ql = b;
  const uint8_t* qh = b + 128;
  const int8_t* sc = reinterpret_cast<const int8_t*>(b + 192);
  const float d = load_half(b + 208);
  // Two 128-element halves; each 16-element group has its own int8 scale.
  for (int half = 0; half < 2; ++half) {
    for (int l = 0; l < 32; ++l) {
      const int is = l / 16;
      const int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
      const int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
      const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
      const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
      y[l] = d * static_cast<float>(sc[is]) * static_cast<float>(q1);
      y[l + 32] = d * static_cast<float>(sc[is + 2]) * static_cast<float>(q2);
      y[l + 64] = d * static_cast<float>(sc[is + 4]) * static_cast<float>(q3);
      y[l + 96] = d * static_cast<float>(sc[is + 6]) * static_cast<float>(q4);
    }
    y += 128;
    ql += 64;
    qh += 32;
    sc += 8;
  }
}

// ---- quantizers: one block of 32 floats into `b` (ggml's quantize_row_*_ref) -----------------

// Sign-preserving absolute maximum, as the symmetric formats use it.
float signed_absmax(const float* x, int n) {
  float amax = 0.0f, max = 0.0f;
  for (int j = 0; j < n; ++j) {
    if (amax < std::fabs(x[j])) {
      amax = std::fabs(x[j]);
      max = x[j];
    }
  }
  return max;
}

void min_max(const float* x, int n, float* min, float* max) {
  *min = FLT_MAX;
  *max = -FLT_MAX;
  for (int j = 0; j < n; ++j) {
    if (x[j] < *min) *min = x[j];
    if (x[j] > *max) *max = x[j];
  }
}

void quantize_q4_0(const float* x, uint8_t* b) {
  const float d = signed_absmax(x, kQK) / -8;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  store_u16(b, fp32_to_fp16(d));
  for (int j = 0; j < 16; ++j) {
    const uint8_t lo = static_cast<uint8_t>(std::min<int>(15, truncate_to_int8(x[j] * id + 8.5f)));
    const uint8_t hi =
        static_cast<uint8_t>(std::min<int>(15, truncate_to_int8(x[j + 16] * id + 8.5f)));
    b[2 + j] = static_cast<uint8_t>(lo | (hi << 4));
  }
}

void quantize_q4_1(const float* x, uint8_t* b) {
  float min, max;
  min_max(x, kQK, &min, &max);
  const float d = (max - min) / ((1 << 4) - 1);
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  store_u16(b, fp32_to_fp16(d));
  store_u16(b + 2, fp32_to_fp16(min));
  for (int j = 0; j < 16; ++j) {
    const float x0 = (x[j] - min) * id;
    const float x1 = (x[j + 16] - min) * id;
    const uint8_t lo = static_cast<uint8_t>(std::min<int>(15, truncate_to_int8(x0 + 0.5f)));
    const uint8_t hi = static_cast<uint8_t>(std::min<int>(15, truncate_to_int8(x1 + 0.5f)));
    b[4 + j] = static_cast<uint8_t>(lo | (hi << 4));
  }
}

void quantize_q5_0(const float* x, uint8_t* b) {
  const float d = signed_absmax(x, kQK) / -16;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  store_u16(b, fp32_to_fp16(d));
  uint32_t qh = 0;
  for (int j = 0; j < 16; ++j) {
    const uint8_t q0 = static_cast<uint8_t>(std::min<int>(31, truncate_to_int8(x[j] * id + 16.5f)));
    const uint8_t q1 =
        static_cast<uint8_t>(std::min<int>(31, truncate_to_int8(x[j + 16] * id + 16.5f)));
    b[6 + j] = static_cast<uint8_t>((q0 & 0x0F) | ((q1 & 0x0F) << 4));
    qh |= ((q0 & 0x10u) >> 4) << j;
    qh |= ((q1 & 0x10u) >> 4) << (j + 16);
  }
  store_u32(b + 2, qh);
}

void quantize_q5_1(const float* x, uint8_t* b) {
  float min, max;
  min_max(x, kQK, &min, &max);
  const float d = (max - min) / ((1 << 5) - 1);
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  store_u16(b, fp32_to_fp16(d));
  store_u16(b + 2, fp32_to_fp16(min));
  uint32_t qh = 0;
  for (int j = 0; j < 16; ++j) {
    const uint8_t q0 = truncate_to_uint8((x[j] - min) * id + 0.5f);
    const uint8_t q1 = truncate_to_uint8((x[j + 16] - min) * id + 0.5f);
    b[8 + j] = static_cast<uint8_t>((q0 & 0x0F) | ((q1 & 0x0F) << 4));
    qh |= ((q0 & 0x10u) >> 4) << j;
    qh |= ((q1 & 0x10u) >> 4) << (j + 16);
  }
  store_u32(b + 4, qh);
}

void quantize_q8_0(const float* x, uint8_t* b) {
  float amax = 0.0f;
  for (int j = 0; j < kQK; ++j) amax = std::max(amax, std::fabs(x[j]));
  const float d = amax / ((1 << 7) - 1);
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  store_u16(b, fp32_to_fp16(d));
  for (int j = 0; j < kQK; ++j) {
    b[2 + j] = static_cast<uint8_t>(truncate_to_int8(std::round(x[j] * id)));
  }
}

// ---- K-quant quantizers (ggml's quantize_row_q4_K_ref / quantize_row_q6_K_ref) -------------

// Fits x ~= scale * L - min with L in [0, nmax] under weights; returns scale, stores min >= 0.
// Tries nstep+1 candidate scales around nmax/(max-min) and keeps the best weighted error.
float make_qkx2_quants(int n, int nmax, const float* x, const float* weights, uint8_t* L,
                       float* the_min, uint8_t* Laux, float rmin, float rdelta, int nstep) {
  float min = x[0], max = x[0];
  float sum_w = weights[0];
  float sum_x = sum_w * x[0];
  for (int i = 1; i < n; ++i) {
    if (x[i] < min) min = x[i];
    if (x[i] > max) max = x[i];
    const float w = weights[i];
    sum_w += w;
    sum_x += w * x[i];
  }
  if (min > 0) min = 0;
  if (max == min) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    *the_min = -min;
    return 0.f;
  }
  float iscale = nmax / (max - min);
  float scale = 1 / iscale;
  float best_error = 0;
  for (int i = 0; i < n; ++i) {
    const int l = nearest_int(iscale * (x[i] - min));
    L[i] = static_cast<uint8_t>(std::max(0, std::min(nmax, l)));
    const float diff = scale * L[i] + min - x[i];
    best_error += weights[i] * (diff * diff);
  }
  for (int is = 0; is <= nstep; ++is) {
    iscale = (rmin + rdelta * is + nmax) / (max - min);
    float sum_l = 0, sum_l2 = 0, sum_xl = 0;
    for (int i = 0; i < n; ++i) {
      int l = nearest_int(iscale * (x[i] - min));
      l = std::max(0, std::min(nmax, l));
      Laux[i] = static_cast<uint8_t>(l);
      const float w = weights[i];
      sum_l += w * l;
      sum_l2 += w * l * l;
      sum_xl += w * l * x[i];
    }
    const float D = sum_w * sum_l2 - sum_l * sum_l;
    if (D > 0) {
      float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
      float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
      if (this_min > 0) {
        this_min = 0;
        this_scale = sum_xl / sum_l2;
      }
      float cur_error = 0;
      for (int i = 0; i < n; ++i) {
        const float diff = this_scale * Laux[i] + this_min - x[i];
        cur_error += weights[i] * (diff * diff);
      }
      if (cur_error < best_error) {
        for (int i = 0; i < n; ++i) L[i] = Laux[i];
        best_error = cur_error;
        scale = this_scale;
        min = this_min;
      }
    }
  }
  *the_min = -min;
  return scale;
}

// Symmetric fit x ~= scale * (L - nmax), L in [0, 2*nmax), weighted by x^2 (rmse_type 1).
float make_qx_quants(int n, int nmax, const float* x, int8_t* L) {
  float max = 0, amax = 0;
  for (int i = 0; i < n; ++i) {
    const float ax = std::fabs(x[i]);
    if (ax > amax) {
      amax = ax;
      max = x[i];
    }
  }
  if (amax < 1e-15f) {  // ggml's GROUP_MAX_EPS: all zero
    for (int i = 0; i < n; ++i) L[i] = 0;
    return 0.f;
  }
  float iscale = -nmax / max;
  float sumlx = 0, suml2 = 0;
  for (int i = 0; i < n; ++i) {
    int l = nearest_int(iscale * x[i]);
    l = std::max(-nmax, std::min(nmax - 1, l));
    L[i] = static_cast<int8_t>(l + nmax);
    const float w = x[i] * x[i];
    sumlx += w * x[i] * l;
    suml2 += w * l * l;
  }
  float scale = suml2 != 0 ? sumlx / suml2 : 0.0f;
  float best = scale * sumlx;
  for (int is = -9; is <= 9; ++is) {
    if (is == 0) continue;
    iscale = -(nmax + 0.1f * is) / max;
    sumlx = suml2 = 0;
    for (int i = 0; i < n; ++i) {
      int l = nearest_int(iscale * x[i]);
      l = std::max(-nmax, std::min(nmax - 1, l));
      const float w = x[i] * x[i];
      sumlx += w * x[i] * l;
      suml2 += w * l * l;
    }
    if (suml2 > 0 && sumlx * sumlx > best * suml2) {
      for (int i = 0; i < n; ++i) {
        const int l = nearest_int(iscale * x[i]);
        L[i] = static_cast<int8_t>(nmax + std::max(-nmax, std::min(nmax - 1, l)));
      }
      scale = sumlx / suml2;
      best = scale * sumlx;
    }
  }
  return scale;
}

void quantize_q4_k(const float* x, uint8_t* b) {
  uint8_t L[kQK_K], Laux[32];
  float weights[32], mins[8], scales[8];
  float max_scale = 0, max_min = 0;
  for (int j = 0; j < 8; ++j) {
    float sum_x2 = 0;
    for (int l = 0; l < 32; ++l) sum_x2 += x[32 * j + l] * x[32 * j + l];
    const float av_x = std::sqrt(sum_x2 / 32);
    for (int l = 0; l < 32; ++l) weights[l] = av_x + std::fabs(x[32 * j + l]);
    scales[j] =
        make_qkx2_quants(32, 15, x + 32 * j, weights, L + 32 * j, &mins[j], Laux, -1.f, 0.1f, 20);
    max_scale = std::max(max_scale, scales[j]);
    max_min = std::max(max_min, mins[j]);
  }
  uint8_t* sc = b + 4;
  std::memset(sc, 0, 12);
  const float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
  const float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
  for (int j = 0; j < 8; ++j) {
    // As ggml: the int result is narrowed to uint8_t first, then capped at 63.
    const auto ls = std::min<uint8_t>(63, static_cast<uint8_t>(nearest_int(inv_scale * scales[j])));
    const auto lm = std::min<uint8_t>(63, static_cast<uint8_t>(nearest_int(inv_min * mins[j])));
    if (j < 4) {
      sc[j] = ls;
      sc[j + 4] = lm;
    } else {
      sc[j + 4] = static_cast<uint8_t>((ls & 0xF) | ((lm & 0xF) << 4));
      sc[j - 4] |= static_cast<uint8_t>((ls >> 4) << 6);
      sc[j] |= static_cast<uint8_t>((lm >> 4) << 6);
    }
  }
  store_u16(b, fp32_to_fp16(max_scale / 63.f));
  store_u16(b + 2, fp32_to_fp16(max_min / 63.f));
  const float d_all = load_half(b), dmin_all = load_half(b + 2);
  for (int j = 0; j < 8; ++j) {
    uint8_t s, m;
    get_scale_min_k4(j, sc, &s, &m);
    const float d = d_all * s;
    if (d == 0.0f) continue;
    const float dm = dmin_all * m;
    for (int ii = 0; ii < 32; ++ii) {
      const int l = nearest_int((x[32 * j + ii] + dm) / d);
      L[32 * j + ii] = static_cast<uint8_t>(std::max(0, std::min(15, l)));
    }
  }
  uint8_t* q = b + 16;
  for (int j = 0; j < kQK_K; j += 64) {
    for (int l = 0; l < 32; ++l) q[l] = static_cast<uint8_t>(L[j + l] | (L[j + l + 32] << 4));
    q += 32;
  }
}

void quantize_q6_k(const float* x, uint8_t* b) {
  int8_t L[kQK_K];
  float scales[16];
  float max_scale = 0, max_abs_scale = 0;
  for (int ib = 0; ib < 16; ++ib) {
    scales[ib] = make_qx_quants(16, 32, x + 16 * ib, L + 16 * ib);
    if (std::fabs(scales[ib]) > max_abs_scale) {
      max_abs_scale = std::fabs(scales[ib]);
      max_scale = scales[ib];
    }
  }
  std::memset(b, 0, 210);
  if (max_abs_scale < 1e-15f) return;  // all zero: d = 0 and zero quants
  int8_t* sc = reinterpret_cast<int8_t*>(b + 192);
  const float iscale = -128.f / max_scale;
  store_u16(b + 208, fp32_to_fp16(1 / iscale));
  for (int ib = 0; ib < 16; ++ib) {
    sc[ib] = static_cast<int8_t>(std::min(127, nearest_int(iscale * scales[ib])));
  }
  const float d_all = load_half(b + 208);
  for (int j = 0; j < 16; ++j) {
    const float d = d_all * sc[j];
    if (d == 0.0f) continue;
    for (int ii = 0; ii < 16; ++ii) {
      const int l = nearest_int(x[16 * j + ii] / d);
      L[16 * j + ii] = static_cast<int8_t>(std::max(-32, std::min(31, l)) + 32);
    }
  }
  uint8_t* ql = b;
  uint8_t* qh = b + 128;
  for (int j = 0; j < kQK_K; j += 128) {
    for (int l = 0; l < 32; ++l) {
      const int q1 = L[j + l] & 0xF, q2 = L[j + l + 32] & 0xF;
      const int q3 = L[j + l + 64] & 0xF, q4 = L[j + l + 96] & 0xF;
      ql[l] = static_cast<uint8_t>(q1 | (q3 << 4));
      ql[l + 32] = static_cast<uint8_t>(q2 | (q4 << 4));
      qh[l] = static_cast<uint8_t>((L[j + l] >> 4) | ((L[j + l + 32] >> 4) << 2) |
                                   ((L[j + l + 64] >> 4) << 4) | ((L[j + l + 96] >> 4) << 6));
    }
    ql += 64;
    qh += 32;
  }
}

using BlockDequantizer = void (*)(const uint8_t*, float*);
using BlockQuantizer = void (*)(const float*, uint8_t*);

BlockDequantizer block_dequantizer(DType type) {
  switch (type) {
    case DType::Q4_0:
      return dequantize_q4_0;
    case DType::Q4_1:
      return dequantize_q4_1;
    case DType::Q5_0:
      return dequantize_q5_0;
    case DType::Q5_1:
      return dequantize_q5_1;
    case DType::Q8_0:
      return dequantize_q8_0;
    case DType::Q4_K:
      return dequantize_q4_k;
    case DType::Q5_K:
      return dequantize_q5_k;
    case DType::Q6_K:
      return dequantize_q6_k;
    default:
      return nullptr;
  }
}

BlockQuantizer block_quantizer(DType type) {
  switch (type) {
    case DType::Q4_0:
      return quantize_q4_0;
    case DType::Q4_1:
      return quantize_q4_1;
    case DType::Q5_0:
      return quantize_q5_0;
    case DType::Q5_1:
      return quantize_q5_1;
    case DType::Q8_0:
      return quantize_q8_0;
    case DType::Q4_K:
      return quantize_q4_k;
    case DType::Q6_K:
      return quantize_q6_k;
    default:
      return nullptr;
  }
}

void check_row_length(const char* what, DType type, int64_t n) {
  const DTypeTraits& t = traits(type);
  if (n < 0 || n % t.block_size != 0) {
    fail("{}: row of {} elements is not a multiple of the {} block size {}", what, n, t.name,
         t.block_size);
  }
}

}  // namespace

std::optional<DTypeTraits> dtype_traits(uint32_t type_id) {
  const TraitsEntry* e = find_entry(type_id);
  if (e == nullptr) return std::nullopt;
  return e->traits;
}

const DTypeTraits& traits(DType type) {
  const TraitsEntry* e = find_entry(static_cast<uint32_t>(type));
  if (e == nullptr) fail("unknown tensor type id {}", static_cast<uint32_t>(type));
  return e->traits;
}

std::optional<DType> parse_dtype(std::string_view name) {
  for (const TraitsEntry& e : kTraits) {
    const std::string_view known = e.traits.name;
    if (known.size() != name.size()) continue;
    bool same = true;
    for (size_t i = 0; i < known.size() && same; ++i) {
      same = std::tolower(static_cast<unsigned char>(known[i])) ==
             std::tolower(static_cast<unsigned char>(name[i]));
    }
    if (same) return e.type;
  }
  return std::nullopt;
}

float fp16_to_fp32(uint16_t h) {
  const uint32_t sign = uint32_t{h & 0x8000u} << 16;
  const uint32_t exponent = (h >> 10) & 0x1F;
  uint32_t mantissa = h & 0x3FFu;
  if (exponent == 0x1F) return bits_float(sign | 0x7F800000u | (mantissa << 13));  // inf, NaN
  if (exponent != 0) return bits_float(sign | ((exponent + 112) << 23) | (mantissa << 13));
  if (mantissa == 0) return bits_float(sign);  // signed zero
  // Subnormal half: normalise into a float (every half is exact in float).
  int shift = 0;
  while ((mantissa & 0x400u) == 0) {
    mantissa <<= 1;
    ++shift;
  }
  const auto exponent_bits = static_cast<uint32_t>(113 - shift) << 23;
  return bits_float(sign | exponent_bits | ((mantissa & 0x3FFu) << 13));
}

uint16_t fp32_to_fp16(float f) {
  const uint32_t x = float_bits(f);
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
  const uint32_t abs = x & 0x7FFFFFFFu;
  if (abs > 0x7F800000u) {  // NaN: keep it quiet and keep the top payload bits, as F16C does
    return static_cast<uint16_t>(sign | 0x7E00u | ((abs >> 13) & 0x3FFu));
  }
  if (abs >= 0x477FF000u) return static_cast<uint16_t>(sign | 0x7C00u);  // rounds to >= 65520
  if (abs >= 0x38800000u) {  // normal half range (>= 2^-14)
    // Rebias the exponent (127 -> 15) in place; a carry out of the mantissa when rounding
    // correctly bumps the exponent.
    uint32_t half = (abs >> 13) - (112u << 10);
    const uint32_t rest = abs & 0x1FFFu;
    if (rest > 0x1000u || (rest == 0x1000u && (half & 1u))) ++half;  // ties to even
    return static_cast<uint16_t>(sign | half);
  }
  if (abs < 0x33000000u) return sign;  // below half the smallest subnormal: zero
  // Subnormal half: value = m * 2^-24, m = significand shifted right, rounded to even.
  const uint32_t exponent = abs >> 23;
  const uint32_t significand = (abs & 0x7FFFFFu) | 0x800000u;
  const uint32_t shift = 126 - exponent;  // 14..24 here
  uint32_t m = significand >> shift;
  const uint32_t rest = significand & ((1u << shift) - 1);
  const uint32_t halfway = 1u << (shift - 1);
  if (rest > halfway || (rest == halfway && (m & 1u))) ++m;
  return static_cast<uint16_t>(sign | m);
}

float bf16_to_fp32(uint16_t h) { return bits_float(uint32_t{h} << 16); }

uint16_t fp32_to_bf16(float f) {
  const uint32_t x = float_bits(f);
  if ((x & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<uint16_t>((x >> 16) | 64);  // quiet NaN
  return static_cast<uint16_t>((x + (0x7FFFu + ((x >> 16) & 1u))) >> 16);  // ties to even
}

void dequantize_row(DType type, const void* src, float* dst, int64_t n) {
  check_row_length("dequantize_row", type, n);
  const auto* bytes = static_cast<const uint8_t*>(src);
  switch (type) {
    case DType::F32:
      std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float));
      return;
    case DType::F16:
      for (int64_t i = 0; i < n; ++i) dst[i] = fp16_to_fp32(load_u16(bytes + 2 * i));
      return;
    case DType::BF16:
      for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_fp32(load_u16(bytes + 2 * i));
      return;
    default:
      break;
  }
  const BlockDequantizer dequantize_block = block_dequantizer(type);
  if (dequantize_block == nullptr) fail("dequantize_row: cannot read type {}", traits(type).name);
  const DTypeTraits& t = traits(type);
  for (int64_t block = 0; block < n / t.block_size; ++block) {
    dequantize_block(bytes + block * t.block_bytes, dst + block * t.block_size);
  }
}

bool quantize_row(DType type, const float* src, void* dst, int64_t n) {
  auto* bytes = static_cast<uint8_t*>(dst);
  switch (type) {
    case DType::F32:
      check_row_length("quantize_row", type, n);
      std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float));
      return true;
    case DType::F16:
      check_row_length("quantize_row", type, n);
      for (int64_t i = 0; i < n; ++i) store_u16(bytes + 2 * i, fp32_to_fp16(src[i]));
      return true;
    case DType::BF16:
      check_row_length("quantize_row", type, n);
      for (int64_t i = 0; i < n; ++i) store_u16(bytes + 2 * i, fp32_to_bf16(src[i]));
      return true;
    default:
      break;
  }
  const BlockQuantizer quantize_block = block_quantizer(type);
  if (quantize_block == nullptr) return false;
  check_row_length("quantize_row", type, n);
  const DTypeTraits& t = traits(type);
  for (int64_t block = 0; block < n / t.block_size; ++block) {
    quantize_block(src + block * t.block_size, bytes + block * t.block_bytes);
  }
  return true;
}

}  // namespace skiff
