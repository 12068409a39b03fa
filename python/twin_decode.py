#!/usr/bin/env python3
"""twin_decode.py — the twin's incremental decoder: logits oracle, self-test and speed reference.

  python3 python/twin_decode.py check DIR [--rtol X] [--attention math|sdpa|auto]
  python3 python/twin_decode.py selftest [--quick]
  python3 python/twin_decode.py bench --config CFG [...]   (runs python/twin_decode_bench.py)

check: DIR is a decode dump of the C++ decoder (format in python/README.md, "Checking a decode
dump"): config.json, model.safetensors, decode.safetensors (prompt I32 [B, P], optional
prompt_lengths I32 [B], tokens I32 [B, N], logits F32 [B, P+N, V]) and result.json
({"mode": "staggered"|"sequential"|"recurrent", "backend": str, "precision": "f32"|"bf16"}).
The twin decoder (stagformer_twin/decode.py) reruns prompt and tokens in float64 on the CPU and
the logits are compared row by row: max |dump - twin| per row, and that over the logits' scale
(max |twin logit| over all compared rows). Exit 0 = within tolerance, 1 = not, 2 = bad input.

selftest: random tiny models of every variant in float64: staggered incremental decoding (padded
prompts of different lengths, multi-token chunks, single steps) against the twin's full forward
(max abs < 1e-10), recurrent decoding against a slow from-scratch implementation of its
definition, mutation canaries that must fail, and a round trip of `check` through a dump.

bench: the speed reference (CUDA timings of the twin decoder, eager and torch.compile); it lives
in python/twin_decode_bench.py, which `bench` runs with the same options (see its header).
"""

import argparse
import dataclasses
import json
import math
import os
import sys
import tempfile

sys.dont_write_bytecode = True  # leave no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

# Tolerances of `check`, relative to the logits' scale (max |twin logit| over the compared rows).
#  f32: the C++ decoder keeps F32 activations and caches and accumulates in F32 or double; its
#       rounding (~6e-8 per operation) reaches ~1e-6 of the scale through a tiny model
#       (tests/decoder_test.cpp holds prefill + steps to 2e-5 relative against its own forward),
#       so 1e-4 leaves a margin while a wrong mask, position or hand-off gives 1e-2 .. 1.
#  bf16: weights, activations and caches are rounded to bfloat16 (2^-9 ~ 2e-3 relative per
#       rounding, ~10 roundings per layer); the errors compound to ~1e-2 of the scale in the tiny
#       models, so 3e-2 (the C++ CUDA decoder tests' BF16 tolerance), while wiring errors are O(1).
DEFAULT_RTOL = {"f32": 1e-4, "bf16": 3e-2}
MODES = ("staggered", "sequential", "recurrent")


def need_torch(tool):
    try:
        import torch  # noqa: F401
    except ImportError:
        print(f"twin_decode {tool}: PyTorch is not installed (python3 -c 'import torch' fails; "
              f"bash scripts/setup.sh --twin installs Debian's for /usr/bin/python3)",
              file=sys.stderr)
        return False
    return True


# ==== check =====================================================================================

def result_problem(result):
    """What is wrong with result.json's fields (None if nothing): mode, backend, precision."""
    if result.get("mode") not in MODES:
        return f"'mode' must be one of {', '.join(MODES)}, got {json.dumps(result.get('mode'))}"
    if not isinstance(result.get("backend"), str) or not result["backend"]:
        return f"'backend' must be a non-empty string, got {json.dumps(result.get('backend'))}"
    if result.get("precision") not in DEFAULT_RTOL:
        return (f"'precision' must be one of {', '.join(DEFAULT_RTOL)}, got "
                f"{json.dumps(result.get('precision'))}")
    return None


