// AVX-512 kernels for F32, F16 and BF16 weights packed column by column in groups of 16 rows
// (layout in kernels/repack.h), inputs in the F32Tiles / BF16Tiles layouts (matmul_impl.h).
//
// F16: one 32-byte load and a vcvtph2ps give one column of 16 rows as floats (F32: one 64-byte
// load); a vfmadd with one input broadcast advances those 16 outputs. BF16: one 64-byte load
// is a column pair of 16 rows; a vdpbf16ps with one input pair broadcast adds both products to
// the 16 outputs. A tile of G groups x C positions keeps G x C accumulators and loads (F16:
// and converts) G vectors per G x C multiply-add instructions: 2 per 24 in prefill (2 groups x
// 12 positions), where the row-major tiles (4 rows x 6 positions, a dot product per lane) load
// 4 weight vectors and 6 input vectors per 24, and F16 converts the 4: that was their limit.
//
// Every output element is one chain of those instructions over k = 0 .. Kp-1 in order (F16:
// acc = fma(w[k], x[k], acc); BF16: per column pair), from 0 (the padding adds exact zeros),
// whatever the tile, T or the thread count; prefill keeps its partial sums in y between blocks
// of columns, which is exact. So matmul.h's invariants hold bit for bit.
#include "kernels/avx512_util.h"  // first: its pragmas cover this file

#include <algorithm>

#include "kernels/cpu.h"
#include "kernels/matmul_impl.h"
#include "kernels/repack.h"

