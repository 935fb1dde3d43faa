// The element-wise and row-wise operations of the LLaMA block, as plain functions over float
// rows. Each mirrors one equation of the model; tests check them against NumPy/PyTorch.
#pragma once

#include <cstdint>

namespace skiff {

// out = x / sqrt(mean(x^2) + eps) * weight   (out may alias x)
void rmsnorm(float* out, const float* x, const float* weight, int64_t n, float eps);

// Which dims of a head RoPE turns together. kInterleaved: consecutive pairs (x[2i], x[2i+1]),
// the GGUF "llama" convention (ggml rope mode 0). kHalves: x[i] with x[i + n_rot/2], the
// rotate-half layout Hugging Face checkpoints keep (ggml's NeoX mode). Pair i turns by
// pos * inv_freq[i] either way; dims from n_rot on are left as they are.
enum class RopeLayout { kInterleaved, kHalves };

// Rotary position embedding with the plain frequencies inv_freq[i] = theta^(-2i/n_rot).
void rope(float* x, int n_heads, int head_dim, int n_rot, int pos, float theta,
          RopeLayout layout = RopeLayout::kInterleaved);
// rope in two steps, so a decoder can compute each position's angles once (Context keeps a
// table): cos_sin[0 .. n_rot/2) = mscale cos, [n_rot/2 .. n_rot) = mscale sin of
// pos * inv_freq[i] (angles in double, as ggml's rope cache does for its theta).
void rope_angles(int n_rot, int pos, const double* inv_freq, float mscale, float* cos_sin);
void rope_angles(int n_rot, int pos, float theta, float* cos_sin);  // plain frequencies, mscale 1
void rope_rotate(float* x, int n_heads, int head_dim, int n_rot, const float* cos_sin,
                 RopeLayout layout = RopeLayout::kInterleaved);

// out[i] = exp(x[i]) (out may alias x). The AVX-512 path is within 2 ulp of exp.
void exp_f32(const float* x, float* out, int64_t n);

// In-place softmax of x[0..n).
void softmax(float* x, int64_t n);

// gate[i] = silu(gate[i]) * up[i]   (SwiGLU)
void swiglu(float* gate, const float* up, int64_t n);

// gate[i] = max(gate[i], 0) * up[i]   (ReLU-gated GLU: exactly zero where the gate is <= 0)
void reglu(float* gate, const float* up, int64_t n);

}  // namespace skiff
