"""flops.py — the training-FLOPs convention behind MFU (model FLOPs utilisation).

The convention is the nanoGPT / PaLM one, with the attention term counted per attention
sub-block; the C++ trainer must use the identical formula so that MFU numbers compare:

    training FLOPs per token = 6 * N + 12 * n_attn * n_heads * head_dim * T

  * N: parameters a token passes through, the token-embedding table excluded (a lookup, no
    matmul). The LM head counts (V*D once, whether or not it is tied to the embeddings). With
    weights = shared, the shared self-attention/MLP blocks run once per stack, so they count
    once per stack (p times): N measures work, not storage. (For weights = separate N is simply
    the number of stored parameters minus the embedding table, plus V*D when tied.)
    6 = 2 (multiply-add) * 3 (forward, and backward w.r.t. inputs and weights).
  * 12 * n_heads * head_dim * T per attention sub-block and token: QK^T and PV, 2 FLOPs per
    multiply-add, forward + backward = 3x, without halving for the causal mask (PaLM,
    appendix B). n_attn = attention sub-blocks whose scores are computed: self-attention in
    every layer of every stack (p*h) plus cross-attention in every layer of stacks >= 1
    ((p-1)*h). T is the training sequence length.

MFU = FLOPs per token * tokens per second / peak FLOP/s (dense bf16 peak of the GPU).
"""

from .config import TwinConfig

__all__ = ["count_flop_parameters", "count_attention_blocks", "training_flops_per_token", "mfu",
           "DEFAULT_PEAK_TFLOPS"]

# Dense bf16 tensor-core peak (no sparsity), by a substring of torch.cuda.get_device_name().
DEFAULT_PEAK_TFLOPS = {"H100": 989.4, "H200": 989.4}


def count_flop_parameters(c: TwinConfig) -> int:
    """N of the convention above, from the config alone."""
    d, v, f = c.d_model, c.vocab_size, c.ffn_hidden
    q = c.n_heads * c.head_dim
    kv = c.n_kv_heads * c.head_dim
    p, h = c.n_stacks, c.layers_per_stack
    attention = d * q + 2 * d * kv + q * d
    self_and_mlp_layer = attention + 3 * d * f + 2 * d  # + attn_norm, mlp_norm
    cross_layer = attention + d  # + cross_norm
    n = p * h * self_and_mlp_layer  # shared or not: every stack runs its h blocks
    n += (p - 1) * h * cross_layer
    n += (p - 1) * d  # memory norms
    n += p if c.combine == "linear" else 0
    n += d  # final norm
    n += v * d  # LM head (tied or not)
    return n


def count_attention_blocks(c: TwinConfig) -> int:
    """n_attn: self-attention in every layer of every stack + cross-attention in stacks >= 1."""
    return c.n_stacks * c.layers_per_stack + (c.n_stacks - 1) * c.layers_per_stack


def training_flops_per_token(c: TwinConfig, seq_len: int) -> float:
    """6 * N + 12 * n_attn * n_heads * head_dim * T (forward + backward, per trained token)."""
    return 6.0 * count_flop_parameters(c) + \
        12.0 * count_attention_blocks(c) * c.n_heads * c.head_dim * seq_len


def mfu(tokens_per_second: float, flops_per_token: float, peak_flops_per_second: float) -> float:
    return tokens_per_second * flops_per_token / peak_flops_per_second
