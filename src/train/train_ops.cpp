#include "train/train_ops.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <utility>

#include "base/error.h"

namespace skiff::train {

void embedding_forward(float* out, const int32_t* tokens, const float* table, int64_t N, int64_t D) {
  for (int64_t n = 0; n < N; ++n)
    std::memcpy(out + n * D, table + static_cast<int64_t>(tokens[n]) * D, sizeof(float) * D);
}

void embedding_backward(float* dtable, const float* dout, const int32_t* tokens, int64_t N, int64_t D) {
  for (int64_t n = 0; n < N; ++n) {
    float* row = dtable + static_cast<int64_t>(tokens[n]) * D;
    const float* g = dout + n * D;
    for (int64_t i = 0; i < D; ++i) row[i] += g[i];
  }
}

void rmsnorm_forward(float* out, float* rstd, const float* x, const float* w, int64_t N, int64_t D,
                     float eps, ThreadPool& pool) {
  pool.parallel_for(N, [&](int64_t b, int64_t e, int) {
    for (int64_t n = b; n < e; ++n) {
      const float* xr = x + n * D;
      float ss = 0.0f;
      for (int64_t i = 0; i < D; ++i) ss += xr[i] * xr[i];
      float r = 1.0f / std::sqrt(ss / static_cast<float>(D) + eps);
      rstd[n] = r;
      float* o = out + n * D;
      for (int64_t i = 0; i < D; ++i) o[i] = xr[i] * r * w[i];
    }
  });
}

void rmsnorm_backward(float* dx, float* dw, const float* dout, const float* x, const float* w,
                      const float* rstd, int64_t N, int64_t D, ThreadPool& pool) {
  pool.parallel_for(N, [&](int64_t b, int64_t e, int) {
    for (int64_t n = b; n < e; ++n) {
      const float* xr = x + n * D;
      const float* g = dout + n * D;
      const float r = rstd[n];
      float dot = 0.0f;
      for (int64_t i = 0; i < D; ++i) dot += g[i] * w[i] * xr[i];
      const float c = dot * r * r * r / static_cast<float>(D);
      float* d = dx + n * D;
      for (int64_t i = 0; i < D; ++i) d[i] += r * g[i] * w[i] - c * xr[i];
    }
  });
  pool.parallel_for(D, [&](int64_t b, int64_t e, int) {
    for (int64_t n = 0; n < N; ++n) {
      const float r = rstd[n];
      const float* xr = x + n * D;
      const float* g = dout + n * D;
      for (int64_t i = b; i < e; ++i) dw[i] += g[i] * xr[i] * r;
    }
  });
}

void RopeTable::init(int T_, int n_rot, float theta) {
  T = T_;
  half = n_rot / 2;
  cos.assign(static_cast<size_t>(T) * half, 0.0f);
  sin.assign(static_cast<size_t>(T) * half, 0.0f);
  for (int t = 0; t < T; ++t)
    for (int i = 0; i < half; ++i) {
      double freq = std::pow(static_cast<double>(theta), -2.0 * i / n_rot);
      double angle = t * freq;
      cos[static_cast<size_t>(t) * half + i] = static_cast<float>(std::cos(angle));
      sin[static_cast<size_t>(t) * half + i] = static_cast<float>(std::sin(angle));
    }
}

namespace {
void rope_apply(float* x, int64_t N, int heads, int head_dim, const RopeTable& tab, float sign) {
  const int64_t width = static_cast<int64_t>(heads) * head_dim;
  for (int64_t n = 0; n < N; ++n) {
    const int t = static_cast<int>(n % tab.T);
    const float* c = tab.cos.data() + static_cast<size_t>(t) * tab.half;
    const float* s = tab.sin.data() + static_cast<size_t>(t) * tab.half;
    for (int h = 0; h < heads; ++h) {
      float* v = x + n * width + static_cast<int64_t>(h) * head_dim;
      for (int i = 0; i < tab.half; ++i) {
        const float x0 = v[2 * i], x1 = v[2 * i + 1];
        const float sn = sign * s[i];
        v[2 * i] = x0 * c[i] - x1 * sn;
        v[2 * i + 1] = x0 * sn + x1 * c[i];
      }
    }
  }
}
}  // namespace

void rope_forward(float* x, int64_t N, int heads, int head_dim, const RopeTable& table) {
  rope_apply(x, N, heads, head_dim, table, 1.0f);
}

// The rotation is orthogonal: its transpose is the rotation by -angle.
void rope_backward(float* dx, int64_t N, int heads, int head_dim, const RopeTable& table) {
  rope_apply(dx, N, heads, head_dim, table, -1.0f);
}

// Loops run over key positions s innermost (K and V transposed to [hd][T] per sample and KV
// head), so they vectorize even for the small head sizes of tiny models.
namespace {
void transpose_head(float* dst, const float* src, int64_t b, int T, int64_t width, int head, int hd) {
  for (int s = 0; s < T; ++s) {
    const float* row = src + (b * T + s) * width + static_cast<int64_t>(head) * hd;
    for (int i = 0; i < hd; ++i) dst[static_cast<int64_t>(i) * T + s] = row[i];
  }
}
}  // namespace

// Each op is a template on kBlocks so that the causal path (first_visible == nullptr) compiles
// with a constant first key 0, exactly the loops it had before block attention.
namespace {
// The first key row t sees (0: causal from the sample start).
template <bool kBlocks>
inline int visible_from(const int32_t* first_visible, int64_t b, int T, int t) {
  if constexpr (kBlocks)
    return first_visible[b * T + t];
  else
    return 0;
}

template <bool kBlocks>
void attention_forward_impl(float* out, float* att, const float* q, const float* k, const float* v,
                            const int32_t* first_visible, int64_t B, int T, int H, int KV, int hd,
                            ThreadPool& pool) {
  const int group = H / KV;
  const int64_t qw = static_cast<int64_t>(H) * hd, kw = static_cast<int64_t>(KV) * hd;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  pool.parallel_for(B * H, [&](int64_t begin, int64_t end, int) {
    std::vector<float> kT(static_cast<size_t>(hd) * T);
    for (int64_t bh = begin; bh < end; ++bh) {
      const int64_t b = bh / H;
      const int h = static_cast<int>(bh % H), kvh = h / group;
      transpose_head(kT.data(), k, b, T, kw, kvh, hd);
      for (int t = 0; t < T; ++t) {
        const int lo = visible_from<kBlocks>(first_visible, b, T, t);
        const float* qt = q + (b * T + t) * qw + static_cast<int64_t>(h) * hd;
        float* p = att + ((b * H + h) * T + t) * static_cast<int64_t>(T);
        for (int s = 0; s <= t; ++s) p[s] = 0.0f;
        for (int i = 0; i < hd; ++i) {
          const float qi = qt[i] * scale;
          const float* kr = kT.data() + static_cast<int64_t>(i) * T;
          for (int s = lo; s <= t; ++s) p[s] += qi * kr[s];
        }
        float mx = -INFINITY;
        for (int s = lo; s <= t; ++s) mx = std::max(mx, p[s]);
        float sum = 0.0f;
        for (int s = lo; s <= t; ++s) {
          p[s] = std::exp(p[s] - mx);
          sum += p[s];
        }
        const float inv = 1.0f / sum;
        for (int s = lo; s <= t; ++s) p[s] *= inv;
        for (int s = t + 1; s < T; ++s) p[s] = 0.0f;
        float* o = out + (b * T + t) * qw + static_cast<int64_t>(h) * hd;
        for (int i = 0; i < hd; ++i) o[i] = 0.0f;
        for (int s = lo; s <= t; ++s) {
          const float* vs = v + (b * T + s) * kw + static_cast<int64_t>(kvh) * hd;
          const float ps = p[s];
          for (int i = 0; i < hd; ++i) o[i] += ps * vs[i];
        }
      }
    }
  });
}

// Keys before first_visible have probability exactly 0, so their terms are exactly 0: the
// loops skip them (the same sums, fewer flops).
template <bool kBlocks>
void attention_backward_impl(float* dq, float* dk, float* dv, const float* dout, const float* att,
                             const float* q, const float* k, const float* v,
                             const int32_t* first_visible, int64_t B, int T, int H, int KV, int hd,
                             ThreadPool& pool) {
  const int group = H / KV;
  const int64_t qw = static_cast<int64_t>(H) * hd, kw = static_cast<int64_t>(KV) * hd;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  pool.parallel_for(B * KV, [&](int64_t begin, int64_t end, int) {
    const size_t n = static_cast<size_t>(hd) * T;
    std::vector<float> kT(n), vT(n), dkT(n), dvT(n), dp(static_cast<size_t>(T));
    for (int64_t bk = begin; bk < end; ++bk) {
      const int64_t b = bk / KV;
      const int kvh = static_cast<int>(bk % KV);
      transpose_head(kT.data(), k, b, T, kw, kvh, hd);
      transpose_head(vT.data(), v, b, T, kw, kvh, hd);
      std::fill(dkT.begin(), dkT.end(), 0.0f);
      std::fill(dvT.begin(), dvT.end(), 0.0f);
      for (int h = kvh * group; h < (kvh + 1) * group; ++h) {
        for (int t = 0; t < T; ++t) {
          const int lo = visible_from<kBlocks>(first_visible, b, T, t);
          const float* p = att + ((b * H + h) * T + t) * static_cast<int64_t>(T);
          const float* go = dout + (b * T + t) * qw + static_cast<int64_t>(h) * hd;
          const float* qt = q + (b * T + t) * qw + static_cast<int64_t>(h) * hd;
          float* d = dp.data();
          for (int s = lo; s <= t; ++s) d[s] = 0.0f;
          for (int i = 0; i < hd; ++i) {
            const float gi = go[i];
            const float* vr = vT.data() + static_cast<int64_t>(i) * T;
            float* dvr = dvT.data() + static_cast<int64_t>(i) * T;
            for (int s = lo; s <= t; ++s) {
              d[s] += gi * vr[s];
              dvr[s] += gi * p[s];
            }
          }
          float sum = 0.0f;
          for (int s = lo; s <= t; ++s) sum += p[s] * d[s];
          for (int s = lo; s <= t; ++s) d[s] = p[s] * (d[s] - sum) * scale;  // d(score)
          float* dqt = dq + (b * T + t) * qw + static_cast<int64_t>(h) * hd;
          for (int i = 0; i < hd; ++i) {
            float* dkr = dkT.data() + static_cast<int64_t>(i) * T;
            const float qi = qt[i];
            for (int s = lo; s <= t; ++s) dkr[s] += qi * d[s];
          }
          for (int i = 0; i < hd; ++i) dqt[i] = 0.0f;
          for (int s = lo; s <= t; ++s) {
            const float* ks = k + (b * T + s) * kw + static_cast<int64_t>(kvh) * hd;
            const float ds = d[s];
            for (int i = 0; i < hd; ++i) dqt[i] += ds * ks[i];
          }
        }
      }
      for (int s = 0; s < T; ++s) {
        float* dkr = dk + (b * T + s) * kw + static_cast<int64_t>(kvh) * hd;
        float* dvr = dv + (b * T + s) * kw + static_cast<int64_t>(kvh) * hd;
        for (int i = 0; i < hd; ++i) {
          dkr[i] = dkT[static_cast<size_t>(i) * T + static_cast<size_t>(s)];
          dvr[i] = dvT[static_cast<size_t>(i) * T + static_cast<size_t>(s)];
        }
      }
    }
  });
}

}  // namespace

void attention_forward(float* out, float* att, const float* q, const float* k, const float* v,
                       const int32_t* first_visible, int64_t B, int T, int H, int KV, int hd,
                       ThreadPool& pool) {
  if (!first_visible) {
    attention_forward_impl<false>(out, att, q, k, v, nullptr, B, T, H, KV, hd, pool);
    return;
  }
  for (int64_t n = 0; n < B * T; ++n) {
    const int32_t t = static_cast<int32_t>(n % T), f = first_visible[n];
    if (f < 0 || f > t)
      fail("train: first_visible[{}] = {} is outside [0, {}] (row {} of its sample)", n, f, t, t);
  }
  attention_forward_impl<true>(out, att, q, k, v, first_visible, B, T, H, KV, hd, pool);
}

void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* att,
                        const float* q, const float* k, const float* v, const int32_t* first_visible,
                        int64_t B, int T, int H, int KV, int hd, ThreadPool& pool) {
  if (first_visible)
    attention_backward_impl<true>(dq, dk, dv, dout, att, q, k, v, first_visible, B, T, H, KV, hd, pool);
  else
    attention_backward_impl<false>(dq, dk, dv, dout, att, q, k, v, nullptr, B, T, H, KV, hd, pool);
}

