// AVX-512 kernels for Q4_0 and Q8_0 weights packed in groups of 16 rows (layout in
// kernels/repack.h).
//
// One zmm holds 16 rows x 4 unsigned weight bytes; vpdpbusd against 4 input bytes broadcast to
// every lane advances all 16 rows' dot products at once, so a block of 32 weights takes 8 of
// them per position, then one conversion and one fma with the 16 rows' scales times the
// input's scale:
//   acc[row] = fma(float(-bias * sum(x) + sum_k dpbusd(w_k, x_k)), d_w[row] * d_x, acc[row])
// per block (bias: Q4_0's nibbles carry +8, packed Q8_0 bytes +128).
// The integer sum is exact (any order), and every output element gets that same float
// sequence over its blocks whatever the tile shape, so results do not depend on T, on where a
// position falls in a tile, or on the thread count (matmul.h's invariants).
#include "kernels/avx512_util.h"  // first: its pragmas cover this file

#include <algorithm>
#include <array>
#include <cstring>
#include <utility>

#include "kernels/matmul_impl.h"
#include "kernels/repack.h"

namespace skiff::kernels {
namespace {

inline int load_i32(const void* p) {
  int v;
  std::memcpy(&v, p, 4);
  return v;
}

// The 8 weight vectors of one (group, block): element k's 4-byte lanes in w[k].
struct Q4_0Packed {
  static constexpr size_t kBlockBytes = kPackedQ4_0BlockBytes;
  static constexpr int kBias = 8;
  static void unpack(const uint8_t* blk, __m512i w[8]) {
    const __m512i low = _mm512_set1_epi8(0x0F);
    _Pragma("GCC unroll 4") for (int i = 0; i < 4; ++i) {
      const __m512i v = _mm512_loadu_si512(blk + 32 + 64 * i);
      w[i] = _mm512_and_si512(v, low);                            // elements 4i .. 4i+3
      w[4 + i] = _mm512_and_si512(_mm512_srli_epi16(v, 4), low);  // elements 16+4i ..
    }
  }
};
struct Q8_0Packed {
  static constexpr size_t kBlockBytes = kPackedQ8_0BlockBytes;
  static constexpr int kBias = 128;
  static void unpack(const uint8_t* blk, __m512i w[8]) {
    _Pragma("GCC unroll 8") for (int k = 0; k < 8; ++k) w[k] = _mm512_loadu_si512(blk + 32 + 64 * k);
  }
};

// Software prefetch distance of a tile of several positions that reads its weights once (from
// memory). Decode (one position) streams at the read bandwidth on the hardware prefetchers
// alone (prefetching 0.5-8 KiB ahead measured slower there; docs/KERNELS.md), but a tile of
// 2-8 positions spends several times the cycles per cache line, the hardware prefetchers then
// run too little ahead, and memory and compute add up: 5 positions took 1.6-1.9x a decode
// step's time on Q8_0 weights. 8 KiB ahead makes it 1.0-1.4x (4 KiB: 1.1-1.5x; 16 KiB: no
// better; docs/KERNELS.md, "Verification tiles").
constexpr size_t kPrefetchBytes = 8192;

// Groups g0 .. g0+G-1 (16 rows each) x positions xs[0..C): out[c * out_stride + 16 g + lane],
// rows past `valid` (the matrix's end within this tile) not stored. prefetch: several
// positions in the only tile that reads these weights (they come from memory, not from L2).
template <class W, int G, int C>
void packed_tile(const uint8_t* group0, size_t group_bytes, const Q8Block* const* xs, int64_t nb, float* out,
                 int64_t out_stride, int64_t valid, bool prefetch) {
  __m512 acc[G][C];
  _Pragma("GCC unroll 8") for (int g = 0; g < G; ++g)
    _Pragma("GCC unroll 8") for (int c = 0; c < C; ++c) acc[g][c] = _mm512_setzero_ps();
  for (int64_t b = 0; b < nb; ++b) {
    _Pragma("GCC unroll 4") for (int g = 0; g < G; ++g) {
      const uint8_t* blk = group0 + g * group_bytes + static_cast<size_t>(b) * W::kBlockBytes;
      if (prefetch) {
        _Pragma("GCC unroll 16") for (size_t o = 0; o < W::kBlockBytes; o += 64)
          _mm_prefetch(reinterpret_cast<const char*>(blk + kPrefetchBytes + o), _MM_HINT_T0);
      }
      const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk)));
      __m512i w[8];
      W::unpack(blk, w);
      _Pragma("GCC unroll 8") for (int c = 0; c < C; ++c) {
        const Q8Block& x = xs[c][b];
        // Element k's 4 inputs are x[4k .. 4k+3] for all 8 vectors. Up to 4 positions, two
        // chains each for latency; more positions are enough chains one each (registers).
        __m512i s0 = _mm512_set1_epi32(-W::kBias * x.sum);
        if constexpr (C <= 4) {
          __m512i s1 = _mm512_setzero_si512();
          _Pragma("GCC unroll 4") for (int k = 0; k < 8; k += 2) {
            s0 = _mm512_dpbusd_epi32(s0, w[k], _mm512_set1_epi32(load_i32(x.x + 4 * k)));
            s1 = _mm512_dpbusd_epi32(s1, w[k + 1], _mm512_set1_epi32(load_i32(x.x + 4 * k + 4)));
          }
          s0 = _mm512_add_epi32(s0, s1);
        } else {
          _Pragma("GCC unroll 8") for (int k = 0; k < 8; ++k)
            s0 = _mm512_dpbusd_epi32(s0, w[k], _mm512_set1_epi32(load_i32(x.x + 4 * k)));
        }
        const __m512 sum = _mm512_cvtepi32_ps(s0);
        acc[g][c] = _mm512_fmadd_ps(sum, _mm512_mul_ps(dw, _mm512_set1_ps(x.d)), acc[g][c]);
      }
    }
  }
  _Pragma("GCC unroll 8") for (int g = 0; g < G; ++g) {
    const int64_t n = std::clamp<int64_t>(valid - 16 * g, 0, 16);
    const __mmask16 m = n == 16 ? __mmask16{0xFFFF} : static_cast<__mmask16>((1u << n) - 1);
    _Pragma("GCC unroll 8") for (int c = 0; c < C; ++c) _mm512_mask_storeu_ps(out + c * out_stride + 16 * g, m, acc[g][c]);
  }
}


