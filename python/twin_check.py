#!/usr/bin/env python3
"""twin_check.py — checks a C++ forward/backward dump against the float64 PyTorch twin.

Usage: python3 python/twin_check.py DIR [--rtol-loss X] [--rtol-grad Y] [--rtol-grad-global G]
                                        [--grad-floor Z]

DIR is written by tests/twin_test.cpp:
  config.json          the model config (src/model/config.h fields)
  model.safetensors    the parameters (F32; for CUDA runs the F32 master weights)
  batch.safetensors    tokens I32 [B, T], targets I32 [B, T] (-1 = ignored)
  grads.safetensors    F32 gradient of the mean loss, per parameter name
  result.json          {"loss": float, "backend": "cpu"|"cuda", "precision": "f32"|"bf16"}

The twin recomputes the loss and every gradient in float64 on the CPU (the exact answer, up to
float64 rounding) and prints, per parameter, ||g_dump - g_twin|| / ||g_twin|| and the relative
loss error |loss_dump - loss_twin| / |loss_twin|. Exit status: 0 when everything is
within tolerance, 1 when something is not, 2 on bad input (the message names the file).
"""

import argparse
import json
import math
import os
import sys

sys.dont_write_bytecode = True  # leave no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

# Default tolerances by the precision the dump was computed in: the loss, each parameter's
# gradient, and all gradients together ("global": ||all g_dump - all g_twin|| / ||all g_twin||).
#  f32: every C++ kernel accumulates in float32 or double; rounding of float32 storage between
#       operations (~6e-8 relative each) stays near 1e-6 through a tiny model (measured: loss
#       <= 2e-7, gradients <= 1.5e-5 on the ten tiny variants), so 1e-5 (loss) and 1e-4
#       (gradients) leave a margin while any wiring error gives O(1e-2..1).
#  bf16: activations, activation gradients and the working weights are rounded to bfloat16
#       (8 significant bits: up to 2^-9 ~ 2e-3 relative per rounding; weight gradients
#       accumulate in F32). A gradient passes ~10 roundings per layer, partly cancelling, partly
#       compounding through the norms' 1/rms factors, and the tiny models' large weights (std 0.5)
#       amplify it: errors of ~1e-2 are expected, so loss 2e-2 and gradients 5e-2 (the tolerances
#       of tests/cuda_model_test.cpp against the CPU), while a wrong kernel (missing term, wrong
#       index or mask) gives O(1) errors. Caveat, measured on the ten tiny variants: PyTorch's own
#       CPU bf16 autocast of the twin shows per-parameter errors up to 0.2 (median 0.02-0.1) and
#       all-gradient errors up to 0.11 — if a correct bf16 dump fails here, loosen with
#       --rtol-grad / --rtol-grad-global rather than suspecting the oracle.
DEFAULT_TOLERANCES = {
    "f32": {"loss": 1e-5, "grad": 1e-4, "global": 1e-4},
    "bf16": {"loss": 2e-2, "grad": 5e-2, "global": 5e-2},
}

# Gradients that are structurally zero (e.g. cross-attention q/k under cross_window = 1: a
# softmax over one key is constant) have ||g_twin|| ~ 0; their error is measured against this
# fraction of the largest per-parameter gradient norm instead, i.e. in absolute terms. What an
# engine computes for them is rounding noise: P = exp(s - lse) is 1 only to an ulp and dP - D
# cancels terms of the size of the other gradients, so in f32 the noise is a few 1e-7 of the
# largest gradient, and its exact size follows the order of the GPU's atomic additions. With
# 1e-3 the f32 bound (1e-4 x 1e-3 = 1e-7) sat at that noise and failed a correct CUDA run
# (H100, 2026-11-22: 1.075e-4 against 1e-4); 1e-2 bounds it at 1e-6 of the largest gradient,
# ~8 f32 epsilons, while a missing or wrong term still shows as 1e-3 .. 1.
DEFAULT_GRAD_FLOOR = 1e-2