void swiglu_forward(float* out, const float* gate, const float* up, int64_t n, ThreadPool& pool) {
  pool.parallel_for(n, [&](int64_t b, int64_t e, int) {
    for (int64_t i = b; i < e; ++i) {
      const float g = gate[i];
      out[i] = g / (1.0f + std::exp(-g)) * up[i];
    }
  });
}

void swiglu_backward(float* dgate, float* dup, const float* dout, const float* gate,
                     const float* up, int64_t n, ThreadPool& pool) {
  pool.parallel_for(n, [&](int64_t b, int64_t e, int) {
    for (int64_t i = b; i < e; ++i) {
      const float g = gate[i];
      const float sig = 1.0f / (1.0f + std::exp(-g));
      const float silu = g * sig;
      dup[i] = dout[i] * silu;
      dgate[i] = dout[i] * up[i] * sig * (1.0f + g * (1.0f - sig));
    }
  });
}

void reglu_forward(float* out, const float* gate, const float* up, int64_t n, ThreadPool& pool) {
  pool.parallel_for(n, [&](int64_t b, int64_t e, int) {
    for (int64_t i = b; i < e; ++i) out[i] = gate[i] > 0.0f ? gate[i] * up[i] : 0.0f;
  });
}

void reglu_backward(float* dgate, float* dup, const float* dout, const float* gate,
                    const float* up, int64_t n, float l1_grad, ThreadPool& pool) {
  pool.parallel_for(n, [&](int64_t b, int64_t e, int) {
    for (int64_t i = b; i < e; ++i) {
      const bool on = gate[i] > 0.0f;
      dup[i] = on ? dout[i] * gate[i] : 0.0f;
      dgate[i] = on ? dout[i] * up[i] + l1_grad : 0.0f;
    }
  });
}

