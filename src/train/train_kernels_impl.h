// The bodies of the training matmuls, written once with GCC/Clang vector extensions and
// compiled twice: train_kernels.cpp (baseline x86-64) and train_kernels_avx512.cpp (with
// AVX-512 flags). Include only from those two files, inside the namespace they choose.
// Both are broadcast-and-add loops (no horizontal sums). For a given output element the
// operations are the same whatever tile it falls in, so results never depend on how rows are
// split across threads.
#pragma once

#include <cstdint>
#include <cstring>

namespace {

typedef float V __attribute__((vector_size(64)));  // 16 floats
constexpr int kLanes = 16;

#define SKIFF_LOADV(dst, ptr) std::memcpy(&(dst), (ptr), sizeof(V))
#define SKIFF_STOREV(ptr, src) std::memcpy((ptr), &(src), sizeof(V))

// dx[n..n+NR)[c..c+CB*16) += sum_o dy[n][o] w[o][c..]
template <int NR, int CB>
inline void backward_input_tile(float* dx, const float* dy, const float* w, int64_t n,
                                int64_t c, int64_t C, int64_t OC) {
  V acc[NR][CB];
  for (int i = 0; i < NR; ++i)
    for (int b = 0; b < CB; ++b) SKIFF_LOADV(acc[i][b], dx + (n + i) * C + c + b * kLanes);
  for (int64_t o = 0; o < OC; ++o) {
    V wv[CB];
    for (int b = 0; b < CB; ++b) SKIFF_LOADV(wv[b], w + o * C + c + b * kLanes);
    for (int i = 0; i < NR; ++i) {
      const float s = dy[(n + i) * OC + o];
      for (int b = 0; b < CB; ++b) acc[i][b] += s * wv[b];
    }
  }
  for (int i = 0; i < NR; ++i)
    for (int b = 0; b < CB; ++b) SKIFF_STOREV(dx + (n + i) * C + c + b * kLanes, acc[i][b]);
}

template <int NR>
inline void backward_input_rows_nr(float* dx, const float* dy, const float* w, int64_t n,
                                   int64_t C, int64_t OC) {
  int64_t c = 0;
  for (; c + 4 * kLanes <= C; c += 4 * kLanes) backward_input_tile<NR, 4>(dx, dy, w, n, c, C, OC);
  for (; c + kLanes <= C; c += kLanes) backward_input_tile<NR, 1>(dx, dy, w, n, c, C, OC);
  for (; c < C; ++c)
    for (int i = 0; i < NR; ++i) {
      float s = dx[(n + i) * C + c];
      for (int64_t o = 0; o < OC; ++o) s += dy[(n + i) * OC + o] * w[o * C + c];
      dx[(n + i) * C + c] = s;
    }
}

inline void backward_input_rows_impl(float* dx, const float* dy, const float* w, int64_t n0,
                                     int64_t n1, int64_t C, int64_t OC) {
  int64_t n = n0;
  for (; n + 4 <= n1; n += 4) backward_input_rows_nr<4>(dx, dy, w, n, C, OC);
  for (; n < n1; ++n) backward_input_rows_nr<1>(dx, dy, w, n, C, OC);
}

// dw[o..o+OR)[c..c+CB*16) += sum_n dy[n][o] x[n][c..]
template <int OR, int CB>
inline void backward_weight_tile(float* dw, const float* dy, const float* x, int64_t N,
                                 int64_t o, int64_t c, int64_t C, int64_t OC) {
  V acc[OR][CB];
  for (int i = 0; i < OR; ++i)
    for (int b = 0; b < CB; ++b) SKIFF_LOADV(acc[i][b], dw + (o + i) * C + c + b * kLanes);
  for (int64_t n = 0; n < N; ++n) {
    V xv[CB];
    for (int b = 0; b < CB; ++b) SKIFF_LOADV(xv[b], x + n * C + c + b * kLanes);
    for (int i = 0; i < OR; ++i) {
      const float s = dy[n * OC + o + i];
      for (int b = 0; b < CB; ++b) acc[i][b] += s * xv[b];
    }
  }
  for (int i = 0; i < OR; ++i)
    for (int b = 0; b < CB; ++b) SKIFF_STOREV(dw + (o + i) * C + c + b * kLanes, acc[i][b]);
}

template <int OR>
inline void backward_weight_rows_or(float* dw, const float* dy, const float* x, int64_t N,
                                    int64_t o, int64_t C, int64_t OC) {
  int64_t c = 0;
  for (; c + 4 * kLanes <= C; c += 4 * kLanes)
    backward_weight_tile<OR, 4>(dw, dy, x, N, o, c, C, OC);
  for (; c + kLanes <= C; c += kLanes) backward_weight_tile<OR, 1>(dw, dy, x, N, o, c, C, OC);
  for (; c < C; ++c)
    for (int i = 0; i < OR; ++i) {
      float s = dw[(o + i) * C + c];
      for (int64_t n = 0; n < N; ++n) s += dy[n * OC + o + i] * x[n * C + c];
      dw[(o + i) * C + c] = s;
    }
}

inline void backward_weight_rows_impl(float* dw, const float* dy, const float* x, int64_t N,
                                      int64_t C, int64_t OC, int64_t o0, int64_t o1) {
  int64_t o = o0;
  for (; o + 4 <= o1; o += 4) backward_weight_rows_or<4>(dw, dy, x, N, o, C, OC);
  for (; o < o1; ++o) backward_weight_rows_or<1>(dw, dy, x, N, o, C, OC);
}

#undef SKIFF_LOADV
#undef SKIFF_STOREV

}  // namespace
