"""model.py — a plain PyTorch (torch.nn) twin of every StagFormer variant of src/model/.

What it computes is exactly what src/model/model.cpp and block.cpp compute (docs/model.md):
  * every stack starts from the token embeddings E[x];
  * a layer is   x += SelfAttn(RMSNorm_attn(x))
                 x += CrossAttn(RMSNorm_cross(x), mem)      (stacks s >= 1)
                 x += W2 (silu(W1 n) * (W3 n)),  n = RMSNorm_mlp(x);
  * RMSNorm without mean subtraction: x / sqrt(mean(x^2) + eps) * weight;
  * RoPE on interleaved pairs (2m, 2m+1) (NOT rotate-half) at positions 0..T-1, angle
    p * theta^(-2m / head_dim); grouped-query heads: query head h reads kv head h // (Hq / Hkv);
  * the memory of stack s >= 1 is RMSNorm_mem,s(output of stack s-1); query i of its
    cross-attention sees memory positions j with i-w <= j <= i-1 (w = cross_window, 0 =
    unbounded); query 0 sees nothing and outputs exactly zero; cross_rope rotates q at i and k at j;
  * weights = shared: stacks s >= 1 reuse stack 0's self-attention, MLP and their norms (one
    tensor each, named under stacks.0, so autograd sums their gradients over the stacks);
  * combine = last: the last stack's output; linear: sum_k alpha_k * output_k;
  * final RMSNorm, LM head (tok_embeddings.weight when tied), mean cross-entropy over the
    targets != -1 (0 when there are none).

Parameter names (model.named_parameters()) are the safetensors names of src/model/weights.h, so
our model.safetensors loads with load_weights() and gradients come back by the same names.

Precision: in float64 on the CPU the twin is the test oracle (python/twin_check.py). On CUDA it is
meant to run with float32 weights under torch.autocast(bfloat16): norms, RoPE, softmax statistics
and the loss are computed in at least float32 whatever the activation dtype.

Attention runs through torch.nn.functional.scaled_dot_product_attention when torch has it
(torch >= 2.0), else through an explicit softmax (attention_impl="math"; torch 1.13 has no SDPA).
The staggered cross-attention is made an ordinary causal attention by a shift: query i >= 1 over
memory positions 0..T-2 with "j <= i-1" is, with a = i-1, the causal mask "j <= a" (plus the
sliding window "a - j <= w-1" when w > 0); every shifted row sees its diagonal, so no row is fully
masked (SDPA would give NaN for one), and query 0 gets a constant zero row prepended.
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import TwinConfig

__all__ = ["TwinModel", "load_weights", "loss_and_gradients", "sdpa_available"]


def sdpa_available() -> bool:
    return hasattr(F, "scaled_dot_product_attention")


def _sdpa_supports_gqa() -> bool:
    """enable_gqa= exists from torch 2.5 on."""
    try:
        major, minor = (int(p) for p in torch.__version__.split(".")[:2])
    except ValueError:
        return False
    return (major, minor) >= (2, 5)


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Norms, RoPE and softmax run in float64 for float64 tensors, else in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


# ---- building blocks ---------------------------------------------------------------------------

class RMSNorm(nn.Module):
    """x / sqrt(mean(x^2) + eps) * weight (no mean subtraction), computed in at least float32,
    returned in x's dtype."""

    def __init__(self, dim, eps, **factory):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim, **factory))

    def forward(self, x):
        xc = x.to(_compute_dtype(x.dtype))
        rstd = torch.rsqrt(xc.pow(2).mean(dim=-1, keepdim=True) + self.eps)
        return (xc * rstd * self.weight.to(xc.dtype)).to(x.dtype)


class AttentionProjections(nn.Module):
    """Wq [Hq*hd, D], Wk and Wv [Hkv*hd, D], Wo [D, Hq*hd] of one attention sub-block."""

    def __init__(self, config: TwinConfig, **factory):
        super().__init__()
        d, q, kv = config.d_model, config.n_heads * config.head_dim, config.n_kv_heads * config.head_dim
        self.wq = nn.Linear(d, q, bias=False, **factory)
        self.wk = nn.Linear(d, kv, bias=False, **factory)
        self.wv = nn.Linear(d, kv, bias=False, **factory)
        self.wo = nn.Linear(q, d, bias=False, **factory)


