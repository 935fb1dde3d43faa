// One query head attending over n cached positions:
//   out = sum_p softmax_p(scale * q . k_p) v_p
// where position p's key and value slices of hd floats are at keys + p * stride and
// values + p * stride. `scores` is scratch of n floats. attend_head dispatches on the CPU
// path; the AVX-512 kernel keeps the query and the output in registers (head_dim <= 256)
// and takes exp from avx512_util.h.
#pragma once

#include <cstdint>

#include "tensor/dtype.h"

namespace skiff {

void attend_head(const float* q, const float* keys, const float* values, int64_t stride, int n, int hd, float scale,
                 float* scores, float* out);

// Keys or values of one head in a typed KV cache: position p's hd values, of type F32, F16 or
// Q8_0 (hd % 32 == 0, the slice starting on a block), are at data + p * stride bytes.
struct KvSlice {
  const uint8_t* data;
  DType type;
  int64_t stride;  // bytes
};

// attend_head over a typed cache (attend_head itself is the all-F32 case, bit for bit
// unchanged). Scores and outputs are float; keys and values are converted as they are read.
void attend_head_kv(const float* q, KvSlice keys, KvSlice values, int n, int hd, float scale, float* scores,
                    float* out);

// attend_head_kv for `group` query heads that share one KV head: q and out hold the heads'
// hd-slices one after another, scores is scratch of group * n floats. The AVX-512 kernel loads
// each key vector once for 4 heads and each value vector once for 4 heads (2 when hd > 64)
// (one head at a time, attention was bound by loads: 13% of a 512-token prefill); it sums in
// its own order, so a head's result is attend_head_kv's to float rounding, and the same for a
// position whatever n is. The other paths call attend_head_kv (attend_head) per head.
void attend_heads_kv(const float* q, KvSlice keys, KvSlice values, int group, int n, int hd, float scale,
                     float* scores, float* out);

namespace kernels {
void attend_head_scalar(const float* q, const float* keys, const float* values, int64_t stride, int n, int hd,
                        float scale, float* scores, float* out);
// Returns false (and does nothing) when hd is beyond what it handles.
bool attend_head_avx512(const float* q, const float* keys, const float* values, int64_t stride, int n, int hd,
                        float scale, float* scores, float* out);
void attend_head_kv_scalar(const float* q, KvSlice keys, KvSlice values, int n, int hd, float scale, float* scores,
                           float* out);
// F16 / Q8_0 keys or values (not both F32); false when it does not handle the case.
bool attend_head_kv_avx2(const float* q, KvSlice keys, KvSlice values, int n, int hd, float scale, float* scores,
                         float* out);
bool attend_head_kv_avx512(const float* q, KvSlice keys, KvSlice values, int n, int hd, float scale, float* scores,
                           float* out);
bool attend_heads_avx512(const float* q, KvSlice keys, KvSlice values, int group, int n, int hd, float scale,
                         float* scores, float* out);
}  // namespace kernels

}  // namespace skiff