def load_decode_dump(directory, attention_impl):
    """(result, config, model float64, prompts [list of 1-D], prompt width P, tokens [B, N],
    logits float64 [B, P+N, V]); BadInput names the offending file."""
    import torch
    from stagformer_twin.decode import recurrent_unsupported
    from stagformer_twin.dump_folder import BadInput, open_dump_folder

    folder = open_dump_folder(directory, ("config.json", "model.safetensors", "decode.safetensors",
                                          "result.json"), result_problem, attention_impl)
    path, read_tensors = folder.path, folder.read_tensors
    result, config, model = folder.result, folder.config, folder.model
    if result["mode"] == "recurrent":
        why = recurrent_unsupported(config)
        if why:
            raise BadInput(f"{path('result.json')}: mode recurrent, but {why}")

    where = path("decode.safetensors")
    d = read_tensors("decode.safetensors")
    known = ("prompt", "prompt_lengths", "tokens", "logits")
    unknown = [n for n in d if n not in known]
    if unknown:
        raise BadInput(f"{where}: unknown tensor(s) {', '.join(unknown)} (expected "
                       f"{', '.join(known)})")
    for name in ("prompt", "tokens", "logits"):
        if name not in d:
            raise BadInput(f"{where}: missing tensor '{name}'")
    prompt, tokens, logits = d["prompt"], d["tokens"], d["logits"]
    for name, t in (("prompt", prompt), ("tokens", tokens)):
        if t.dtype != torch.int32 or t.dim() != 2:
            raise BadInput(f"{where}: '{name}' must be I32 [B, {'P' if name == 'prompt' else 'N'}], "
                           f"got {t.dtype} {list(t.shape)}")
    B, P = prompt.shape
    N = tokens.shape[1]
    if B < 1 or P < 1:
        raise BadInput(f"{where}: 'prompt' must have B >= 1 rows of P >= 1 tokens, got "
                       f"{list(prompt.shape)}")
    if tokens.shape[0] != B:
        raise BadInput(f"{where}: 'tokens' has {tokens.shape[0]} rows, 'prompt' {B}")
    if not logits.is_floating_point() or tuple(logits.shape) != (B, P + N, config.vocab_size):
        raise BadInput(f"{where}: 'logits' must be F32 [B, P+N, V] = [{B}, {P + N}, "
                       f"{config.vocab_size}], got {logits.dtype} {list(logits.shape)}")
    if "prompt_lengths" in d:
        lengths = d["prompt_lengths"]
        if lengths.dtype != torch.int32 or tuple(lengths.shape) != (B,):
            raise BadInput(f"{where}: 'prompt_lengths' must be I32 [B] = [{B}], got "
                           f"{lengths.dtype} {list(lengths.shape)}")
        lengths = [int(x) for x in lengths]
        if min(lengths) < 1 or max(lengths) > P:
            raise BadInput(f"{where}: 'prompt_lengths' must lie in 1..P = 1..{P}, got {lengths}")
    else:
        lengths = [P] * B
    prompts = [prompt[b, :lengths[b]].long() for b in range(B)]
    for name, ids in [("prompt", p) for p in prompts] + [("tokens", tokens)]:
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= config.vocab_size):
            raise BadInput(f"{where}: '{name}' holds ids outside the vocabulary "
                           f"[0, {config.vocab_size})")
    if max(lengths) + N > config.max_seq_len:
        raise BadInput(f"{where}: a prompt of {max(lengths)} tokens and {N} fed tokens exceed "
                       f"max_seq_len {config.max_seq_len}")
    return result, config, model, prompts, P, tokens.long(), logits.double()


def twin_rows(model, prompts, tokens, mode):
    """The float64 twin decoder's logits per sequence [len_b + N, V]."""
    from stagformer_twin.decode import TwinDecoder, teacher_forced_decode
    decoder = TwinDecoder(model, len(prompts), max_len=max(p.numel() for p in prompts) + tokens.shape[1])
    return teacher_forced_decode(decoder, prompts, tokens,
                                 mode="recurrent" if mode == "recurrent" else "staggered")