class SwiGLU(nn.Module):
    """W2 (silu(W1 x) * (W3 x))."""

    def __init__(self, config: TwinConfig, **factory):
        super().__init__()
        d, f = config.d_model, config.ffn_hidden
        self.w1 = nn.Linear(d, f, bias=False, **factory)
        self.w3 = nn.Linear(d, f, bias=False, **factory)
        self.w2 = nn.Linear(f, d, bias=False, **factory)

    def forward(self, x):
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class Layer(nn.Module):
    """One layer's weights. owns_blocks=False (shared weights, stacks >= 1): only the
    cross-attention sub-block; self-attention and MLP come from stack 0's layer."""

    def __init__(self, config: TwinConfig, owns_blocks: bool, has_cross: bool, **factory):
        super().__init__()
        if owns_blocks:
            self.attn_norm = RMSNorm(config.d_model, config.norm_eps, **factory)
            self.attn = AttentionProjections(config, **factory)
        if has_cross:
            self.cross_norm = RMSNorm(config.d_model, config.norm_eps, **factory)
            self.cross_attn = AttentionProjections(config, **factory)
        if owns_blocks:
            self.mlp_norm = RMSNorm(config.d_model, config.norm_eps, **factory)
            self.mlp = SwiGLU(config, **factory)


class Stack(nn.Module):
    def __init__(self, config: TwinConfig, index: int, **factory):
        super().__init__()
        owns_blocks = index == 0 or not config.shared
        self.layers = nn.ModuleList(
            Layer(config, owns_blocks, index >= 1, **factory) for _ in range(config.layers_per_stack))
        if index >= 1:
            self.mem_norm = RMSNorm(config.d_model, config.norm_eps, **factory)


class Combine(nn.Module):
    """combine.alpha [p] of combine = linear."""

    def __init__(self, n_stacks, **factory):
        super().__init__()
        alpha = torch.zeros(n_stacks, **factory)
        alpha[-1] = 1.0
        self.alpha = nn.Parameter(alpha)


# ---- functions of the forward ------------------------------------------------------------------

