"""An independent PyTorch (float64, autograd) reference for `skiff train`.

Built on llama_reference.py's forward (same conventions by construction: RMSNorm, GGUF RoPE
pairing, GQA, SwiGLU, tied/untied head) and written from LayerSkip's equations and
torchtune's reference code, not from skiff's C++:
- layer dropout: sample b skips layer l when skip[b][l] (the layer is the identity for it);
  rate p(l, t) = p_max * S(t) * (2^(l/(L-1)) - 1), S = 1 or 2^(t/(T-1)) - 1;
- early-exit loss: sum over active exit layers e of scale_e * CE(head(rmsnorm(h_e))), scales
  = cumsum(e+1) (over the active layers), times e_scale below the last layer, normalized;
  curricula rotational:R (np.roll of the every-R-th pattern) and gradual[:F];
- FFN activation silu (SwiGLU) or relu (ReLU-gated: relu(gate) * up, "skiff.ffn_activation");
  the activation-sparsity penalty (ProSparse-style L1) adds, per layer, l1 * sum of relu(gate)
  over the rows that ran it / (B * T * ffn) (rows that skipped the layer add nothing);
- block attention (memory-augmented episodes): row r of a sample attends to the keys
  [first_visible[r], r] (scores outside set to -inf before the softmax); a loss mask drops rows'
  targets (cross_entropy's ignore_index), the mean is over the counted rows;
- exit self-distillation (--exit-distill W): with K = the active exits below the last layer,
  W / K * sum over them of the mean over the counted rows of KL(p_final || p_exit), p_final =
  softmax of the final layer's head, DETACHED (exits weighted uniformly, not by the scales);
- AdamW = torch.optim.AdamW (decay on matrices only), clipping = clip_grad_norm_, schedule
  = linear warm-up then cosine to min_lr.
"""

from __future__ import annotations

import math

import numpy as np
import torch

import llama_reference as ref

DTYPE = torch.float64


# ---------------------------------------------------------------------------------------------
# LayerSkip rules
# ---------------------------------------------------------------------------------------------
def dropout_rate(l: int, L: int, p_max: float, time_scale: float = 1.0) -> float:
    if L <= 1:
        return 0.0
    return p_max * time_scale * (math.exp(l * math.log(2) / (L - 1)) - 1)


def time_scale(kind: str, t: int, total: int) -> float:
    if kind == "constant" or total <= 1:
        return 1.0
    return math.exp(t * math.log(2) / (total - 1)) - 1


def active_exits(curriculum: str, L: int, step: int, total: int) -> list[int]:
    if curriculum == "none":
        mask = np.ones(L, dtype=bool)
    elif curriculum.startswith("rotational:"):
        R = int(curriculum.split(":")[1])
        mask = np.array([l % R == 0 for l in range(L)])
        mask = np.roll(mask, step)
    elif curriculum.startswith("gradual"):
        F = float(curriculum.split(":")[1]) if ":" in curriculum else 0.5
        mask = np.array([step / total >= F * (L - l) / L for l in range(L)])
    else:
        raise ValueError(curriculum)
    mask = mask.copy()
    mask[-1] = True
    return [l for l in range(L) if mask[l]]


def exit_scales(layers: list[int], L: int, e_scale: float) -> list[float]:
    ids = torch.tensor(layers, dtype=DTYPE)
    s = torch.cumsum(ids + 1, dim=0)
    s = s * torch.where(ids < L - 1, torch.tensor(e_scale, dtype=DTYPE), torch.tensor(1.0, dtype=DTYPE))
    return (s / s.sum()).tolist()


def learning_rate(step: int, lr: float, min_lr: float, warmup: int, total: int) -> float:
    if step < warmup:
        return lr * (step + 1) / warmup
    decay = total - warmup
    if decay <= 1:
        return lr
    progress = min(1.0, (step - warmup) / (decay - 1))
    return min_lr + (lr - min_lr) * 0.5 * (1 + math.cos(math.pi * progress))


# ---------------------------------------------------------------------------------------------
# The model with autograd
# ---------------------------------------------------------------------------------------------
def param_names(cfg: ref.LlamaConfig) -> list[str]:
    """In skiff's parameter order (= GGUF file order of llama_reference.tensor_shapes)."""
    return list(ref.tensor_shapes(cfg).keys())


def make_params(weights: dict, cfg: ref.LlamaConfig) -> dict:
    return {n: torch.tensor(np.asarray(weights[n]), dtype=DTYPE, requires_grad=True) for n in param_names(cfg)}