// Positions per tile, and up to how many positions are one tile (a verification's D + 1:
// each weight block is then read and scaled once), and the decode tile's groups.
constexpr int kPositions = 4;
constexpr int kOneTile = 8;
constexpr int kDecodeGroups = 2;

// packed_tile<W, 1, c> for c = 1 .. kOneTile, indexed by c - 1.
template <class W, int... I>
constexpr auto one_group_tiles(std::integer_sequence<int, I...>) {
  return std::array{packed_tile<W, 1, I + 1>...};
}

template <class W>
void run_packed(const TensorView& w, int64_t r0, int64_t r1, const uint8_t* in, size_t in_stride, int64_t T,
                     float* y, int64_t y_stride) {
  if (r1 <= r0) return;
  const int64_t nb = w.cols / 32;
  const size_t group_bytes = static_cast<size_t>(nb) * W::kBlockBytes;
  // Groups in blocks of about 384 KiB of weights (they stay in L2 while every position tile
  // passes over them; the same reasoning as matmul_avx512.cpp's run_tiles).
  const int64_t g_first = r0 / kPackedGroupRows, g_end = (r1 + kPackedGroupRows - 1) / kPackedGroupRows;
  const int64_t g_block = std::max<int64_t>(2, static_cast<int64_t>((size_t{384} << 10) / group_bytes));
  const int64_t n_tiles = T <= kOneTile ? 1 : (T + kPositions - 1) / kPositions;
  const bool prefetch = n_tiles == 1 && T > 1;
  static constexpr auto kOneGroupTiles = one_group_tiles<W>(std::make_integer_sequence<int, kOneTile>{});
  for (int64_t gb0 = g_first; gb0 < g_end; gb0 += g_block) {
    const int64_t gb1 = std::min(g_end, gb0 + g_block);
    for (int64_t tile = 0, t0 = 0; tile < n_tiles; ++tile) {
      const int c = static_cast<int>(T / n_tiles + (tile < T % n_tiles ? 1 : 0));
      const Q8Block* xs[kOneTile];
      for (int j = 0; j < c; ++j) xs[j] = reinterpret_cast<const Q8Block*>(in + static_cast<size_t>(t0 + j) * in_stride);
      const int step = c == 1 ? kDecodeGroups : 1;
      for (int64_t g = gb0; g < gb1; g += step) {
        const int ng = static_cast<int>(std::min<int64_t>(step, gb1 - g));
        const uint8_t* g0 = w.packed + static_cast<size_t>(g) * group_bytes;
        float* out = y + t0 * y_stride + g * kPackedGroupRows;
        const int64_t valid = r1 - g * kPackedGroupRows;
        if (ng == 2) packed_tile<W, 2, 1>(g0, group_bytes, xs, nb, out, y_stride, valid, prefetch);
        else kOneGroupTiles[static_cast<size_t>(c - 1)](g0, group_bytes, xs, nb, out, y_stride, valid, prefetch);
      }
      t0 += c;
    }
  }
}

}  // namespace

MatmulKernel matmul_kernel_packed_avx512(DType type) {
  if (type == DType::Q4_0) return {InputFormat::Q8Blocks, run_packed<Q4_0Packed>};
  if (type == DType::Q8_0) return {InputFormat::Q8Blocks, run_packed<Q8_0Packed>};
  if (packed_by_columns(type)) return matmul_kernel_packed_columns_avx512(type);
  return {};
}

}  // namespace skiff::kernels