def rope_tables(max_seq_len, head_dim, theta, device=None):
    """cos and sin [max_seq_len, head_dim/2] in float64: angle p * theta^(-2m / head_dim)."""
    m = torch.arange(head_dim // 2, dtype=torch.float64, device=device)
    inv_freq = torch.pow(torch.tensor(float(theta), dtype=torch.float64, device=device),
                         -2.0 * m / head_dim)
    angles = torch.arange(max_seq_len, dtype=torch.float64, device=device)[:, None] * inv_freq[None, :]
    return torch.cos(angles), torch.sin(angles)


def apply_rope(x, cos, sin):
    """Rotates pairs (2m, 2m+1) of x [B, T, H, hd] by the angles of positions 0..T-1."""
    t = x.shape[1]
    xc = x.to(_compute_dtype(x.dtype))
    c = cos[:t, None, :].to(xc.dtype)
    s = sin[:t, None, :].to(xc.dtype)
    pairs = xc.reshape(*xc.shape[:-1], -1, 2)
    x0, x1 = pairs[..., 0], pairs[..., 1]
    rotated = torch.stack((x0 * c - x1 * s, x0 * s + x1 * c), dim=-1)
    return rotated.reshape(x.shape).to(x.dtype)


def causal_attention(q, k, v, window, impl):
    """Softmax attention of q [B, Hq, T, hd] over k, v [B, Hkv, T, hd], query a seeing keys
    j <= a, and also a - j <= window-1 when window > 0. Every row sees its diagonal."""
    t = q.shape[2]
    group = q.shape[1] // k.shape[1]
    windowed = 0 < window < t  # a window of >= T keys is the plain causal mask
    mask = None
    if windowed:
        a = torch.arange(t, device=q.device)[:, None]
        j = torch.arange(t, device=q.device)[None, :]
        mask = (j <= a) & (a - j < window)  # True = visible
    if impl == "sdpa":
        extra = {}
        if group > 1:
            if _sdpa_supports_gqa():
                extra["enable_gqa"] = True
            else:
                k = k.repeat_interleave(group, dim=1)
                v = v.repeat_interleave(group, dim=1)
        if windowed:
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, **extra)
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, **extra)
    # Explicit softmax in at least float32.
    if group > 1:
        k = k.repeat_interleave(group, dim=1)
        v = v.repeat_interleave(group, dim=1)
    if mask is None:
        a = torch.arange(t, device=q.device)[:, None]
        mask = torch.arange(t, device=q.device)[None, :] <= a
    cd = _compute_dtype(q.dtype)
    scores = torch.matmul(q.to(cd), k.to(cd).transpose(-1, -2)) / math.sqrt(q.shape[-1])
    scores = scores.masked_fill(~mask, float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    return torch.matmul(probs, v.to(cd)).to(q.dtype)


# ---- the model ---------------------------------------------------------------------------------

class TwinModel(nn.Module):
    """The StagFormer of `config`; forward(tokens, targets) -> (logits [B, T, V], mean loss)."""

    def __init__(self, config: TwinConfig, device=None, dtype=None, attention_impl="auto"):
        super().__init__()
        config.validate()
        if attention_impl == "auto":
            attention_impl = "sdpa" if sdpa_available() else "math"
        if attention_impl not in ("sdpa", "math"):
            raise ValueError(f"attention_impl must be auto|sdpa|math, got {attention_impl!r}")
        if attention_impl == "sdpa" and not sdpa_available():
            raise ValueError(f"torch {torch.__version__} has no scaled_dot_product_attention")
        self.config = config
        self.attention_impl = attention_impl
        factory = {"device": device, "dtype": dtype}
        c = config
        self.tok_embeddings = nn.Embedding(c.vocab_size, c.d_model, **factory)
        self.stacks = nn.ModuleList(Stack(c, s, **factory) for s in range(c.n_stacks))
        if c.combine == "linear":
            self.combine = Combine(c.n_stacks, **factory)
        self.final_norm = RMSNorm(c.d_model, c.norm_eps, **factory)
        if not c.tie_embeddings:
            self.lm_head = nn.Linear(c.d_model, c.vocab_size, bias=False, **factory)
        self._make_rope_tables(device)

    def _make_rope_tables(self, device):
        """cos/sin in float64 (for float64 runs) and rounded once to float32 (for the rest)."""
        c = self.config
        cos, sin = rope_tables(c.max_seq_len, c.head_dim, c.rope_theta, device=device)
        for name, table in (("rope_cos", cos), ("rope_sin", sin), ("rope_cos32", cos.float()),
                            ("rope_sin32", sin.float())):
            self.register_buffer(name, table, persistent=False)

    def _apply(self, fn, *args, **kwargs):
        # .to(dtype) / .half() would also cast the RoPE tables: remake them on the new device.
        super()._apply(fn, *args, **kwargs)
        self._make_rope_tables(self.rope_cos.device)
        return self

    def _rope(self, x):
        if x.dtype == torch.float64:
            return apply_rope(x, self.rope_cos, self.rope_sin)
        return apply_rope(x, self.rope_cos32, self.rope_sin32)

    # -- weights -------------------------------------------------------------------------------

    def head_weight(self):
        return self.tok_embeddings.weight if self.config.tie_embeddings else self.lm_head.weight

    def self_layer(self, s, l):
        """The layer whose self-attention and MLP stack s runs at depth l."""
        return self.stacks[0 if self.config.shared else s].layers[l]

    @torch.no_grad()
    def initialize(self, generator=None):
        """Our initialisation scheme (docs/model.md), drawn from torch's RNG (values differ from
        the C++ init): matrices ~ N(0, init_std^2); attn.wo, cross_attn.wo, mlp.w2 ~
        N(0, (init_std / sqrt(2 p h))^2); norm weights 1; combine.alpha = (0, ..., 0, 1)."""
        c = self.config
        residual_std = c.init_std / math.sqrt(2.0 * c.n_stacks * c.layers_per_stack)
        for name, p in self.named_parameters():
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            elif name == "combine.alpha":
                p.zero_()
                p[-1] = 1.0
            else:
                residual_out = name.endswith("attn.wo.weight") or name.endswith("mlp.w2.weight")
                p.normal_(0.0, residual_std if residual_out else c.init_std, generator=generator)

    # -- forward -------------------------------------------------------------------------------

    def _heads(self, linear, x, n_heads):
        b, t, _ = x.shape
        return linear(x).view(b, t, n_heads, self.config.head_dim)

    def _self_attention(self, proj, x):
        c = self.config
        q = self._rope(self._heads(proj.wq, x, c.n_heads))
        k = self._rope(self._heads(proj.wk, x, c.n_kv_heads))
        v = self._heads(proj.wv, x, c.n_kv_heads)
        out = causal_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), 0,
                               self.attention_impl)
        return proj.wo(out.transpose(1, 2).flatten(2))

    def _cross_attention(self, proj, x, mem):
        """Query i sees memory positions max(0, i-w) <= j <= i-1; query 0 outputs zero."""
        c = self.config
        b, t, _ = x.shape
        q = self._heads(proj.wq, x, c.n_heads)
        k = self._heads(proj.wk, mem, c.n_kv_heads)
        v = self._heads(proj.wv, mem, c.n_kv_heads)
        if c.cross_rope:  # rotate at the true positions, before the shift
            q = self._rope(q)
            k = self._rope(k)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # [B, H, T, hd]
        first_row = torch.zeros(b, c.n_heads, 1, c.head_dim, device=q.device, dtype=q.dtype)
        if t > 1:
            shifted = causal_attention(q[:, :, 1:], k[:, :, :-1], v[:, :, :-1], c.cross_window,
                                       self.attention_impl)
            out = torch.cat((first_row, shifted.to(q.dtype)), dim=2)
        else:
            out = first_row
        return proj.wo(out.transpose(1, 2).flatten(2))

    def _stack(self, s, embedded, previous_output):
        stack = self.stacks[s]
        mem = stack.mem_norm(previous_output) if s >= 1 else None
        x = embedded
        for l, layer in enumerate(stack.layers):
            blocks = self.self_layer(s, l)
            x = x + self._self_attention(blocks.attn, blocks.attn_norm(x))
            if s >= 1:
                x = x + self._cross_attention(layer.cross_attn, layer.cross_norm(x), mem)
            x = x + blocks.mlp(blocks.mlp_norm(x))
        return x

    def forward(self, tokens, targets=None):
        """tokens, targets: integer [B, T] (targets -1 = ignored). Returns (logits, loss); loss is
        None without targets, and 0 when every target is ignored."""
        c = self.config
        t = tokens.shape[1]
        if t > c.max_seq_len:
            raise ValueError(f"sequence of {t} tokens exceeds max_seq_len {c.max_seq_len}")
        embedded = F.embedding(tokens.long(), self.tok_embeddings.weight)
        outputs = []
        for s in range(c.n_stacks):
            outputs.append(self._stack(s, embedded, outputs[-1] if outputs else None))
        if c.combine == "linear":
            alpha = self.combine.alpha
            combined = sum(alpha[k] * outputs[k] for k in range(c.n_stacks))
        else:
            combined = outputs[-1]
        logits = F.linear(self.final_norm(combined), self.head_weight())
        if targets is None:
            return logits, None
        flat_targets = targets.reshape(-1).long()
        loss_sum = F.cross_entropy(logits.reshape(-1, c.vocab_size).to(_compute_dtype(logits.dtype)),
                                   flat_targets, ignore_index=-1, reduction="sum")
        counted = (flat_targets != -1).sum().clamp(min=1)
        return logits, loss_sum / counted


