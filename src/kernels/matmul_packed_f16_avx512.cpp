// AVX-512 kernel for F16 weights packed column by column in groups of 16 rows (layout in
// kernels/repack.h), inputs in the F32Tiles layout (kernels/matmul_impl.h).
//
// One 32-byte load and a vcvtph2ps give one column of 16 rows as floats; a vfmadd with one
// input broadcast advances those 16 outputs. A tile of G groups x C positions keeps G x C
// accumulators and converts G vectors per G x C vfmadds: 2 per 24 in prefill (2 groups x 12
// positions), where the row-major tile (4 rows x 6 positions, a dot product per lane) converts
// 4 weight vectors and loads 6 input vectors per 24, and that was its limit.
//
// Every output element is one chain acc = fma(w[k], x[k], acc) over k = 0 .. Kp-1 in order,
// from 0 (the padding adds exact zeros), whatever the tile, T or the thread count; prefill
// keeps its partial sums in y between blocks of columns, which is exact. So matmul.h's
// invariants hold bit for bit.
#include "kernels/avx512_util.h"  // first: its pragmas cover this file

#include <algorithm>

#include "kernels/matmul_impl.h"
#include "kernels/repack.h"

namespace skiff::kernels {
namespace {

constexpr int64_t kChunk = kPackedF16ChunkCols;

// Groups g .. g+G-1 of one super-group (their chunk j0 at chunk0, group g + i at
// chunk0 + i * kPackedF16ChunkBytes, chunk j0 + n at n * chunk_stride) x the C positions of
// an input tile (xp: its column k0 = 64 * j0, C floats per column), for n_chunks chunks.
// Accumulators start at zero (first) or from out; rows past `valid` are neither read nor
// stored. kFromDram: the weights are read once (decode, a verification): each group's next
// chunk is prefetched into L2 while this one is read, as the row-major decode prefetches its
// next row tile (a software-visible stream per group defeats neither; without it 0.75x).
template <int G, int C, bool kFromDram>
void f16_tile(const uint8_t* chunk0, size_t chunk_stride, int64_t n_chunks, const float* xp, bool first,
              float* out, int64_t out_stride, int64_t valid) {
  __mmask16 keep[G];
  _Pragma("GCC unroll 8") for (int g = 0; g < G; ++g) {
    const int64_t n = std::clamp<int64_t>(valid - 16 * g, 0, 16);
    keep[g] = n == 16 ? __mmask16{0xFFFF} : static_cast<__mmask16>((1u << n) - 1);
  }
  __m512 acc[G][C];
  _Pragma("GCC unroll 8") for (int g = 0; g < G; ++g)
    _Pragma("GCC unroll 16") for (int c = 0; c < C; ++c)
      acc[g][c] = first ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(keep[g], out + c * out_stride + 16 * g);
  __mmask16 all = 0xFFFF;
  asm("" : "+r"(all));
  for (int64_t n = 0; n < n_chunks; ++n) {
    const uint8_t* chunk = chunk0 + static_cast<size_t>(n) * chunk_stride;
    const float* xk = xp + n * kChunk * C;
    for (int64_t k = 0; k < kChunk; ++k) {
      __m512 wv[G];
      _Pragma("GCC unroll 8") for (int g = 0; g < G; ++g) {
        const uint8_t* p = chunk + g * kPackedF16ChunkBytes + 32 * k;
        // From DRAM, a masked load with a mask the compiler cannot see through: as a plain load
        // (or folded into vcvtph2ps) decode streamed 0.7-0.85x as fast; from cache, the plain
        // load is faster (0.95x masked).
        wv[g] = _mm512_cvtph_ps(kFromDram ? _mm256_maskz_loadu_epi16(all, p) : _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
      }
      if (kFromDram) {
        const char* next = reinterpret_cast<const char*>(chunk + chunk_stride) + k * G * 32;
        _Pragma("GCC unroll 8") for (int q = 0; q < (G + 1) / 2; ++q) _mm_prefetch(next + 64 * q, _MM_HINT_T1);
      }
      _Pragma("GCC unroll 16") for (int c = 0; c < C; ++c) {
        const __m512 xv = _mm512_set1_ps(xk[k * C + c]);
        _Pragma("GCC unroll 8") for (int g = 0; g < G; ++g) acc[g][c] = _mm512_fmadd_ps(wv[g], xv, acc[g][c]);
      }
    }
  }
  _Pragma("GCC unroll 8") for (int g = 0; g < G; ++g)
    _Pragma("GCC unroll 16") for (int c = 0; c < C; ++c) _mm512_mask_storeu_ps(out + c * out_stride + 16 * g, keep[g], acc[g][c]);
}

// f16_tile<G, C, kFromDram> for runtime g in 1..MaxG and c in 1..MaxC.
template <int MaxG, int MaxC, bool kFromDram>
struct TileTable {
  using Fn = void (*)(const uint8_t*, size_t, int64_t, const float*, bool, float*, int64_t, int64_t);
  Fn fn[MaxG][MaxC];
  template <int G, int C>
  constexpr void fill() {
    fn[G - 1][C - 1] = f16_tile<G, C, kFromDram>;
    if constexpr (C < MaxC) fill<G, C + 1>();
    else if constexpr (G < MaxG) fill<G + 1, 1>();
  }
  constexpr TileTable() : fn{} { fill<1, 1>(); }
};
// Decode and small batches (one position tile, weights from DRAM): up to 8 groups x 3
// positions, 4 x 6 or 2 x 12. Prefill: 2 groups x up to 12 positions.
constexpr TileTable<8, 3, true> kWideTiles;
constexpr TileTable<4, 6, true> kMidTiles;
constexpr TileTable<2, kF32TilePositions, true> kDramTiles;
constexpr TileTable<2, kF32TilePositions, false> kCachedTiles;

void run_packed_f16(const TensorView& w, int64_t r0, int64_t r1, const uint8_t* in, size_t /*in_stride*/, int64_t T,
                    float* y, int64_t y_stride) {
  if (r1 <= r0) return;
  const PackedF16Layout l = packed_f16_layout(w.rows, w.cols);
  const int64_t kp = l.chunks * kChunk;
  const float* x = reinterpret_cast<const float*>(in);
  const int64_t g_first = r0 / kPackedGroupRows, g_end = (r1 + kPackedGroupRows - 1) / kPackedGroupRows;
  // Runs groups [g, g + n) (one super-group) on a position tile, chunks [j0, j1).
  auto tile = [&](auto fn, int64_t g, PositionTile pt, int64_t j0, int64_t j1) {
    fn(w.packed + l.offset(g, j0), l.chunk_stride(g), j1 - j0, x + pt.t0 * kp + j0 * kChunk * pt.c, j0 == 0,
       y + pt.t0 * y_stride + g * kPackedGroupRows, y_stride, r1 - g * kPackedGroupRows);
  };
  // The pieces of [g_first, g_end) inside one super-group each.
  auto pieces = [&](int64_t most, auto&& body) {
    for (int64_t g = g_first; g < g_end;) {
      const int64_t sg_end = (g / kPackedF16SuperGroup + 1) * kPackedF16SuperGroup;
      const int64_t n = std::min({most, g_end - g, sg_end - g});
      body(g, n);
      g += n;
    }
  };
  if (position_tiles(T) == 1) {
    // Every weight read once, from DRAM: as many groups as the registers allow, all chunks.
    const PositionTile pt = position_tile(T, 0);
    if (pt.c <= 3) {
      pieces(8, [&](int64_t g, int64_t n) { tile(kWideTiles.fn[n - 1][pt.c - 1], g, pt, 0, l.chunks); });
    } else if (pt.c <= 6) {
      pieces(4, [&](int64_t g, int64_t n) { tile(kMidTiles.fn[n - 1][pt.c - 1], g, pt, 0, l.chunks); });
    } else {
      pieces(2, [&](int64_t g, int64_t n) { tile(kDramTiles.fn[n - 1][pt.c - 1], g, pt, 0, l.chunks); });
    }
    return;
  }
  // Prefill: blocks of groups x columns of about 384 KiB of weights stay in L2 while every
  // position tile passes over them; a tile's 512 columns of inputs (24 KiB) stay in L1 while
  // the block's groups pass.
  constexpr int64_t kBlockChunks = 8;
  const int64_t block_groups =
      std::max<int64_t>(2, static_cast<int64_t>((size_t{384} << 10) / (kBlockChunks * kPackedF16ChunkBytes)));
  for (int64_t b0 = g_first; b0 < g_end; b0 += block_groups) {
    const int64_t b1 = std::min(g_end, b0 + block_groups);
    for (int64_t j0 = 0; j0 < l.chunks; j0 += kBlockChunks) {
      const int64_t j1 = std::min(l.chunks, j0 + kBlockChunks);
      for (int64_t i = 0, n_tiles = position_tiles(T); i < n_tiles; ++i) {
        const PositionTile pt = position_tile(T, i);
        // The first position tile reads the block from DRAM: prefetching, as decode does.
        const auto& fns = i == 0 ? kDramTiles.fn : kCachedTiles.fn;
        for (int64_t g = b0; g < b1;) {
          const int64_t sg_end = (g / kPackedF16SuperGroup + 1) * kPackedF16SuperGroup;
          const int64_t n = std::min({int64_t{2}, b1 - g, sg_end - g});
          tile(fns[n - 1][pt.c - 1], g, pt, j0, j1);
          g += n;
        }
      }
    }
  }
}

}  // namespace

MatmulKernel matmul_kernel_packed_f16_avx512() { return {InputFormat::F32Tiles, run_packed_f16}; }

}  // namespace skiff::kernels
