// matmul's dispatch and scheduling: picks the kernel for (type, CPU path), prepares the
// input once per call, and shares rows among threads in chunks. Small products (the
// stories260K model: dim 64) run on the calling thread, where a wake-up would cost more
// than the work.
#include "kernels/matmul.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/cpu.h"
#include "kernels/dot.h"
#include "kernels/matmul_impl.h"
#include "kernels/repack.h"

namespace skiff {

namespace kernels {

void quantize_input_q8(const float* x, int64_t n, int8_t* q, float* d, int64_t block) {
  for (int64_t b = 0; b < n / block; ++b) {
    const float* xb = x + b * block;
    float amax = 0.0f;
    for (int64_t i = 0; i < block; ++i) amax = std::max(amax, std::fabs(xb[i]));
    const float scale = amax / 127.0f;
    const float inv = scale != 0.0f ? 1.0f / scale : 0.0f;
    d[b] = scale;
    for (int64_t i = 0; i < block; ++i) {
      // lrint: round to nearest even, and no undefined behaviour for NaN or huge values.
      long v = std::lrint(xb[i] * inv);
      q[b * block + i] = static_cast<int8_t>(std::clamp(v, -127L, 127L));
    }
  }
}

int64_t input_block(InputFormat f) {
  switch (f) {
    case InputFormat::F32:
    case InputFormat::F32Tiles:
    case InputFormat::BF16Tiles:
    case InputFormat::BF16: return 0;
    case InputFormat::Q8K:
    case InputFormat::Q8KNibble: return 256;
    default: return 32;
  }
}

namespace {

// One position's input as Q8KBlocks (cols is a multiple of 256 for every K-quant).
void prepare_q8k(const float* x, int64_t cols, bool nibble, Q8KBlock* out) {
  int8_t q[256];
  for (int64_t b = 0; b < cols / 256; ++b) {
    Q8KBlock& blk = out[b];
    std::memset(&blk, 0, sizeof blk);
    quantize_input_q8(x + b * 256, 256, q, &blk.d, 256);
    for (int g = 0; g < 16; ++g) {
      int sum = 0;
      for (int i = 0; i < 16; ++i) sum += q[g * 16 + i];
      blk.bsum[g] = static_cast<int16_t>(sum);
    }
    for (int k = 0; k < 8; ++k) std::memcpy(blk.q + k * 32, q + (nibble ? q8k_nibble_group(k) : k) * 32, 32);
  }
}

}  // namespace

size_t input_stride(InputFormat f, int64_t cols) {
  const int64_t nb = cols / 32;
  size_t bytes = 0;
  switch (f) {
    case InputFormat::F32: return static_cast<size_t>(cols) * sizeof(float);
    case InputFormat::Q8: bytes = static_cast<size_t>(nb) * sizeof(float) + static_cast<size_t>(cols); break;
    case InputFormat::Q8Pairs:
    case InputFormat::Q8PairsNibble: bytes = static_cast<size_t>((nb + 1) / 2) * sizeof(Q8Pair); break;
    case InputFormat::Q8K:
    case InputFormat::Q8KNibble: bytes = static_cast<size_t>(cols / 256) * sizeof(Q8KBlock); break;
    case InputFormat::Q8Blocks: bytes = static_cast<size_t>(nb) * sizeof(Q8Block); break;
    case InputFormat::BF16: bytes = static_cast<size_t>(cols) * sizeof(uint16_t); break;
    case InputFormat::F32Tiles: bytes = static_cast<size_t>(padded_cols_64(cols)) * sizeof(float); break;
    case InputFormat::BF16Tiles: bytes = static_cast<size_t>(padded_cols_64(cols)) * sizeof(uint16_t); break;
  }
  return (bytes + 63) / 64 * 64;
}

void prepare_input(InputFormat f, const float* x, int64_t cols, uint8_t* out) {
  if (active_cpu_path() == CpuPath::Avx512 && prepare_input_avx512(f, x, cols, out)) return;
  prepare_input_scalar(f, x, cols, out);
}

namespace {

// Calls fn(tile, i_begin, i_end) for each position tile of T that holds positions of
// [t_begin, t_end): those positions are the tile's i_begin .. i_end - 1.
template <class Fn>
void for_tiles(int64_t T, int64_t t_begin, int64_t t_end, Fn fn) {
  for (int64_t i = 0, n = position_tiles(T); i < n; ++i) {
    const PositionTile tile = position_tile(T, i);
    const int64_t b = std::max(t_begin, tile.t0), e = std::min(t_end, tile.t0 + tile.c);
    if (b < e) fn(tile, b - tile.t0, e - tile.t0);
  }
}

}  // namespace

// Column k of a tile's positions is one run of c words: k outside, positions inside, so the
// writes run through memory in order rather than c apart.
void prepare_input_tiles(const float* x, int64_t cols, int64_t T, int64_t t_begin, int64_t t_end, float* out) {
  const int64_t kp = padded_cols_64(cols);
  for_tiles(T, t_begin, t_end, [&](PositionTile tile, int64_t ib, int64_t ie) {
    const float* rows = x + tile.t0 * cols;
    float* dst = out + tile.t0 * kp;
    if (tile.c == 1) {  // decode: the row as it is
      std::copy_n(rows, cols, dst);
      std::fill(dst + cols, dst + kp, 0.0f);
      return;
    }
    for (int64_t k = 0; k < cols; ++k)
      for (int64_t i = ib; i < ie; ++i) dst[k * tile.c + i] = rows[i * cols + k];
    for (int64_t k = cols; k < kp; ++k)
      for (int64_t i = ib; i < ie; ++i) dst[k * tile.c + i] = 0.0f;
  });
}

void prepare_input_tiles_bf16(const float* x, int64_t cols, int64_t T, int64_t t_begin, int64_t t_end,
                              uint32_t* out) {
  const int64_t pairs = padded_cols_64(cols) / 2;
  for_tiles(T, t_begin, t_end, [&](PositionTile tile, int64_t ib, int64_t ie) {
    const float* rows = x + tile.t0 * cols;
    uint32_t* dst = out + tile.t0 * pairs;
    if (tile.c == 1) {  // decode: a pair (lo | hi << 16) is two bf16 in memory order, as InputFormat::BF16
      auto* half = reinterpret_cast<uint16_t*>(dst);
      prepare_input(InputFormat::BF16, rows, cols, reinterpret_cast<uint8_t*>(half));
      std::fill(half + cols, half + 2 * pairs, uint16_t{0});
      return;
    }
    // Each row rounded as decode's (vectorized where the CPU can), then the pairs interleaved.
    thread_local std::vector<uint32_t> rounded;
    rounded.assign(static_cast<size_t>((ie - ib) * pairs), 0);
    for (int64_t i = ib; i < ie; ++i)
      prepare_input(InputFormat::BF16, rows + i * cols, cols, reinterpret_cast<uint8_t*>(&rounded[(i - ib) * pairs]));
    for (int64_t p = 0; p < pairs; ++p)
      for (int64_t i = ib; i < ie; ++i) dst[p * tile.c + i] = rounded[(i - ib) * pairs + p];
  });
}

void prepare_input_scalar(InputFormat f, const float* x, int64_t cols, uint8_t* out) {
  const int64_t nb = cols / 32;
  if (f == InputFormat::F32) {
    std::memcpy(out, x, static_cast<size_t>(cols) * sizeof(float));
    return;
  }
  if (f == InputFormat::F32Tiles) {
    prepare_input_tiles(x, cols, 1, 0, 1, reinterpret_cast<float*>(out));
    return;
  }
  if (f == InputFormat::BF16Tiles) {
    prepare_input_tiles_bf16(x, cols, 1, 0, 1, reinterpret_cast<uint32_t*>(out));
    return;
  }
  if (f == InputFormat::BF16) {
    uint16_t* h = reinterpret_cast<uint16_t*>(out);
    for (int64_t i = 0; i < cols; ++i) h[i] = round_to_bf16(x[i]);
    return;
  }
  if (f == InputFormat::Q8) {
    quantize_input_q8(x, cols, reinterpret_cast<int8_t*>(out + nb * sizeof(float)),
                      reinterpret_cast<float*>(out));
    return;
  }
  if (f == InputFormat::Q8K || f == InputFormat::Q8KNibble) {
    prepare_q8k(x, cols, f == InputFormat::Q8KNibble, reinterpret_cast<Q8KBlock*>(out));
    return;
  }
  if (f == InputFormat::Q8Blocks) {
    Q8Block* blocks = reinterpret_cast<Q8Block*>(out);
    for (int64_t b = 0; b < nb; ++b) {
      quantize_input_q8(x + b * 32, 32, blocks[b].x, &blocks[b].d);
      int sum = 0;
      for (int i = 0; i < 32; ++i) sum += blocks[b].x[i];
      blocks[b].sum = sum;
    }
    return;
  }
  int8_t q[64];
  float d[2];
  Q8Pair* pairs = reinterpret_cast<Q8Pair*>(out);
  const bool nibble = f == InputFormat::Q8PairsNibble;
  const int bias = nibble ? 8 : 128;
  for (int64_t p = 0; p < (nb + 1) / 2; ++p) {
    const int64_t blocks = std::min<int64_t>(2, nb - 2 * p);
    std::memset(q, 0, sizeof q);
    d[0] = d[1] = 0.0f;
    quantize_input_q8(x + p * 64, blocks * 32, q, d);
    Q8Pair& pair = pairs[p];
    for (int i = 0; i < 64; ++i) {
      // Nibble order: 16-byte quarter k holds block (k & 1), elements 16 * (k >> 1) ...
      const int k = i / 16, j = i % 16;
      pair.x[i] = nibble ? q[(k & 1) * 32 + (k >> 1) * 16 + j] : q[i];
    }
    for (int lane = 0; lane < 16; ++lane) {
      int sum = 0;
      for (int i = 0; i < 4; ++i) sum += pair.x[lane * 4 + i];
      pair.corr[lane] = -bias * sum;
      const int block = nibble ? (lane / 4) & 1 : lane / 8;
      pair.d[lane] = d[block];
    }
  }
}

void run_dequantize_dot(const TensorView& w, int64_t r0, int64_t r1, const uint8_t* in,
                        size_t in_stride, int64_t T, float* y, int64_t y_stride) {
  thread_local std::vector<float> row;
  const int64_t cols = w.cols;
  if (static_cast<int64_t>(row.size()) < cols) row.resize(static_cast<size_t>(cols));
  for (int64_t r = r0; r < r1; ++r) {
    const float* wr;
    if (w.type == DType::F32) {
      wr = reinterpret_cast<const float*>(w.row(r));
    } else {
      dequantize_row(w.type, w.row(r), row.data(), cols);
      wr = row.data();
    }
    for (int64_t t = 0; t < T; ++t)
      y[t * y_stride + r] = dot_f32(wr, reinterpret_cast<const float*>(in + t * in_stride), cols);
  }
}

}  // namespace kernels

namespace {

using kernels::InputFormat;
using kernels::MatmulKernel;

MatmulKernel select_kernel(DType type, bool packed = false) {
  MatmulKernel k;
  if (packed && active_cpu_path() == CpuPath::Avx512) {
    k = kernels::matmul_kernel_packed_avx512(type);
    if (k.run != nullptr) return k;
  }
  switch (active_cpu_path()) {
    case CpuPath::Avx512: k = kernels::matmul_kernel_avx512(type); break;
    case CpuPath::Avx2: k = kernels::matmul_kernel_avx2(type); break;
    default: k = kernels::matmul_kernel_scalar(type); break;
  }
  if (k.run == nullptr) k = {InputFormat::F32, kernels::run_dequantize_dot};
  return k;
}

// Products below this many multiply-adds run on the calling thread.
constexpr int64_t kSerialWork = int64_t{1} << 21;
// Rows per unit of work handed to a thread (a multiple of every kernel's row tile).
constexpr int64_t kRowsPerUnit = 16;
static_assert(kRowsPerUnit % kPackedGroupRows == 0, "a thread's rows must be whole packed groups");
// Matrices packed by columns, read once from DRAM (decode, a verification: one position tile),
// go by whole super-groups: a share that began inside one would leave narrow tiles (2-6
// groups) at both of its ends, which stream slower than the 8-group decode tile and the pair
// of 4-group verification tiles (same run, 0.85B BF16: tg64 +11%, pp5 +9%). Prefill keeps the
// finer units (its blocks are aligned on their own, and the finer units balance the threads).
constexpr int64_t kPackedColumnsRowsPerUnit = kPackedColumnsSuperGroup * kPackedGroupRows;

int64_t rows_per_unit(const MatmulKernel& k, int64_t T) {
  return kernels::tiled_input(k.input) && kernels::position_tiles(T) == 1 ? kPackedColumnsRowsPerUnit : kRowsPerUnit;
}

}  // namespace

int64_t matmul_input_block(DType type) { return kernels::input_block(select_kernel(type).input); }

bool matmul_input_bf16(DType type) { return select_kernel(type).input == kernels::InputFormat::BF16; }

void dequantize_tensor_row(const TensorView& w, int64_t r, float* out) {
  dequantize_row(w.type, w.row(r), out, w.cols);
}

void matmul(const TensorView& w, const float* x, int64_t T, float* y, ThreadPool& pool) {
  MatmulJob job{&w, y};
  matmul_many(std::span<const MatmulJob>(&job, 1), x, T, pool);
}

void matmul_many(std::span<const MatmulJob> jobs, const float* x, int64_t T, ThreadPool& pool) {
  if (jobs.empty() || T <= 0) return;
  const int64_t cols = jobs[0].w->cols;
  constexpr size_t kMaxJobs = 8;
  MatmulKernel kernel[kMaxJobs];
  int64_t unit_end[kMaxJobs];  // cumulative units
  int64_t unit_rows[kMaxJobs];
  if (jobs.size() > kMaxJobs) {
    for (size_t i = 0; i < jobs.size(); i += kMaxJobs)
      matmul_many(jobs.subspan(i, std::min(kMaxJobs, jobs.size() - i)), x, T, pool);
    return;
  }

  // Prepare the input once per format the kernels ask for.
  thread_local std::vector<uint8_t> prepared[kernels::kInputFormats];
  bool have[kernels::kInputFormats] = {};
  int64_t units = 0, work = 0;
  for (size_t j = 0; j < jobs.size(); ++j) {
    kernel[j] = select_kernel(jobs[j].w->type, jobs[j].w->packed != nullptr);
    unit_rows[j] = rows_per_unit(kernel[j], T);
    units += (jobs[j].w->rows + unit_rows[j] - 1) / unit_rows[j];
    unit_end[j] = units;
    work += jobs[j].w->rows * cols * T;
    have[static_cast<int>(kernel[j].input)] = true;
  }
  const bool serial = work < kSerialWork || pool.size() == 1;
  const uint8_t* input[kernels::kInputFormats] = {};
  size_t stride[kernels::kInputFormats] = {};
  for (int f = 0; f < kernels::kInputFormats; ++f) {
    if (!have[f]) continue;
    const auto format = static_cast<InputFormat>(f);
    stride[f] = kernels::input_stride(format, cols);
    if (format == InputFormat::F32) {
      input[f] = reinterpret_cast<const uint8_t*>(x);
      continue;
    }
    std::vector<uint8_t>& buf = prepared[f];
    if (buf.size() < stride[f] * static_cast<size_t>(T)) buf.resize(stride[f] * static_cast<size_t>(T));
    auto prep = [&, f, format](int64_t b, int64_t e, int) {
      if (format == InputFormat::F32Tiles) {
        kernels::prepare_input_tiles(x, cols, T, b, e, reinterpret_cast<float*>(buf.data()));
        return;
      }
      if (format == InputFormat::BF16Tiles) {
        kernels::prepare_input_tiles_bf16(x, cols, T, b, e, reinterpret_cast<uint32_t*>(buf.data()));
        return;
      }
      for (int64_t t = b; t < e; ++t)
        kernels::prepare_input(format, x + t * cols, cols, buf.data() + static_cast<size_t>(t) * stride[f]);
    };
    if (kernels::tiled_input(format)) {
      // Threads take whole position tiles: two threads writing positions of one tile would
      // write the same cache lines (its words interleave the positions).
      const int64_t tiles = kernels::position_tiles(T);
      if (serial || tiles == 1) prep(0, T, 0);
      else
        pool.parallel_for(tiles, [&](int64_t b, int64_t e, int thread) {
          prep(kernels::position_tile(T, b).t0, e == tiles ? T : kernels::position_tile(T, e).t0, thread);
        });
    } else if (serial || T < 4) {
      prep(0, T, 0);
    } else {
      pool.parallel_for(T, prep);
    }
    input[f] = buf.data();
  }

  auto body = [&](int64_t ub, int64_t ue, int) {
    size_t j = 0;
    for (int64_t u = ub; u < ue; ++u) {
      while (u >= unit_end[j]) ++j;
      const TensorView& w = *jobs[j].w;
      const int64_t first = j == 0 ? 0 : unit_end[j - 1];
      const int64_t r0 = (u - first) * unit_rows[j];
      // Extend over the following units of the same matrix in one call.
      int64_t last = std::min(ue, unit_end[j]);
      const int64_t r1 = std::min(w.rows, (last - first) * unit_rows[j]);
      const int f = static_cast<int>(kernel[j].input);
      kernel[j].run(w, r0, r1, input[f], stride[f], T, jobs[j].y, w.rows);
      u = last - 1;
    }
  };
  if (serial) {
    body(0, units, 0);
    return;
  }
  // Big chunks first, then smaller ones: grabs stay rare, and the last one is a single unit, so
  // at the end of a matmul no thread waits long for the other (decode runs ~65 matmuls a token).
  thread_local std::vector<int64_t> bounds;
  guided_bounds(units, pool.size(), 1, bounds);
  pool.parallel_for_chunks(bounds, body);
}

}  // namespace skiff