def compare_rows(dump_logits, prompts, P, n_fed, twin):
    """Row-by-row comparison in the dump's layout. Returns (rows, scale, problems): rows are
    dicts {row, label, seqs, skipped, max_abs, nonfinite}, one per dump row that has compared or
    skipped sequences."""
    import torch
    B = len(prompts)
    lengths = [p.numel() for p in prompts]
    rows, problems = [], []
    scale = 0.0
    pairs = {}  # dump row -> [(b, dump vector, twin vector)]
    skipped = {}
    for b in range(B):
        L = lengths[b]
        for t in range(L + n_fed):
            row = t if t < L else P + (t - L)
            vec = dump_logits[b, row]
            if t < L - 1 and bool(torch.isnan(vec).all()):
                skipped[row] = skipped.get(row, 0) + 1  # a prompt row the engine did not produce
                continue
            pairs.setdefault(row, []).append((b, vec, twin[b][t]))
            scale = max(scale, float(twin[b][t].abs().max()))
    scale = max(scale, 1e-30)
    for row in sorted(set(pairs) | set(skipped)):
        entries = pairs.get(row, [])
        max_abs, nonfinite = 0.0, 0
        for b, vec, ref in entries:
            if not bool(torch.isfinite(vec).all()):
                nonfinite += 1
                problems.append(f"row {row} of sequence {b} holds NaN or Inf")
                continue
            max_abs = max(max_abs, float((vec - ref).abs().max()))
        label = f"prompt {row}" if row < P else f"step {row - P + 1}"
        rows.append({"row": row, "label": label, "seqs": len(entries),
                     "skipped": skipped.get(row, 0), "max_abs": max_abs, "nonfinite": nonfinite})
    return rows, scale, problems


def cmd_check(args):
    if not need_torch("check"):
        return 2
    import torch
    from stagformer_twin.dump_folder import BadInput
    try:
        result, config, model, prompts, P, tokens, logits = load_decode_dump(args.dir, args.attention)
    except BadInput as e:
        print(f"twin_decode check: bad input: {e}", file=sys.stderr)
        return 2
    precision, mode = result["precision"], result["mode"]
    rtol = args.rtol if args.rtol is not None else DEFAULT_RTOL[precision]
    with torch.no_grad():
        twin = twin_rows(model, prompts, tokens, mode)
    rows, scale, problems = compare_rows(logits, prompts, P, tokens.shape[1], twin)
    lengths = [p.numel() for p in prompts]
    print(f"twin_decode check {args.dir}: mode {mode}, backend {result['backend']}, precision "
          f"{precision}; {len(prompts)} sequences, prompts of {min(lengths)}..{max(lengths)} "
          f"tokens, {tokens.shape[1]} fed; twin float64 ({model.attention_impl} attention), "
          f"torch {torch.__version__}")
    print(f"logits' scale (max |twin logit|): {scale:.6g}")
    print(f"{'row':>5}  {'kind':<11}  {'seqs':>4}  {'max abs err':>11}  {'rel err':>9}")
    worst = 0.0
    failures = 0
    for r in rows:
        rel = r["max_abs"] / scale
        bad = r["nonfinite"] > 0 or not math.isfinite(rel) or rel > rtol
        failures += bad
        worst = max(worst, rel)
        note = f"  ({r['skipped']} not produced)" if r["skipped"] else ""
        if r["seqs"] == 0:
            print(f"{r['row']:>5}  {r['label']:<11}  {0:>4}  {'-':>11}  {'-':>9}{note}")
            continue
        print(f"{r['row']:>5}  {r['label']:<11}  {r['seqs']:>4}  {r['max_abs']:11.3e}  {rel:9.2e}"
              + note + ("  FAIL" if bad else ""))
    for p in problems[:5]:
        print(f"  {p}")
    if not any(r["seqs"] for r in rows):
        print("twin_decode check: bad input: no row to compare", file=sys.stderr)
        return 2
    rule = f"max |err| / scale <= {rtol:g} ({precision})"
    if failures:
        print(f"twin_decode check: FAILED ({failures} of {len(rows)} rows over tolerance; {rule})")
        return 1
    print(f"twin_decode check: OK (worst {worst:.2e}; {rule})")
    return 0


# ==== selftest ==================================================================================

SELFTEST_BASE = dict(vocab_size=37, d_model=16, n_heads=4, ffn_hidden=24, max_seq_len=24,
                     layers_per_stack=2, n_stacks=2, seed=7)