# ---- weights in, gradients out -----------------------------------------------------------------

def load_weights(model: TwinModel, tensors, source="weights"):
    """Copies {name: tensor} into the model's parameters (cast to their dtype and device). Every
    parameter must be present with its shape and no unknown tensor may be given: the ValueError
    names `source` and every offending tensor."""
    params = dict(model.named_parameters())
    problems = []
    for name in tensors:
        if name not in params:
            problems.append(f"tensor '{name}' is not a parameter of this model (config mismatch?)")
    for name, p in params.items():
        if name not in tensors:
            problems.append(f"missing tensor '{name}'")
        elif tuple(tensors[name].shape) != tuple(p.shape):
            problems.append(f"tensor '{name}' has shape {list(tensors[name].shape)}, "
                            f"expected {list(p.shape)}")
    if problems:
        shown = "; ".join(problems[:5])
        more = f"; ... and {len(problems) - 5} more" if len(problems) > 5 else ""
        raise ValueError(f"{source}: {shown}{more}")
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(tensors[name].to(device=p.device, dtype=p.dtype))


def loss_and_gradients(model: TwinModel, tokens, targets):
    """Mean loss (a float) and {parameter name: gradient of the mean loss} of one batch. Shared
    weights appear once (under stacks.0) with their gradient summed over the stacks."""
    model.zero_grad(set_to_none=True)
    _, loss = model(tokens, targets)
    loss.backward()
    grads = {}
    for name, p in model.named_parameters():
        grads[name] = p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p)
    return loss.item(), grads
