// One query head attending over n cached positions:
//   out = sum_p softmax_p(scale * q . k_p) v_p
// where position p's key and value slices of hd floats are at keys + p * stride and
// values + p * stride. `scores` is scratch of n floats. attend_head dispatches on the CPU
// path; the AVX-512 kernel keeps the query and the output in registers (head_dim <= 256)
// and takes exp from avx512_util.h.
#pragma once

#include <cstdint>

namespace skiff {

void attend_head(const float* q, const float* keys, const float* values, int64_t stride, int n, int hd, float scale,
                 float* scores, float* out);

namespace kernels {
void attend_head_scalar(const float* q, const float* keys, const float* values, int64_t stride, int n, int hd,
                        float scale, float* scores, float* out);
// Returns false (and does nothing) when hd is beyond what it handles.
bool attend_head_avx512(const float* q, const float* keys, const float* values, int64_t stride, int n, int hd,
                        float scale, float* scores, float* out);
}  // namespace kernels

}  // namespace skiff