ReluStats relu_stats(const float* gate, int64_t n) {
  // Serial: a handful of flops per element next to the layer's matmuls, and the sum's order
  // (hence the L1 loss to the last bit) stays fixed.
  ReluStats s;
  for (int64_t i = 0; i < n; ++i) {
    if (gate[i] > 0.0f)
      s.sum += gate[i];
    else
      ++s.zeros;
  }
  return s;
}

void cross_entropy_forward_backward(float* logits, float* loss, int32_t* argmax,
                                    const int32_t* targets, int64_t N, int64_t V,
                                    float grad_scale, ThreadPool& pool) {
  pool.parallel_for(N, [&](int64_t b, int64_t e, int) {
    for (int64_t n = b; n < e; ++n) {
      float* row = logits + n * V;
      int64_t best = 0;
      for (int64_t i = 1; i < V; ++i)
        if (row[i] > row[best]) best = i;
      const float mx = row[best];
      double sum = 0.0;
      for (int64_t i = 0; i < V; ++i) sum += std::exp(static_cast<double>(row[i] - mx));
      const int32_t y = targets[n];
      if (argmax) argmax[n] = static_cast<int32_t>(best);
      if (y < 0) {  // ignored row
        loss[n] = 0.0f;
        if (grad_scale != 0.0f) std::fill(row, row + V, 0.0f);
        continue;
      }
      loss[n] = static_cast<float>(std::log(sum) + mx - row[y]);
      if (grad_scale != 0.0f) {
        const float inv = static_cast<float>(1.0 / sum);
        for (int64_t i = 0; i < V; ++i) row[i] = grad_scale * (std::exp(row[i] - mx) * inv);
        row[y] -= grad_scale;
      }
    }
  });
}