def summarize(problems, shown=5):
    """The first `shown` problems joined, and how many more there are."""
    text = "; ".join(problems[:shown])
    return text + (f"; ... and {len(problems) - shown} more" if len(problems) > shown else "")


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("dir", help="dump folder written by tests/twin_test.cpp")
    parser.add_argument("--rtol-loss", type=float, default=None,
                        help="relative loss tolerance (default: 1e-5 for f32, 2e-2 for bf16)")
    parser.add_argument("--rtol-grad", type=float, default=None,
                        help="relative tolerance of each parameter's gradient (default: 1e-4 "
                             "for f32, 5e-2 for bf16)")
    parser.add_argument("--rtol-grad-global", type=float, default=None,
                        help="relative tolerance of all gradients together (default: 1e-4 for "
                             "f32, 5e-2 for bf16)")
    parser.add_argument("--grad-floor", type=float, default=DEFAULT_GRAD_FLOOR,
                        help="norm floor, as a fraction of the largest gradient norm "
                             f"(default {DEFAULT_GRAD_FLOOR})")
    parser.add_argument("--attention", choices=("auto", "math", "sdpa"), default="auto",
                        help="twin attention implementation (default: sdpa when available)")
    return parser.parse_args(argv)


def result_problem(result):
    """What is wrong with result.json's fields (None if nothing): loss, backend, precision."""
    loss = result.get("loss")
    if isinstance(loss, bool) or not isinstance(loss, (int, float)) or not math.isfinite(loss):
        return f"'loss' must be a finite number, got {json.dumps(loss)}"
    if result.get("backend") not in ("cpu", "cuda"):
        return f"'backend' must be \"cpu\" or \"cuda\", got {json.dumps(result.get('backend'))}"
    if result.get("precision") not in DEFAULT_TOLERANCES:
        return (f"'precision' must be one of {', '.join(DEFAULT_TOLERANCES)}, got "
                f"{json.dumps(result.get('precision'))}")
    return None


class Dump:
    """A dump folder's contents, with the float64 twin holding its weights."""

    def __init__(self, result, config, weights, model, tokens, targets, grads):
        self.result, self.config, self.weights = result, config, weights
        self.model, self.tokens, self.targets, self.grads = model, tokens, targets, grads


def load_dump(directory, attention_impl):
    """Reads and validates the dump folder; BadInput names the offending file."""
    import torch
    from stagformer_twin.dump_folder import BadInput, open_dump_folder

    folder = open_dump_folder(directory, ("config.json", "model.safetensors", "batch.safetensors",
                                          "grads.safetensors", "result.json"),
                              result_problem, attention_impl)
    path, read_tensors = folder.path, folder.read_tensors
    result, config, weights, model = folder.result, folder.config, folder.weights, folder.model

    batch = read_tensors("batch.safetensors")
    for name in ("tokens", "targets"):
        if name not in batch:
            raise BadInput(f"{path('batch.safetensors')}: missing tensor '{name}'")
        t = batch[name]
        if t.dtype != torch.int32 or t.dim() != 2:
            raise BadInput(f"{path('batch.safetensors')}: '{name}' must be I32 [B, T], got "
                           f"{t.dtype} {list(t.shape)}")
    tokens, targets = batch["tokens"], batch["targets"]
    if tokens.shape != targets.shape:
        raise BadInput(f"{path('batch.safetensors')}: tokens {list(tokens.shape)} and targets "
                       f"{list(targets.shape)} differ in shape")
    if tokens.numel() == 0 or tokens.min() < 0 or tokens.max() >= config.vocab_size or \
            targets.min() < -1 or targets.max() >= config.vocab_size:
        raise BadInput(f"{path('batch.safetensors')}: token or target ids outside the vocabulary "
                       f"[0, {config.vocab_size}) (targets may be -1)")
    if tokens.shape[1] > config.max_seq_len:
        raise BadInput(f"{path('batch.safetensors')}: {tokens.shape[1]} positions exceed "
                       f"max_seq_len {config.max_seq_len}")

    grads = read_tensors("grads.safetensors")
    params = dict(model.named_parameters())
    problems = [f"missing gradient '{n}'" for n in params if n not in grads]
    problems += [f"'{n}' is not a parameter of this model" for n in grads if n not in params]
    problems += [f"'{n}' has shape {list(g.shape)}, expected {list(params[n].shape)}"
                 for n, g in grads.items() if n in params and tuple(g.shape) != tuple(params[n].shape)]
    if problems:
        raise BadInput(f"{path('grads.safetensors')}: {summarize(problems)}")
    grads = {n: g.to(torch.float64) for n, g in grads.items()}
    return Dump(result, config, weights, model, tokens, targets, grads)