def ffn_act(gate, activation: str):
    if activation == "relu":
        return torch.relu(gate)
    assert activation == "silu", activation
    return torch.nn.functional.silu(gate)


def block_attention(q, k, v, first_visible):
    """q: [T, H, hd]; k, v: [T, KV, hd]; row r sees keys first_visible[r]..r (None: 0..r)."""
    if first_visible is None:
        return ref.attention(q, k, v)
    T, H, hd = q.shape
    group = H // k.shape[1]
    k = k.repeat_interleave(group, dim=1)
    v = v.repeat_interleave(group, dim=1)
    scores = torch.einsum("thd,shd->hts", q, k) / math.sqrt(hd)
    r = torch.arange(T).reshape(T, 1)
    s = torch.arange(T).reshape(1, T)
    fv = torch.as_tensor(np.asarray(first_visible, dtype=np.int64)).reshape(T, 1)
    hidden = (s > r) | (s < fv)
    scores = scores.masked_fill(hidden, float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    return torch.einsum("hts,shd->thd", probs, v).reshape(T, H * hd)


def layer(cfg, W, l, x, pos, activation="silu", first_visible=None):
    """One block on x [T, dim] (one sample). Returns (output, FFN activation act(gate) [T, ffn])."""
    T = x.shape[0]
    H, KV, hd = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
    p = f"blk.{l}."
    h = ref.rmsnorm(x, W[p + "attn_norm.weight"], cfg.rms_eps)
    q = (h @ W[p + "attn_q.weight"].T).reshape(T, H, hd)
    k = (h @ W[p + "attn_k.weight"].T).reshape(T, KV, hd)
    v = (h @ W[p + "attn_v.weight"].T).reshape(T, KV, hd)
    q = ref.rope(q, pos, cfg.rope_dims, cfg.rope_base)
    k = ref.rope(k, pos, cfg.rope_dims, cfg.rope_base)
    x = x + block_attention(q, k, v, first_visible) @ W[p + "attn_output.weight"].T
    h = ref.rmsnorm(x, W[p + "ffn_norm.weight"], cfg.rms_eps)
    g = h @ W[p + "ffn_gate.weight"].T
    u = h @ W[p + "ffn_up.weight"].T
    a = ffn_act(g, activation)
    return x + (a * u) @ W[p + "ffn_down.weight"].T, a


def head_logits(cfg, W, x):
    h = ref.rmsnorm(x, W["output_norm.weight"], cfg.rms_eps)
    out = W["token_embd.weight"] if cfg.tied else W["output.weight"]
    return h @ out.T


def loss_fn(cfg, W, tokens: np.ndarray, skip, exits: list[int], scales: list[float], activation="silu", l1=0.0,
            first_visible=None, loss_mask=None, distill=0.0):
    """tokens [B, T+1]; skip [B, L] bools or None; first_visible [B, T] ints or None; loss_mask
    [B, T] (0: no loss at that row) or None. Returns (loss, per-exit losses, final logits,
    stats) where loss includes the L1 penalty and stats = {"sparsity_loss": the penalty,
    "sparsity": fraction of zero activations over the rows that ran each layer, averaged over the
    layers some row ran (relu only, else 0), "distill_loss": the self-distillation term (in
    loss), "exit_kl": per exit the mean KL(final || exit) (0 at the last layer)}."""
    tokens = torch.as_tensor(np.asarray(tokens, dtype=np.int64))
    B, T1 = tokens.shape
    T = T1 - 1
    inp, tgt = tokens[:, :T], tokens[:, 1:]
    pos = torch.arange(T)
    hidden = {}
    xs = []
    acts = {}  # layer -> the activations [T, ffn] of the samples that ran it
    for b in range(B):
        x = W["token_embd.weight"][inp[b]]
        for l in range(cfg.n_layers):
            if skip is None or not skip[b][l]:
                fv = None if first_visible is None else first_visible[b]
                x, a = layer(cfg, W, l, x, pos, activation, fv)
                acts.setdefault(l, []).append(a)
            hidden.setdefault(l, []).append(x)
        xs.append(x)
    total = torch.zeros((), dtype=DTYPE)
    sparsity_loss = torch.zeros((), dtype=DTYPE)
    zero_fractions = []
    for l, a in acts.items():
        a = torch.stack(a)
        if l1 > 0:
            sparsity_loss = sparsity_loss + l1 * a.sum() / (B * T * cfg.ffn)
        if activation == "relu":
            zero_fractions.append(float((a == 0).double().mean()))
    total = total + sparsity_loss
    stats = {"sparsity_loss": sparsity_loss.item(),
             "sparsity": float(np.mean(zero_fractions)) if zero_fractions else 0.0}
    per_exit = []
    target = tgt.reshape(-1)
    if loss_mask is not None:
        keep = torch.as_tensor(np.asarray(loss_mask).reshape(-1) != 0)
        target = torch.where(keep, target, torch.full_like(target, -100))
    counted = target != -100
    L = cfg.n_layers
    # the teacher: the final layer's distribution, a constant for autograd
    teacher = torch.log_softmax(head_logits(cfg, W, torch.stack(hidden[L - 1])).reshape(B * T, -1), -1).detach()
    students = [e for e in exits if e < L - 1]
    distill_loss = torch.zeros((), dtype=DTYPE)
    exit_kl = []
    for e, s in zip(exits, scales):
        h = torch.stack(hidden[e])                       # [B, T, dim]
        logits = head_logits(cfg, W, h).reshape(B * T, -1)
        ce = torch.nn.functional.cross_entropy(logits, target, ignore_index=-100)
        per_exit.append(ce.item())
        total = total + s * ce
        kl = torch.zeros((), dtype=DTYPE)
        if distill > 0 and e < L - 1 and counted.any():
            row_kl = (teacher.exp() * (teacher - torch.log_softmax(logits, -1))).sum(-1)
            kl = row_kl[counted].mean()
            distill_loss = distill_loss + distill / len(students) * kl
        exit_kl.append(kl.item())
    total = total + distill_loss
    stats["distill_loss"] = distill_loss.item()
    stats["exit_kl"] = exit_kl
    final_logits = head_logits(cfg, W, torch.stack(xs)).detach()
    return total, per_exit, final_logits, stats


def grads(cfg, weights: dict, tokens, skip, exits, scales, activation="silu", l1=0.0,
          first_visible=None, loss_mask=None, distill=0.0):
    """Returns (loss, per-exit losses, gradients by name, final logits, stats of loss_fn)."""
    W = make_params(weights, cfg)
    loss, per_exit, logits, stats = loss_fn(cfg, W, tokens, skip, exits, scales, activation, l1,
                                            first_visible, loss_mask, distill)
    loss.backward()
    # a parameter no loss reaches (e.g. a layer every sample skipped) has gradient 0
    g = {n: (W[n].grad.numpy() if W[n].grad is not None else np.zeros(W[n].shape)) for n in param_names(cfg)}
    return loss.item(), per_exit, g, logits.numpy(), stats


class Trainer:
    """Replays skiff's run: given each step's tokens and masks, takes the same AdamW steps."""

    def __init__(self, cfg, weights, lr, min_lr, warmup, total, wd, clip, betas=(0.9, 0.95), eps=1e-8,
                 activation="silu", l1=0.0, distill=0.0):
        self.cfg = cfg
        self.activation, self.l1, self.distill = activation, l1, distill
        self.W = make_params(weights, cfg)
        decay = [self.W[n] for n in param_names(cfg) if self.W[n].dim() == 2]
        no_decay = [self.W[n] for n in param_names(cfg) if self.W[n].dim() != 2]
        self.opt = torch.optim.AdamW([{"params": decay, "weight_decay": wd},
                                      {"params": no_decay, "weight_decay": 0.0}],
                                     lr=lr, betas=betas, eps=eps)
        self.lr, self.min_lr, self.warmup, self.total, self.clip = lr, min_lr, warmup, total, clip

    def step(self, t: int, micro_batches, exits, scales) -> float:
        """micro_batches: list of (tokens [B, T+1], skip [B, L] or None[, first_visible [B, T],
        loss_mask [B, T]]). Returns the loss."""
        self.opt.zero_grad()
        total = 0.0
        for mb in micro_batches:
            tokens, skip = mb[0], mb[1]
            fv, mask = (mb[2], mb[3]) if len(mb) > 2 else (None, None)
            loss, _, _, _ = loss_fn(self.cfg, self.W, tokens, skip, exits, scales, self.activation, self.l1,
                                    fv, mask, self.distill)
            (loss / len(micro_batches)).backward()
            total += loss.item() / len(micro_batches)
        if self.clip > 0:
            torch.nn.utils.clip_grad_norm_(list(self.W.values()), self.clip)
        lr = learning_rate(t, self.lr, self.min_lr, self.warmup, self.total)
        for g in self.opt.param_groups:
            g["lr"] = lr
        self.opt.step()
        return total