namespace skiff::kernels {
namespace {

constexpr int64_t kChunk = kPackedColumnsChunkCols;

// One step: a column (F32, F16) or column pair (BF16) of 16 rows, against one broadcast input.
struct F32Columns {
  using Input = float;
  using Vec = __m512;
  static constexpr int kSteps = kChunk;  // per chunk
  static constexpr int kStepBytes = 64;
  static constexpr size_t kChunkBytes = kSteps * kStepBytes;  // one group's chunk
  static Vec load(const uint8_t* p, __mmask32 opaque, bool masked) {
    return masked ? _mm512_maskz_loadu_ps(static_cast<__mmask16>(opaque), p) : _mm512_loadu_ps(p);
  }
  static __m512 madd(__m512 acc, Vec w, Input x) { return _mm512_fmadd_ps(w, _mm512_set1_ps(x), acc); }
};
struct F16Columns {
  using Input = float;
  using Vec = __m512;
  static constexpr int kSteps = kChunk;  // per chunk
  static constexpr int kStepBytes = 32;
  static constexpr size_t kChunkBytes = kSteps * kStepBytes;
  static Vec load(const uint8_t* p, __mmask32 opaque, bool masked) {
    return _mm512_cvtph_ps(masked ? _mm256_maskz_loadu_epi16(static_cast<__mmask16>(opaque), p)
                                  : _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  }
  static __m512 madd(__m512 acc, Vec w, Input x) { return _mm512_fmadd_ps(w, _mm512_set1_ps(x), acc); }
};
struct BF16Columns {
  using Input = uint32_t;  // a bf16 pair
  using Vec = __m512i;
  static constexpr int kSteps = kChunk / 2;
  static constexpr int kStepBytes = 64;
  static constexpr size_t kChunkBytes = kSteps * kStepBytes;
  static Vec load(const uint8_t* p, __mmask32 opaque, bool masked) {
    return masked ? _mm512_maskz_loadu_epi16(opaque, p) : _mm512_loadu_si512(p);
  }
  static __m512 madd(__m512 acc, Vec w, Input x) {
    return _mm512_dpbf16_ps(acc, (__m512bh)w, (__m512bh)_mm512_set1_epi32(static_cast<int>(x)));
  }
};

// Groups g .. g+G-1 of one super-group (their chunk j0 at chunk0, group g + i at
// chunk0 + i * W::kChunkBytes, chunk j0 + n at n * chunk_stride) x the C positions of
// an input tile (xp: its column k0 = 64 * j0, C floats per column), for n_chunks chunks.
// Accumulators start at zero (first) or from out; rows past `valid` are neither read nor
// stored. kFromDram: the weights are read once (decode, a verification): each group's next
// chunk is prefetched into L2 while this one is read, as the row-major decode prefetches its
// next row tile (a software-visible stream per group defeats neither; without it 0.75x).
template <class W, int G, int C, bool kFromDram>
void columns_tile(const uint8_t* chunk0, size_t chunk_stride, int64_t n_chunks, const void* x_tile, bool first,
                  float* out, int64_t out_stride, int64_t valid) {
  const auto* xp = static_cast<const typename W::Input*>(x_tile);
  __mmask16 keep[G];
  _Pragma("GCC unroll 8") for (int g = 0; g < G; ++g) {
    const int64_t n = std::clamp<int64_t>(valid - 16 * g, 0, 16);
    keep[g] = n == 16 ? __mmask16{0xFFFF} : static_cast<__mmask16>((1u << n) - 1);
  }
  __m512 acc[G][C];
  _Pragma("GCC unroll 8") for (int g = 0; g < G; ++g)
    _Pragma("GCC unroll 16") for (int c = 0; c < C; ++c)
      acc[g][c] = first ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(keep[g], out + c * out_stride + 16 * g);
  __mmask32 all = ~__mmask32{0};
  asm("" : "+r"(all));
  for (int64_t n = 0; n < n_chunks; ++n) {
    const uint8_t* chunk = chunk0 + static_cast<size_t>(n) * chunk_stride;
    const typename W::Input* xk = xp + n * W::kSteps * C;
    for (int64_t k = 0; k < W::kSteps; ++k) {
      typename W::Vec wv[G];
      // From DRAM, a masked load with a mask the compiler cannot see through: as a plain load
      // (or folded into vcvtph2ps) decode streamed 0.7-0.85x as fast; from cache, the plain
      // load is faster (0.95x masked).
      _Pragma("GCC unroll 8") for (int g = 0; g < G; ++g)
        wv[g] = W::load(chunk + g * W::kChunkBytes + W::kStepBytes * k, all, kFromDram);
      if (kFromDram) {
        const char* next = reinterpret_cast<const char*>(chunk + chunk_stride) + k * G * W::kStepBytes;
        _Pragma("GCC unroll 8") for (int q = 0; q < (G * W::kStepBytes + 63) / 64; ++q) _mm_prefetch(next + 64 * q, _MM_HINT_T1);
      }
      _Pragma("GCC unroll 16") for (int c = 0; c < C; ++c) {
        const typename W::Input xv = xk[k * C + c];
        _Pragma("GCC unroll 8") for (int g = 0; g < G; ++g) acc[g][c] = W::madd(acc[g][c], wv[g], xv);
      }
    }
  }
  _Pragma("GCC unroll 8") for (int g = 0; g < G; ++g)
    _Pragma("GCC unroll 16") for (int c = 0; c < C; ++c) _mm512_mask_storeu_ps(out + c * out_stride + 16 * g, keep[g], acc[g][c]);
}

// columns_tile<W, G, C, kFromDram> for runtime g in 1..MaxG and c in 1..MaxC.
template <class W, int MaxG, int MaxC, bool kFromDram>
struct TileTable {
  using Fn = void (*)(const uint8_t*, size_t, int64_t, const void*, bool, float*, int64_t, int64_t);
  Fn fn[MaxG][MaxC];
  template <int G, int C>
  constexpr void fill() {
    fn[G - 1][C - 1] = columns_tile<W, G, C, kFromDram>;
    if constexpr (C < MaxC) fill<G, C + 1>();
    else if constexpr (G < MaxG) fill<G + 1, 1>();
  }
  constexpr TileTable() : fn{} { fill<1, 1>(); }
};
// Decode and small batches (one position tile, weights from DRAM): up to 8 groups x 3
// positions, 4 x 6 or 2 x 12. Prefill: 2 groups x up to 12 positions.
template <class W>
struct Tiles {
  static constexpr TileTable<W, 8, 3, true> kWide{};
  static constexpr TileTable<W, 4, 6, true> kMid{};
  static constexpr TileTable<W, 2, kF32TilePositions, true> kDram{};
  static constexpr TileTable<W, 2, kF32TilePositions, false> kCached{};
};

template <class W>
void run_packed_columns(const TensorView& w, int64_t r0, int64_t r1, const uint8_t* in, size_t /*in_stride*/,
                        int64_t T, float* y, int64_t y_stride) {
  if (r1 <= r0) return;
  const PackedColumnsLayout l = packed_columns_layout(w.rows, w.cols, w.type);
  const int64_t kp = l.chunks * W::kSteps;  // inputs per position
  const auto* x = reinterpret_cast<const typename W::Input*>(in);
  const int64_t g_first = r0 / kPackedGroupRows, g_end = (r1 + kPackedGroupRows - 1) / kPackedGroupRows;
  // Runs groups [g, g + n) (one super-group) on a position tile, chunks [j0, j1).
  auto tile = [&](auto fn, int64_t g, PositionTile pt, int64_t j0, int64_t j1) {
    fn(w.packed + l.offset(g, j0), l.chunk_stride(g), j1 - j0, x + pt.t0 * kp + j0 * W::kSteps * pt.c, j0 == 0,
       y + pt.t0 * y_stride + g * kPackedGroupRows, y_stride, r1 - g * kPackedGroupRows);
  };
  // Groups [begin, end) in pieces of at most `most`, none across a super-group's end.
  auto pieces = [](int64_t begin, int64_t end, int64_t most, auto&& body) {
    for (int64_t g = begin; g < end;) {
      const int64_t sg_end = (g / kPackedColumnsSuperGroup + 1) * kPackedColumnsSuperGroup;
      const int64_t n = std::min({most, end - g, sg_end - g});
      body(g, n);
      g += n;
    }
  };
  if (position_tiles(T) == 1) {
    // Every weight read once, from DRAM, a super-group (16 KiB per chunk) at a time: as many
    // groups per tile as the registers allow (8, 4 or 2); with fewer than 8, the tiles take
    // turns chunk by chunk (partial sums in y), so the reads still run through memory in order
    // (whole tiles one after another: 0.90-0.92x the row-major kernel at T = 5).
    const PositionTile pt = position_tile(T, 0);
    auto dram_pass = [&](const auto& table, int64_t most) {
      pieces(g_first, g_end, kPackedColumnsSuperGroup, [&](int64_t g, int64_t n) {
        if (n <= most) return tile(table.fn[n - 1][pt.c - 1], g, pt, 0, l.chunks);
        for (int64_t j = 0; j < l.chunks; ++j)
          for (int64_t h = g; h < g + n; h += most) tile(table.fn[std::min(most, g + n - h) - 1][pt.c - 1], h, pt, j, j + 1);
      });
    };
    if (pt.c <= 3) {
      dram_pass(Tiles<W>::kWide, 8);
    } else if (pt.c <= 6) {
      dram_pass(Tiles<W>::kMid, 4);
    } else {
      dram_pass(Tiles<W>::kDram, 2);
    }
    return;
  }
  // Prefill: blocks of groups x columns of about 384 KiB of weights stay in L2 while every
  // position tile passes over them; a tile's 512 columns of inputs (24 KiB; F32 weights: 256
  // columns, 12 KiB) stay in L1 while the block's groups pass.
  constexpr int64_t kBlockChunks = 8 * kPackedColumnsChunkBytes / W::kChunkBytes;
  constexpr int64_t block_groups = (int64_t{384} << 10) / (kBlockChunks * W::kChunkBytes);  // 24
  static_assert(block_groups % kPackedColumnsSuperGroup == 0);
  // Block boundaries at multiples of block_groups (a multiple of the super-group's 8) whatever
  // this call's first group (a thread's share starts at any group of 16 rows): else every
  // block of a share that starts at an odd group would split two pairs of groups into
  // single-group tiles, which run at about half speed.
  static_assert(kPackedColumnsSuperGroup % 2 == 0);
  for (int64_t b0 = g_first, b1; b0 < g_end; b0 = b1) {
    b1 = std::min(g_end, (b0 / block_groups + 1) * block_groups);
    for (int64_t j0 = 0; j0 < l.chunks; j0 += kBlockChunks) {
      const int64_t j1 = std::min(l.chunks, j0 + kBlockChunks);
      for (int64_t i = 0, n_tiles = position_tiles(T); i < n_tiles; ++i) {
        const PositionTile pt = position_tile(T, i);
        // The first position tile reads the block from DRAM: prefetching, as decode does.
        const auto& fns = i == 0 ? Tiles<W>::kDram.fn : Tiles<W>::kCached.fn;
        pieces(b0, b1, 2, [&](int64_t g, int64_t n) { tile(fns[n - 1][pt.c - 1], g, pt, j0, j1); });
      }
    }
  }
}

}  // namespace

MatmulKernel matmul_kernel_packed_columns_avx512(DType type) {
  if (type == DType::F32) return {InputFormat::F32Tiles, run_packed_columns<F32Columns>};
  if (type == DType::F16) return {InputFormat::F32Tiles, run_packed_columns<F16Columns>};
  if (type == DType::BF16 && cpu_has_avx512_bf16()) return {InputFormat::BF16Tiles, run_packed_columns<BF16Columns>};
  return {};
}

}  // namespace skiff::kernels