def relative_error(value, reference, floor):
    import torch
    return float(torch.linalg.vector_norm(value - reference)) / max(
        float(torch.linalg.vector_norm(reference)), floor, 1e-300)


def main(argv):
    args = parse_args(argv)
    try:
        import torch
    except ImportError:
        print("twin_check: PyTorch is not installed (python3 -c 'import torch' fails)",
              file=sys.stderr)
        return 2
    from stagformer_twin.dump_folder import BadInput
    try:
        dump = load_dump(args.dir, args.attention)
    except BadInput as e:
        print(f"twin_check: bad input: {e}", file=sys.stderr)
        return 2

    from stagformer_twin import loss_and_gradients
    precision = dump.result["precision"]
    defaults = DEFAULT_TOLERANCES[precision]
    rtol_loss = args.rtol_loss if args.rtol_loss is not None else defaults["loss"]
    rtol_grad = args.rtol_grad if args.rtol_grad is not None else defaults["grad"]
    rtol_global = args.rtol_grad_global if args.rtol_grad_global is not None else defaults["global"]

    loss, grads = loss_and_gradients(dump.model, dump.tokens, dump.targets)
    norms = {n: float(torch.linalg.vector_norm(g)) for n, g in grads.items()}
    floor = args.grad_floor * max(norms.values(), default=0.0)

    print(f"twin_check {args.dir}: backend {dump.result['backend']}, precision {precision}, "
          f"twin float64 ({dump.model.attention_impl} attention), torch {torch.__version__}")
    name_width = max((len(n) for n in grads), default=10)
    print(f"{'parameter':<{name_width}}  {'|g_twin|':>10}  {'rel err':>10}")
    failures = []
    for name, g in grads.items():
        error = relative_error(dump.grads[name], g, floor)
        ok = math.isfinite(error) and error <= rtol_grad
        if not ok:
            failures.append(name)
        print(f"{name:<{name_width}}  {norms[name]:10.3e}  {error:10.3e}"
              + (" (vs floor)" if norms[name] < floor else "") + ("" if ok else "  FAIL"))

    everything = torch.cat([g.reshape(-1) for g in grads.values()])
    everything_dump = torch.cat([dump.grads[n].reshape(-1) for n in grads])
    global_error = relative_error(everything_dump, everything, 1e-300)
    global_ok = math.isfinite(global_error) and global_error <= rtol_global
    print(f"all gradients: rel err {global_error:.3e}" + ("" if global_ok else "  FAIL"))
    if not global_ok:
        failures.append("all gradients")

    ref_loss = float(dump.result["loss"])
    loss_error = abs(ref_loss - loss) / max(abs(loss), 1e-300)
    loss_ok = math.isfinite(loss_error) and loss_error <= rtol_loss
    print(f"loss: twin {loss:.10g}, dump {ref_loss:.10g}, rel err {loss_error:.3e}"
          + ("" if loss_ok else "  FAIL"))
    if not loss_ok:
        failures.append("loss")

    rule = f"loss {rtol_loss:g}, each gradient {rtol_grad:g}, all gradients {rtol_global:g}"
    if failures:
        print(f"twin_check: FAILED ({len(failures)} over tolerance; {rule}): {', '.join(failures)}")
        return 1
    print(f"twin_check: OK ({len(grads)} gradients and the loss within tolerance; {rule})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
