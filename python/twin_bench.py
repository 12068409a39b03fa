#!/usr/bin/env python3
"""twin_bench.py — training-step speed of the PyTorch twin on CUDA: the reference our trainer is
compared with.

Usage: python3 python/twin_bench.py --config CONFIG.json --batch B --seq T --steps N
                                    [--warmup W] [--compile] [--dtype bf16|fp32]
                                    [--peak-tflops P] [--json OUT]

The recipe is what a PyTorch user would write, and does per step what our trainer does:
  * weights, gradients and optimizer state in float32; with --dtype bf16 (the default) the
    forward and backward run under torch.autocast(bfloat16) (bf16 matmuls and attention, norms,
    RoPE, softmax statistics and the loss in float32): "bf16 autocast with fp32 master weights".
    --dtype fp32 runs everything in float32 (TF32 off);
  * attention through scaled_dot_product_attention (flash kernel for causal self-attention and
    the unbounded cross-attention, a boolean mask for windowed cross-attention);
  * loss.backward(), global-norm clipping at --grad-clip (1.0 as our trainer; 0 = off),
    torch.optim.AdamW(fused=True) with betas (0.9, 0.95), weight decay 0.1 on matrices only
    (not on norms and combine.alpha, as our trainer), zero_grad(set_to_none=True);
  * --compile wraps the model (forward + loss; backward via AOTAutograd) in torch.compile.
Tokens are random ids (speed does not depend on them), a few batches made up front on the GPU.

Timing: --warmup steps first (they include torch.compile's compilation and the optimizer's lazy
initialisation, and are excluded), then --steps steps, each bracketed by CUDA events recorded on
the current stream without host synchronisation in between; the step time reported is the median
of the per-step event times (the mean of a host-timed run is printed as a cross-check).
tokens/s = B * T / median step time. MFU = training FLOPs per token (stagformer_twin/flops.py:
6 N + 12 n_attn H hd T, the convention the C++ bench shares) * tokens/s / peak bf16 dense FLOP/s
(--peak-tflops; defaults by GPU name: H100 and H200 989.4).

Prints one line of JSON (also written to --json OUT).
"""

import argparse
import contextlib
import json
import os
import statistics
import sys
import time

sys.dont_write_bytecode = True  # leave no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def parse_args(argv):
    parser = argparse.ArgumentParser(description="Training-step speed of the PyTorch twin on CUDA.")
    parser.add_argument("--config", required=True, help="our model config.json")
    parser.add_argument("--batch", type=int, required=True, help="sequences per step (B)")
    parser.add_argument("--seq", type=int, required=True, help="tokens per sequence (T)")
    parser.add_argument("--steps", type=int, required=True, help="timed steps")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first (default 5)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--dtype", choices=("bf16", "fp32"), default="bf16",
                        help="bf16: fp32 weights + bf16 autocast (default); fp32: all float32")
    parser.add_argument("--attention", choices=("auto", "sdpa", "math"), default="auto",
                        help="attention implementation of the twin (default: sdpa)")
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--weight-decay", type=float, default=0.1)
    parser.add_argument("--grad-clip", type=float, default=1.0, help="global-norm clip; 0 = off")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="peak dense bf16 TFLOP/s for MFU (default by GPU name: H100/H200 989.4)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="also write the result line to this file")
    args = parser.parse_args(argv)
    for name in ("batch", "seq", "steps"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name} must be positive")
    if args.warmup < 0:
        parser.error("--warmup must be >= 0")
    return args


def default_peak_tflops(device_name):
    from stagformer_twin.flops import DEFAULT_PEAK_TFLOPS
    for key, tflops in DEFAULT_PEAK_TFLOPS.items():
        if key in device_name:
            return tflops
    return None


def build_optimizer(model, args):
    """AdamW(fused) with weight decay on matrices (dim >= 2), none on norms and combine.alpha."""
    import torch
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": args.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.95), eps=1e-8, fused=True)


