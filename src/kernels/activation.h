// Element-wise activations per CPU path. ops.h's swiglu and exp_f32 dispatch here; the AVX-512 path
// evaluates exp with its own vector routine (within 2 ulp of exp, see avx512_util.h), so its
// results may differ from the scalar path in the last bits, like every other kernel.
#pragma once

#include <cstdint>

namespace skiff::kernels {

// gate[i] = gate[i] / (1 + exp(-gate[i])) * up[i]
void swiglu_scalar(float* gate, const float* up, int64_t n);
void swiglu_avx512(float* gate, const float* up, int64_t n);

// out[i] = exp(x[i]) (ops.h's exp_f32 dispatches here)
void exp_avx512(const float* x, float* out, int64_t n);

}  // namespace skiff::kernels