namespace {
// (max, log sum exp(row - max)) of a row, the sum in double.
std::pair<float, double> row_log_norm(const float* row, int64_t V) {
  float mx = row[0];
  for (int64_t i = 1; i < V; ++i) mx = std::max(mx, row[i]);
  double sum = 0.0;
  for (int64_t i = 0; i < V; ++i) sum += std::exp(static_cast<double>(row[i] - mx));
  return {mx, std::log(sum)};
}
}  // namespace

void log_softmax_rows(float* out, const float* logits, int64_t N, int64_t V, ThreadPool& pool) {
  pool.parallel_for(N, [&](int64_t b, int64_t e, int) {
    for (int64_t n = b; n < e; ++n) {
      const float* row = logits + n * V;
      const auto [mx, log_sum] = row_log_norm(row, V);
      for (int64_t i = 0; i < V; ++i)
        out[n * V + i] = static_cast<float>(static_cast<double>(row[i] - mx) - log_sum);
    }
  });
}

void cross_entropy_distill_forward_backward(float* logits, float* loss, float* kl, const int32_t* targets,
                                            const float* teacher_logp, int64_t N, int64_t V, float ce_scale,
                                            float kl_scale, ThreadPool& pool) {
  const bool grad = ce_scale != 0.0f || kl_scale != 0.0f;
  pool.parallel_for(N, [&](int64_t b, int64_t e, int) {
    for (int64_t n = b; n < e; ++n) {
      float* row = logits + n * V;
      const float* tl = teacher_logp + n * V;
      const int32_t y = targets[n];
      if (y < 0) {  // ignored row
        loss[n] = kl[n] = 0.0f;
        if (grad) std::fill(row, row + V, 0.0f);
        continue;
      }
      const auto [mx, log_sum] = row_log_norm(row, V);
      loss[n] = static_cast<float>(log_sum + mx - row[y]);
      double d = 0.0;
      for (int64_t i = 0; i < V; ++i) {
        const double logp = static_cast<double>(row[i] - mx) - log_sum;
        d += std::exp(static_cast<double>(tl[i])) * (static_cast<double>(tl[i]) - logp);
      }
      kl[n] = static_cast<float>(d);
      if (!grad) continue;
      for (int64_t i = 0; i < V; ++i) {
        const double p = std::exp(static_cast<double>(row[i] - mx) - log_sum);
        const double q = std::exp(static_cast<double>(tl[i]));
        row[i] = static_cast<float>(ce_scale * p + kl_scale * (p - q));
      }
      row[y] -= ce_scale;
    }
  });
}

}  // namespace skiff::train