SELFTEST_VARIANTS = [
    ("baseline p=1", dict(n_stacks=1)),
    ("baseline p=1 GQA tied", dict(n_stacks=1, n_kv_heads=2, tie_embeddings=True)),
    ("p=2 separate last", dict()),
    ("p=2 shared last", dict(weights="shared")),
    ("p=3 separate linear GQA tied", dict(n_stacks=3, combine="linear", n_kv_heads=2,
                                          tie_embeddings=True)),
    ("p=3 shared linear", dict(n_stacks=3, weights="shared", combine="linear")),
    ("p=3 shared last w=2 GQA", dict(n_stacks=3, weights="shared", cross_window=2, n_kv_heads=1)),
    ("p=2 separate w=1", dict(cross_window=1)),
    ("p=2 shared w=3 no cross_rope", dict(weights="shared", cross_window=3, cross_rope=False)),
    ("p=2 separate h=1 w=2", dict(layers_per_stack=1, cross_window=2)),
    ("p=2 shared h=3 tied", dict(weights="shared", layers_per_stack=3, tie_embeddings=True)),
]


def tiny_model(overrides, attention_impl, seed):
    import torch
    from stagformer_twin import TwinConfig, TwinModel
    config = TwinConfig(**{**SELFTEST_BASE, **overrides})
    config.validate()
    model = TwinModel(config, dtype=torch.float64, attention_impl=attention_impl)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # large random weights (std 0.3), norms and alpha away from 1/(0..1)
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g, dtype=p.dtype))
            elif name == "combine.alpha":
                p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype))
            else:
                p.copy_(0.3 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return model


def full_forward_rows(model, prompts, tokens):
    """Teacher-forced logits [len_b + N, V] of each sequence prompt_b ++ tokens_b."""
    import torch
    rows = []
    with torch.no_grad():
        for b, p in enumerate(prompts):
            seq = torch.cat([p.long(), tokens[b].long()])
            rows.append(model(seq[None])[0][0])
    return rows


def max_diff(a_rows, b_rows, select=None):
    worst = 0.0
    for a, b in zip(a_rows, b_rows):
        if select is not None:
            a, b = a[select(a)], b[select(b)]
        if a.numel():
            worst = max(worst, float((a - b).abs().max()))
    return worst


def selftest_cases(quick):
    """(prompt lengths, fed tokens) per case: lengths 1 and longer than every window, mixed."""
    cases = [([1, 4, 5, 7], 6), ([3], 5)]
    return cases[:1] if quick else cases


def cmd_selftest(args):
    if not need_torch("selftest"):
        return 2
    import torch
    from stagformer_twin import sdpa_available
    from stagformer_twin.decode import (TwinDecoder, recurrent_reference_logits,
                                        recurrent_unsupported, teacher_forced_decode)
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    impls = ["math"] + (["sdpa"] if sdpa_available() and not args.quick else [])
    print(f"twin_decode selftest: torch {torch.__version__}, float64 on the CPU, attention "
          f"{' and '.join(impls)}")
    failures = []
    tol = 1e-10

    def report(name, value, ok, rule):
        print(f"  {name:<58} {value:10.2e}  {'ok' if ok else 'FAIL'} ({rule})")
        if not ok:
            failures.append(name)

    seed = 100
    for impl in impls:
        for vname, overrides in SELFTEST_VARIANTS:
            for lengths, n_fed in selftest_cases(args.quick):
                seed += 1
                model = tiny_model(overrides, impl, seed)
                c = model.config
                g = torch.Generator().manual_seed(seed)
                prompts = [torch.randint(0, c.vocab_size, (L,), generator=g) for L in lengths]
                tokens = torch.randint(0, c.vocab_size, (len(lengths), n_fed), generator=g)
                ref = full_forward_rows(model, prompts, tokens)
                tag = f"{vname} [{impl}] L={lengths}"
                # (a) staggered: one token per step, and chunks of 3 then steps.
                for chunk in (1, 3):
                    dec = TwinDecoder(model, len(prompts))
                    got = teacher_forced_decode(dec, prompts, tokens, "staggered", chunk=chunk)
                    err = max_diff(got, ref)
                    report(f"{tag} staggered chunk {chunk}", err, err < tol, f"< {tol:g}")
                # Canary: a window one too wide must be seen (windowed models only).
                if c.n_stacks >= 2 and c.cross_window > 0:
                    dec = TwinDecoder(model, len(prompts))
                    dec.cross_window = c.cross_window + 1
                    err = max_diff(teacher_forced_decode(dec, prompts, tokens, "staggered"), ref)
                    report(f"{tag} canary: window w+1 detected", err, err > 1e-6, "> 1e-6")
                # (b) recurrent against its slow definition.
                if not recurrent_unsupported(c):
                    dec = TwinDecoder(model, len(prompts))
                    got = teacher_forced_decode(dec, prompts, tokens, "recurrent")
                    slow = [recurrent_reference_logits(model, prompts[b], tokens[b])
                            for b in range(len(prompts))]
                    err = max_diff(got, slow)
                    report(f"{tag} recurrent == slow definition", err, err < tol, f"< {tol:g}")
                    # The prompt rows and the first step are the two-pass model's; later differ.
                    first = max(max_diff([got[b][:lengths[b] + 1]], [ref[b][:lengths[b] + 1]])
                                for b in range(len(prompts)))
                    report(f"{tag} recurrent prompt + step 1 == forward", first, first < tol,
                           f"< {tol:g}")
                    later = max(max_diff([got[b][lengths[b] + 1:]], [ref[b][lengths[b] + 1:]])
                                for b in range(len(prompts)))
                    report(f"{tag} canary: recurrent steps >= 2 != forward", later, later > 1e-6,
                           "> 1e-6")

    # Bad calls are refused.
    model = tiny_model(dict(), "math", 1)
    try:
        teacher_forced_decode(TwinDecoder(model, 1), [torch.tensor([1, 2])], torch.tensor([[3]]),
                              "recurrent")
        report("recurrent on separate weights is refused", 0.0, False, "ValueError expected")
    except ValueError:
        report("recurrent on separate weights is refused", 0.0, True, "ValueError")

    # `check` round trip through dumps.
    failures += selftest_check_roundtrip()
    if args.cuda:
        failures += selftest_cuda()
    if failures:
        print(f"twin_decode selftest: FAILED ({len(failures)}): {'; '.join(failures[:8])}")
        return 1
    print("twin_decode selftest: OK")
    return 0


def selftest_cuda():
    """On CUDA (SDPA attention): the decoder in f32 and bf16 against the float64 CPU oracle
    (full forward, or the slow recurrent definition), relative to the logits' scale, eager and
    with the one-token step under torch.compile(mode="reduce-overhead", fullgraph=True)."""
    import copy
    import torch
    from stagformer_twin import sdpa_available
    from stagformer_twin.decode import (TwinDecoder, recurrent_reference_logits,
                                        recurrent_unsupported, teacher_forced_decode)
    failures = []
    if not torch.cuda.is_available():
        print("  cuda: no CUDA device: FAIL")
        return ["cuda: no device"]
    device = torch.device("cuda")
    impl = "sdpa" if sdpa_available() else "math"
    can_compile = hasattr(torch, "compile")
    print(f"  cuda: {torch.cuda.get_device_name(device)}, {impl} attention, torch.compile "
          f"{'yes' if can_compile else 'no'}")
    size = dict(vocab_size=97, d_model=64, n_heads=4, ffn_hidden=96, max_seq_len=48)
    variants = [("baseline p=1 GQA", dict(n_stacks=1, n_kv_heads=2)),
                ("p=2 separate last", dict()),
                ("p=3 separate linear GQA tied w=2", dict(n_stacks=3, combine="linear",
                                                          n_kv_heads=2, tie_embeddings=True,
                                                          cross_window=2)),
                ("p=3 shared last w=3 GQA", dict(n_stacks=3, weights="shared", cross_window=3,
                                                 n_kv_heads=1))]
    for seed, (vname, overrides) in enumerate(variants):
        model64 = tiny_model({**size, **overrides}, "math", 1000 + seed)
        with torch.no_grad():  # std 0.3 weights blow a d=64 model up: std 0.1 instead
            for name, prm in model64.named_parameters():
                if not name.endswith("norm.weight") and name != "combine.alpha":
                    prm.mul_(1.0 / 3.0)
        c = model64.config
        g = torch.Generator().manual_seed(seed)
        lengths = [1, 9, 17]
        prompts = [torch.randint(0, c.vocab_size, (L,), generator=g) for L in lengths]
        tokens = torch.randint(0, c.vocab_size, (len(lengths), 12), generator=g)
        modes = ["staggered"] + ([] if recurrent_unsupported(c) else ["recurrent"])
        for mode in modes:
            if mode == "staggered":
                ref = full_forward_rows(model64, prompts, tokens)
            else:
                ref = [recurrent_reference_logits(model64, prompts[b], tokens[b])
                       for b in range(len(prompts))]
            scale = max(float(r.abs().max()) for r in ref)
            for dtype, tol in ((torch.float32, 1e-4), (torch.bfloat16, 3e-2)):
                model = copy.deepcopy(model64).to(device=device, dtype=dtype)
                backends = ["eager"] + (["compiled"] if can_compile else [])
                for backend in backends:
                    dec = TwinDecoder(model, len(prompts), attention_impl=impl)
                    step = None
                    if backend == "compiled":
                        step = torch.compile(lambda t, p, r, dec=dec: dec(t, p, recurrent=r),
                                             mode="reduce-overhead", fullgraph=True)
                    name = f"cuda {vname} {mode} {str(dtype)[6:]} {backend}"
                    try:
                        with torch.no_grad():
                            got = teacher_forced_decode(dec, prompts, tokens, mode, step=step)
                    except Exception as e:  # e.g. a graph break under fullgraph=True
                        print(f"  {name:<58} FAIL: {type(e).__name__}: {str(e)[:1500]}")
                        failures.append(name)
                        continue
                    err = max_diff([r.double().cpu() for r in got], ref) / scale
                    ok = math.isfinite(err) and err <= tol
                    print(f"  {name:<58} {err:10.2e}  {'ok' if ok else 'FAIL'} (rel <= {tol:g})")
                    if not ok:
                        failures.append(name)
                if can_compile:
                    torch._dynamo.reset()
    return failures


def write_dump(directory, model, prompts, tokens, logits_rows, mode, precision="f32",
               drop_prompt_rows=True, with_lengths=True):
    """A dump in the C++ format from per-sequence logits rows [len_b + N, V]."""
    import torch
    from stagformer_twin import save_safetensors
    c = model.config
    B, N = len(prompts), tokens.shape[1]
    lengths = [p.numel() for p in prompts]
    P = max(lengths)
    prompt = torch.zeros(B, P, dtype=torch.int32)
    logits = torch.full((B, P + N, c.vocab_size), float("nan"), dtype=torch.float32)
    for b in range(B):
        prompt[b, :lengths[b]] = prompts[b].to(torch.int32)
        first = lengths[b] - 1 if drop_prompt_rows else 0  # like a prefill that gives the last row
        logits[b, first:lengths[b]] = logits_rows[b][first:lengths[b]].float()
        logits[b, P:] = logits_rows[b][lengths[b]:].float()
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(dataclasses.asdict(c), f)
    save_safetensors(os.path.join(directory, "model.safetensors"),
                     {n: p.float() for n, p in model.named_parameters()})
    tensors = {"prompt": prompt, "tokens": tokens.to(torch.int32), "logits": logits}
    if with_lengths:
        tensors["prompt_lengths"] = torch.tensor(lengths, dtype=torch.int32)
    save_safetensors(os.path.join(directory, "decode.safetensors"), tensors)
    with open(os.path.join(directory, "result.json"), "w") as f:
        json.dump({"mode": mode, "backend": "selftest", "precision": precision}, f)


def selftest_check_roundtrip():
    """check on dumps made from the twin itself: exact ones pass, perturbed ones fail with 1,
    broken ones with 2."""
    import contextlib
    import io
    import torch
    from stagformer_twin import load_safetensors, save_safetensors
    from stagformer_twin.decode import TwinDecoder, teacher_forced_decode
    failures = []

    def run_check(directory, expect, what):
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            code = cmd_check(argparse.Namespace(dir=directory, rtol=None, attention="math"))
        ok = code == expect
        print(f"  check round trip: {what:<50} exit {code}  {'ok' if ok else 'FAIL'} "
              f"(expected {expect})")
        if not ok:
            failures.append(f"check round trip: {what}")
            print("    " + out.getvalue().replace("\n", "\n    "))

    for overrides, mode in ((dict(weights="shared", n_stacks=3, cross_window=2), "recurrent"),
                            (dict(combine="linear", n_kv_heads=2), "staggered")):
        model = tiny_model(overrides, "math", 5)
        with torch.no_grad():  # weights exactly representable in the dump's F32
            for p in model.parameters():
                p.copy_(p.float().double())
        g = torch.Generator().manual_seed(3)
        prompts = [torch.randint(0, 37, (L,), generator=g) for L in (2, 5, 1)]
        tokens = torch.randint(0, 37, (3, 4), generator=g)
        rows = teacher_forced_decode(TwinDecoder(model, 3), prompts, tokens, mode)
        with tempfile.TemporaryDirectory(prefix="twin_decode_selftest_") as d:
            write_dump(d, model, prompts, tokens, rows, mode)
            run_check(d, 0, f"{mode}, exact")
            write_dump(d, model, prompts, tokens, rows, mode, drop_prompt_rows=False)
            run_check(d, 0, f"{mode}, every prompt row")
            scale = max(float(r.abs().max()) for r in rows)
            bumped = [r.clone() for r in rows]
            bumped[1][5 + 2, 3] += 1e-3 * scale  # step 3 of sequence 1
            write_dump(d, model, prompts, tokens, bumped, mode)
            run_check(d, 1, f"{mode}, one logit off by 1e-3 of the scale")
            write_dump(d, model, prompts, tokens, bumped, mode, precision="bf16")
            run_check(d, 0, f"{mode}, the same under the bf16 tolerance")
            other = "staggered" if mode == "recurrent" else "recurrent"
            if mode == "recurrent":
                write_dump(d, model, prompts, tokens, rows, other)
                run_check(d, 1, "recurrent logits claimed as staggered")
            nan = [r.clone() for r in rows]
            nan[0][2 + 1, 0] = float("nan")
            write_dump(d, model, prompts, tokens, nan, mode)
            run_check(d, 1, f"{mode}, a NaN in a step row")
            write_dump(d, model, prompts, tokens, rows, mode)
            t = load_safetensors(os.path.join(d, "decode.safetensors"))
            del t["tokens"]
            save_safetensors(os.path.join(d, "decode.safetensors"), t)
            run_check(d, 2, "missing 'tokens'")
            write_dump(d, model, prompts, tokens, rows, mode, with_lengths=False)
            run_check(d, 1, "prompt_lengths dropped (padding read as prompt)")
    return failures


# ==== main ======================================================================================

def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("check", help="compare a C++ decode dump with the float64 twin decoder")
    c.add_argument("dir", help="dump folder (python/README.md: Checking a decode dump)")
    c.add_argument("--rtol", type=float, default=None,
                   help="max |err| / logits' scale (default 1e-4 for f32, 3e-2 for bf16)")
    c.add_argument("--attention", choices=("auto", "math", "sdpa"), default="math",
                   help="twin attention implementation (default: math, the explicit softmax)")
    s = sub.add_parser("selftest", help="decoder == forward, recurrent == its definition, canaries")
    s.add_argument("--quick", action="store_true", help="one prompt set, math attention only")
    s.add_argument("--cuda", action="store_true",
                   help="also f32/bf16 on CUDA, eager and compiled, against the float64 oracle")
    # Listed for --help only: main() hands `bench ...` to twin_decode_bench.py before parsing.
    sub.add_parser("bench", help="CUDA prefill / generation timings, eager and compiled "
                                 "(twin_decode_bench.py)", add_help=False)
    return parser.parse_args(argv)


def main(argv):
    if argv[:1] == ["bench"]:  # the speed reference is its own script, with the same options
        import twin_decode_bench
        return twin_decode_bench.main(argv[1:], prog="twin_decode.py bench")
    args = parse_args(argv)
    return {"check": cmd_check, "selftest": cmd_selftest}[args.command](args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