def main(argv):
    args = parse_args(argv)
    import torch
    from stagformer_twin import (ConfigError, TwinModel, count_flop_parameters, load_config,
                                 training_flops_per_token)
    from stagformer_twin.flops import mfu

    if not torch.cuda.is_available():
        print("twin_bench: no CUDA device (torch.cuda.is_available() is False)", file=sys.stderr)
        return 2
    try:
        config = load_config(args.config)
    except (OSError, ConfigError) as e:
        print(f"twin_bench: {e}", file=sys.stderr)
        return 2
    if args.seq > config.max_seq_len:
        print(f"twin_bench: --seq {args.seq} exceeds max_seq_len {config.max_seq_len} of "
              f"{args.config}", file=sys.stderr)
        return 2

    torch.manual_seed(args.seed)
    device = torch.device("cuda")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    model = TwinModel(config, device=device, dtype=torch.float32, attention_impl=args.attention)
    model.initialize()
    model.train()
    optimizer = build_optimizer(model, args)
    step_model = torch.compile(model) if args.compile else model
    autocast = args.dtype == "bf16"

    def precision_context():
        if autocast:
            return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    pool = [torch.randint(0, config.vocab_size, (args.batch, args.seq + 1), device=device)
            for _ in range(4)]
    batches = [(b[:, :-1].contiguous(), b[:, 1:].contiguous()) for b in pool]

    def train_step(i):
        tokens, targets = batches[i % len(batches)]
        with precision_context():
            _, loss = step_model(tokens, targets)
        loss.backward()
        if args.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    compile_start = time.perf_counter()
    for i in range(args.warmup):
        train_step(i)
    torch.cuda.synchronize()
    warmup_s = time.perf_counter() - compile_start

    torch.cuda.reset_peak_memory_stats()
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(args.steps)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(args.steps)]
    host_start = time.perf_counter()
    loss = None
    for i in range(args.steps):
        starts[i].record()
        loss = train_step(args.warmup + i)
        ends[i].record()
    torch.cuda.synchronize()
    host_mean_ms = (time.perf_counter() - host_start) * 1e3 / args.steps
    step_ms = [s.elapsed_time(e) for s, e in zip(starts, ends)]
    median_ms = statistics.median(step_ms)

    tokens_per_step = args.batch * args.seq
    tokens_per_s = tokens_per_step / (median_ms / 1e3)
    flops_per_token = training_flops_per_token(config, args.seq)
    device_name = torch.cuda.get_device_name(device)
    peak_tflops = args.peak_tflops if args.peak_tflops is not None else default_peak_tflops(device_name)
    result = {
        "bench": "twin_train",
        "device": device_name,
        "torch": torch.__version__,
        "config": args.config,
        "batch": args.batch,
        "seq": args.seq,
        "steps": args.steps,
        "warmup": args.warmup,
        "warmup_s": round(warmup_s, 3),
        "compile": args.compile,
        "precision": "bf16 autocast, fp32 master weights" if autocast else "fp32",
        "attention": model.attention_impl,
        "optimizer": "AdamW(fused=True)",
        "grad_clip": args.grad_clip,
        "median_step_ms": round(median_ms, 4),
        "min_step_ms": round(min(step_ms), 4),
        "max_step_ms": round(max(step_ms), 4),
        "host_mean_step_ms": round(host_mean_ms, 4),
        "tokens_per_s": round(tokens_per_s, 1),
        "params": sum(p.numel() for p in model.parameters()),
        "flop_params": count_flop_parameters(config),
        "flops_per_token": flops_per_token,
        "peak_tflops": peak_tflops,
        "mfu": float(f"{mfu(tokens_per_s, flops_per_token, peak_tflops * 1e12):.4g}") if peak_tflops else None,
        "peak_memory_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 3),
        "final_loss": float(loss.item()),
    }
    line = json.dumps(result)
    print(line)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            f.write(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
