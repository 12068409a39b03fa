"""decode.py — incremental decoding of the twin with static caches (docs/decoding.md, spec §5).

TwinDecoder wraps a TwinModel (its weights are used as they are, nothing is copied) and adds
caches preallocated once for `batch` sequences of up to `max_len` positions:
  * self-attention K/V per stack and layer, [B, Hkv, max_len, hd], keys stored after RoPE;
  * cross-attention K/V per stack s >= 1 and layer, [B, Hkv, max_len, hd]: Wk·M_j and Wv·M_j of
    memory position j, M = RMSNorm_mem,s(output of stack s-1), keys rotated at j when cross_rope.
Position j of a sequence lives at index j of its caches (no ring: a cross_window is a mask).

One forward serves the prefill and the decode step, like gpt-fast's: forward(tokens [B, T],
input_pos [B, T]) runs T new positions per sequence (a prompt, a chunk, or one token); every
attention writes the new rows' keys/values into the caches at input_pos, then attends over the
whole static cache through a mask computed from input_pos (self: keys j <= i; cross: keys
max(0, i-w) <= j <= i-1, w = cross_window, 0 = unbounded). Shapes never depend on how far a
sequence has got, so a decode step is one static graph: torch.compile(mode="reduce-overhead")
records it as a CUDA graph and replays it at every step. Positions are per sequence, so one batch
may hold prompts of different lengths (right-padded: the padding's cache rows are overwritten by
the sequence's own later positions before any of its queries can see them).

Schedules:
  * staggered (the default): every stack advances by the T positions. The twin runs the stacks one
    after the other within a call, stack s appending memory rows i (stack s-1's output at the new
    positions) before attending: queries read memory positions < i only, so the values are exactly
    those of the teacher-forced forward (the C++ decoder appends position i-1 at the start of step
    i instead: the same cache contents by the time any query reads them).
  * recurrent (shared weights, n_stacks >= 2, combine = last; spec §5): the prompt is prefilled
    with the staggered forward; then each step (one token) runs the last stack alone, attending to
    its own self cache and to memory positions < i, and afterwards appends its OWN output at i,
    normalised by its memory norm, as memory position i. So memory positions < n (the prompt) hold
    stack p-2's outputs and positions >= n the last stack's; stacks 0..p-2 stop after the prefill.
    The first step's logits equal the teacher-forced forward's, later ones differ by design.

Precision: float64 on the CPU (the oracle of python/twin_decode.py check), bf16 (or any dtype) on
CUDA. Norms, RoPE and the math attention compute in at least float32, as in model.py.
Attention: F.scaled_dot_product_attention with a boolean mask when torch has it, else an explicit
softmax (torch 1.13); rows that see no key (cross-attention at position 0) output exactly zero.
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .model import TwinModel, _compute_dtype, _sdpa_supports_gqa, sdpa_available

__all__ = ["TwinDecoder", "recurrent_unsupported", "pad_prompts", "teacher_forced_decode",
           "recurrent_reference_logits"]


def recurrent_unsupported(config) -> str:
    """Why `config` cannot decode recurrently, or "" when it can (as src/model/decoding.cpp)."""
    if config.n_stacks >= 2 and config.weights == "shared" and config.combine == "last":
        return ""
    return (f"recurrent decoding needs a model with shared weights, n_stacks >= 2 and combine = "
            f"last (it runs one pass of the shared blocks per step); this model has weights "
            f"{config.weights}, n_stacks {config.n_stacks}, combine {config.combine}")


class KVCache(nn.Module):
    """Keys and values [B, Hkv, S, hd] of one attention sub-block, zero-initialised (masked rows
    are multiplied by a probability of 0, so they must be finite)."""

    def __init__(self, batch, n_kv_heads, max_len, head_dim, dtype, device):
        super().__init__()
        shape = (batch, n_kv_heads, max_len, head_dim)
        self.register_buffer("k", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("v", torch.zeros(shape, dtype=dtype, device=device), persistent=False)

    def write(self, rows, input_pos, k_new, v_new):
        """k_new, v_new [B, T, Hkv, hd] go to positions input_pos [B, T] of sequences rows [B, 1]
        (advanced indices around a slice: the indexed view is [B, T, Hkv, hd])."""
        self.k[rows, :, input_pos] = k_new.to(self.k.dtype)
        self.v[rows, :, input_pos] = v_new.to(self.v.dtype)


def rope_at(x, input_pos, cos, sin):
    """Rotates pairs (2m, 2m+1) of x [B, T, H, hd] by the angles of positions input_pos [B, T]
    (the same arithmetic as model.apply_rope, at arbitrary positions)."""
    xc = x.to(_compute_dtype(x.dtype))
    c = cos[input_pos].to(xc.dtype)[:, :, None, :]
    s = sin[input_pos].to(xc.dtype)[:, :, None, :]
    pairs = xc.reshape(*xc.shape[:-1], -1, 2)
    x0, x1 = pairs[..., 0], pairs[..., 1]
    rotated = torch.stack((x0 * c - x1 * s, x0 * s + x1 * c), dim=-1)
    return rotated.reshape(x.shape).to(x.dtype)


def cached_attention(q, k, v, visible, impl, may_be_empty, sdpa_gqa=False):
    """q [B, Hq, T, hd] over the cache k, v [B, Hkv, S, hd]; visible [B, 1, T, S] (True = the key
    is seen). Rows that see no key output zero (only possible when may_be_empty). sdpa_gqa: SDPA
    takes enable_gqa= (torch >= 2.5; decided once, outside any compiled graph)."""
    group = q.shape[1] // k.shape[1]
    if impl == "sdpa":
        extra = {}
        if group > 1:
            if sdpa_gqa:
                extra["enable_gqa"] = True
            else:
                k = k.repeat_interleave(group, dim=1)
                v = v.repeat_interleave(group, dim=1)
        out = F.scaled_dot_product_attention(q, k.to(q.dtype), v.to(q.dtype), attn_mask=visible,
                                             **extra)
    else:
        if group > 1:
            k = k.repeat_interleave(group, dim=1)
            v = v.repeat_interleave(group, dim=1)
        cd = _compute_dtype(q.dtype)
        scores = torch.matmul(q.to(cd), k.to(cd).transpose(-1, -2)) / math.sqrt(q.shape[-1])
        scores = scores.masked_fill(~visible, float("-inf"))
        out = torch.matmul(torch.softmax(scores, dim=-1), v.to(cd)).to(q.dtype)
    if may_be_empty:  # a softmax over no key is NaN (or arbitrary): the defined output is zero
        out = torch.where(visible.any(dim=-1, keepdim=True), out, torch.zeros_like(out))
    return out


class TwinDecoder(nn.Module):
    """Static-cache incremental decoder of a TwinModel (see the module docstring).

    decoder(tokens, input_pos, recurrent=False, last=None) -> logits
      tokens    integer [B, T] (B = the decoder's batch);
      input_pos integer [B, T], the positions of those tokens (each row consecutive, starting
                where the sequence stopped; 0 for a prefill). Not checked here (a check would
                break the compiled graph): use teacher_forced_decode or check them yourself;
      recurrent one step (T = 1) of recurrent decoding instead of the staggered forward;
      last      optional integer [B]: compute the logits only at index last[b] of row b
                (e.g. the last real prompt token) -> [B, 1, V]; otherwise [B, T, V].
    """

    def __init__(self, model: TwinModel, batch: int, max_len=None, attention_impl=None):
        super().__init__()
        c = model.config
        if max_len is None:
            max_len = c.max_seq_len
        if not 1 <= max_len <= c.max_seq_len:
            raise ValueError(f"max_len {max_len} must be in 1..max_seq_len {c.max_seq_len}")
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        impl = attention_impl or model.attention_impl
        if impl == "sdpa" and not sdpa_available():
            raise ValueError(f"torch {torch.__version__} has no scaled_dot_product_attention")
        self.model = model
        self.config = c
        self.batch = batch
        self.max_len = max_len
        self.attention_impl = impl
        self.sdpa_gqa = impl == "sdpa" and _sdpa_supports_gqa()
        self.cross_window = c.cross_window
        weight = model.tok_embeddings.weight
        make = lambda: KVCache(batch, c.n_kv_heads, max_len, c.head_dim, weight.dtype, weight.device)
        p, h = c.n_stacks, c.layers_per_stack
        self.self_caches = nn.ModuleList(make() for _ in range(p * h))          # [s * h + l]
        self.cross_caches = nn.ModuleList(make() for _ in range((p - 1) * h))   # [(s-1) * h + l]

    # -- pieces --------------------------------------------------------------------------------

    def _rope(self, x, input_pos):
        m = self.model
        if x.dtype == torch.float64:
            return rope_at(x, input_pos, m.rope_cos, m.rope_sin)
        return rope_at(x, input_pos, m.rope_cos32, m.rope_sin32)

    def _heads(self, linear, x, n_heads):
        b, t, _ = x.shape
        return linear(x).view(b, t, n_heads, self.config.head_dim)

    def _masks(self, input_pos):
        """Visibility [B, 1, T, S] for self-attention and for cross-attention."""
        keys = torch.arange(self.max_len, device=input_pos.device)[None, None, :]
        i = input_pos[:, :, None]
        seen_self = keys <= i
        seen_cross = keys < i
        if self.cross_window > 0:
            seen_cross = seen_cross & (keys >= i - self.cross_window)
        return seen_self[:, None], seen_cross[:, None]

    def _self_attention(self, proj, x, cache, rows, input_pos, visible):
        c = self.config
        q = self._rope(self._heads(proj.wq, x, c.n_heads), input_pos)
        k = self._rope(self._heads(proj.wk, x, c.n_kv_heads), input_pos)
        v = self._heads(proj.wv, x, c.n_kv_heads)
        cache.write(rows, input_pos, k, v)
        out = cached_attention(q.transpose(1, 2), cache.k, cache.v, visible, self.attention_impl,
                               may_be_empty=False, sdpa_gqa=self.sdpa_gqa)
        return proj.wo(out.transpose(1, 2).flatten(2))

    def _append_memory(self, proj, mem, cache, rows, input_pos):
        """Cross keys/values of memory rows mem [B, T, D] (already normalised) at input_pos."""
        c = self.config
        k = self._heads(proj.wk, mem, c.n_kv_heads)
        v = self._heads(proj.wv, mem, c.n_kv_heads)
        if c.cross_rope:
            k = self._rope(k, input_pos)
        cache.write(rows, input_pos, k, v)

    def _cross_attention(self, proj, x, cache, input_pos, visible):
        c = self.config
        q = self._heads(proj.wq, x, c.n_heads)
        if c.cross_rope:
            q = self._rope(q, input_pos)
        out = cached_attention(q.transpose(1, 2), cache.k, cache.v, visible, self.attention_impl,
                               may_be_empty=True, sdpa_gqa=self.sdpa_gqa)
        return proj.wo(out.transpose(1, 2).flatten(2))

    def _stack(self, s, x, source, rows, input_pos, masks):
        """Stack s over the new positions; source = stack s-1's output there (memory rows to
        append first), or None (recurrent: the memory at these positions comes later)."""
        c, m = self.config, self.model
        stack = m.stacks[s]
        seen_self, seen_cross = masks
        if s >= 1 and source is not None:
            mem = stack.mem_norm(source)
            for l, layer in enumerate(stack.layers):
                self._append_memory(layer.cross_attn, mem, self.cross_caches[(s - 1) * c.layers_per_stack + l],
                                    rows, input_pos)
        for l, layer in enumerate(stack.layers):
            blocks = m.self_layer(s, l)
            x = x + self._self_attention(blocks.attn, blocks.attn_norm(x),
                                         self.self_caches[s * c.layers_per_stack + l], rows,
                                         input_pos, seen_self)
            if s >= 1:
                x = x + self._cross_attention(layer.cross_attn, layer.cross_norm(x),
                                              self.cross_caches[(s - 1) * c.layers_per_stack + l],
                                              input_pos, seen_cross)
            x = x + blocks.mlp(blocks.mlp_norm(x))
        return x

    def _head(self, outputs, last):
        c, m = self.config, self.model
        if last is not None:
            rows = torch.arange(outputs[0].shape[0], device=outputs[0].device)
            outputs = [o[rows, last][:, None] for o in outputs]
        if c.combine == "linear":
            alpha = m.combine.alpha
            combined = sum(alpha[k] * outputs[k] for k in range(c.n_stacks))
        else:
            combined = outputs[-1]
        return F.linear(m.final_norm(combined), m.head_weight())

    # -- the forward ---------------------------------------------------------------------------

    def forward(self, tokens, input_pos, recurrent=False, last=None):
        c, m = self.config, self.model
        input_pos = input_pos.long()
        rows = torch.arange(tokens.shape[0], device=tokens.device)[:, None]
        masks = self._masks(input_pos)
        embedded = F.embedding(tokens.long(), m.tok_embeddings.weight)
        if recurrent:
            # One pass of the last stack; then its output at i becomes memory position i.
            s = c.n_stacks - 1
            out = self._stack(s, embedded, None, rows, input_pos, masks)
            mem = m.stacks[s].mem_norm(out)
            for l, layer in enumerate(m.stacks[s].layers):
                self._append_memory(layer.cross_attn, mem,
                                    self.cross_caches[(s - 1) * c.layers_per_stack + l], rows,
                                    input_pos)
            return self._head([out] * c.n_stacks, last)  # combine = last
        outputs = []
        for s in range(c.n_stacks):
            outputs.append(self._stack(s, embedded, outputs[-1] if outputs else None, rows,
                                       input_pos, masks))
        return self._head(outputs, last)


# ---- host-side drivers (checked inputs, any prompt lengths) ------------------------------------

def pad_prompts(prompts, device=None):
    """Right-pads 1-D integer prompts: (tokens [B, P] int64, input_pos [B, P], lengths [B])."""
    lengths = [int(p.numel()) for p in prompts]
    width = max(lengths)
    tokens = torch.zeros(len(prompts), width, dtype=torch.long, device=device)
    for b, p in enumerate(prompts):
        tokens[b, :lengths[b]] = p.to(device=device, dtype=torch.long)
    input_pos = torch.arange(width, device=device)[None, :].expand(len(prompts), width).contiguous()
    return tokens, input_pos, torch.tensor(lengths, dtype=torch.long, device=device)


@torch.no_grad()
def teacher_forced_decode(decoder: TwinDecoder, prompts, tokens, mode="staggered", chunk=1,
                          step=None):
    """Prefills `prompts` (B 1-D integer tensors, any lengths >= 1) in one padded call, then feeds
    tokens [B, N] (token k of row b at position len_b + k): `chunk` tokens per call in staggered
    mode (1 = one decode step at a time; > 1 exercises multi-position calls), one in recurrent.
    `step`, if given, replaces decoder(tokens, input_pos, recurrent) for the one-token calls (e.g.
    a torch.compile'd version of it). Returns per sequence the logits [len_b + N, V] after each of
    its positions (prompt positions from the prefill, then one row per fed token)."""
    c = decoder.config
    if mode not in ("staggered", "recurrent"):
        raise ValueError(f"mode must be staggered|recurrent, got {mode!r}")
    if mode == "recurrent":
        why = recurrent_unsupported(c)
        if why:
            raise ValueError(why)
        chunk = 1
    B = len(prompts)
    if B != decoder.batch:
        raise ValueError(f"{B} prompts for a decoder of batch {decoder.batch}")
    device = decoder.model.tok_embeddings.weight.device
    tokens = tokens.to(device=device, dtype=torch.long)
    if tokens.dim() != 2:
        tokens = tokens.reshape(B, -1)
    n_fed = tokens.shape[1]
    ptok, ppos, lengths = pad_prompts(prompts, device)
    if int(lengths.min()) < 1:
        raise ValueError("every prompt needs at least one token")
    if int(lengths.max()) + n_fed > decoder.max_len:
        raise ValueError(f"prompt of {int(lengths.max())} + {n_fed} fed tokens exceed the "
                         f"decoder's {decoder.max_len} positions")
    for t in (ptok, tokens):
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= c.vocab_size):
            raise ValueError(f"token ids outside the vocabulary [0, {c.vocab_size})")
    prefill = decoder(ptok, ppos)
    result = [[prefill[b, :int(lengths[b])].clone()] for b in range(B)]
    k = 0
    while k < n_fed:
        t = min(chunk, n_fed - k)
        pos = lengths[:, None] + torch.arange(k, k + t, device=device)[None, :]
        run = step if (step is not None and t == 1) else decoder
        logits = run(tokens[:, k:k + t], pos, mode == "recurrent")
        for b in range(B):
            result[b].append(logits[b].clone())  # a CUDA-graph output is overwritten by the next
        k += t
    return [torch.cat(r, dim=0) for r in result]


@torch.no_grad()
def recurrent_reference_logits(model: TwinModel, prompt, tokens):
    """The slow definition of recurrent decoding, for tests: no caches, everything recomputed
    from scratch with the twin's training forward at every step. prompt: 1-D (n >= 1 tokens),
    tokens: 1-D (N). Returns the logits [n + N, V] after every position.

    Positions < n: the teacher-forced forward of the prompt. Step i >= n: the last stack runs over
    positions 0..i from the embeddings, its memory source at j < n being stack p-2's output on the
    prompt and at n <= j < i the last stack's own output at j (computed at step j); the source
    row at i is never read (queries see j < i), it is zero here."""
    c = model.config
    why = recurrent_unsupported(c)
    if why:
        raise ValueError(why)
    prompt = prompt.long().reshape(-1)
    tokens = tokens.long().reshape(-1)
    n = prompt.numel()
    prompt_logits, _ = model(prompt[None])
    # Stack p-2's output on the prompt: the forward again, stack by stack.
    embedded = F.embedding(prompt[None], model.tok_embeddings.weight)
    outputs = []
    for s in range(c.n_stacks - 1):
        outputs.append(model._stack(s, embedded, outputs[-1] if outputs else None))
    source = [outputs[-1][0, j] for j in range(n)]  # memory sources, one row per position
    sequence = prompt.tolist()
    rows = [prompt_logits[0]]
    for k in range(tokens.numel()):
        sequence.append(int(tokens[k]))
        i = len(sequence) - 1
        emb = F.embedding(torch.tensor([sequence]), model.tok_embeddings.weight)
        src = torch.stack(source + [torch.zeros_like(source[0])])[None]  # [1, i + 1, D]
        out = model._stack(c.n_stacks - 1, emb, src)[0, i]
        source.append(out)
        rows.append(F.linear(model.final_norm(out[None]), model.head_weight()))
    return torch.cat(rows, dim=0)
