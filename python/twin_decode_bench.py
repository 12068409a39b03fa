#!/usr/bin/env python3
"""twin_decode_bench.py — speed reference of the twin's incremental decoder on CUDA.

  python3 python/twin_decode_bench.py --config CFG [--batch 1] [--prompt 512] [--gen 128]
                                      [--reps 3] [--baseline] [--modes staggered,recurrent]
                                      [--no-compile] [--eager-prefill] [--seed 0] [--md]
                                      [--json FILE] [--device cpu]

`python3 python/twin_decode.py bench ...` runs this script with the same options.

CUDA, bf16 random weights (seeded): prefill (pp) and token generation (tg, ms/token after the
prompt) of the twin decoder (stagformer_twin/decode.py), eager and
torch.compile(mode="reduce-overhead", fullgraph=True) (CUDA graphs), median over reps of
CUDA-event times; compile time reported apart. One JSON line per measurement; --md adds a markdown
table. --device cpu is a smoke test of the script (eager, float32, host clock). Details in
python/README.md, "Benchmarking the decoder".
"""

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time

sys.dont_write_bytecode = True  # leave no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

WARMUP_STEPS = 3  # untimed calls of each function first: compilation, then CUDA-graph recording


def cudagraph_skips():
    """How many compiled graphs inductor ran without CUDA graphs so far (None if unknown)."""
    try:
        from torch._dynamo.utils import counters
        return int(counters["inductor"]["cudagraph_skips"])
    except Exception:  # an internal counter: absent in some versions
        return None


def cmd_bench(args):
    from twin_decode import need_torch
    if not need_torch("bench"):
        return 2
    import torch
    from stagformer_twin import ConfigError, TwinModel, load_config
    from stagformer_twin.decode import TwinDecoder, recurrent_unsupported
    on_cpu = args.device == "cpu"  # a smoke test of this script where no GPU is (eager only)
    if not on_cpu and not torch.cuda.is_available():
        print("twin_decode bench: needs CUDA (torch.cuda.is_available() is False)", file=sys.stderr)
        return 2
    try:
        config = load_config(args.config)
    except (OSError, ConfigError) as e:
        print(f"twin_decode bench: {e}", file=sys.stderr)
        return 2
    # The warm-up runs WARMUP_STEPS steps after the prompt (compilation and the CUDA-graph
    # recording need three), so the caches hold at least that many positions past it.
    positions = args.prompt + max(args.gen, WARMUP_STEPS)
    if args.prompt < 1 or args.gen < 1 or positions > config.max_seq_len:
        print(f"twin_decode bench: --prompt {args.prompt} + max(--gen {args.gen}, "
              f"{WARMUP_STEPS} warm-up steps) must be >= 1 each and fit max_seq_len "
              f"{config.max_seq_len}", file=sys.stderr)
        return 2
    can_compile = hasattr(torch, "compile") and not args.no_compile and not on_cpu
    if can_compile:
        import torch._dynamo
        torch._dynamo.config.cache_size_limit = max(64, torch._dynamo.config.cache_size_limit)
    device = torch.device(args.device)
    dtype = torch.float32 if on_cpu else torch.bfloat16
    dev_name = "cpu" if on_cpu else torch.cuda.get_device_name(device)

    def sync():
        if not on_cpu:
            torch.cuda.synchronize()

    class Mark:  # a CUDA event, or the host clock on the CPU
        def __init__(self):
            self.event = None if on_cpu else torch.cuda.Event(enable_timing=True)
            self.t = None

        def record(self):
            if on_cpu:
                self.t = time.perf_counter()
            else:
                self.event.record()

        def elapsed_time(self, end):  # ms, as torch.cuda.Event.elapsed_time
            return (end.t - self.t) * 1e3 if on_cpu else self.event.elapsed_time(end.event)

    wanted_modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    for m in wanted_modes:
        if m not in ("staggered", "recurrent"):
            print(f"twin_decode bench: unknown mode '{m}' (staggered, recurrent)", file=sys.stderr)
            return 2

    variants = [("stagformer", config)]
    if args.baseline:
        base = dataclasses.replace(config, n_stacks=1,
                                   layers_per_stack=config.n_stacks * config.layers_per_stack,
                                   weights="separate", combine="last", cross_window=0)
        if config.n_stacks > 1:
            variants.append(("baseline", base))
    name = os.path.splitext(os.path.basename(args.config))[0]
    records = []
    B, P, G = args.batch, args.prompt, args.gen

    def emit(rec):
        records.append(rec)
        print(json.dumps(rec), flush=True)

    for vname, cfg in variants:
        torch.manual_seed(args.seed)
        model = TwinModel(cfg, device=device, dtype=dtype)
        model.initialize(torch.Generator(device=device).manual_seed(args.seed))  # ~ N(0, 0.02)
        model.eval()
        decoder = TwinDecoder(model, B, max_len=positions)
        gen = torch.Generator(device=device).manual_seed(args.seed + 1)
        prompt = torch.randint(0, cfg.vocab_size, (B, P), device=device, generator=gen)
        prompt_pos = torch.arange(P, device=device)[None].expand(B, P).contiguous()
        last = torch.full((B,), P - 1, dtype=torch.long, device=device)
        modes = [m for m in wanted_modes if m == "staggered" or not recurrent_unsupported(cfg)]
        if cfg.n_stacks == 1:
            modes = ["staggered"]  # p = 1: the ordinary decoder
        backends = ["eager"] + (["compiled"] if can_compile else [])

        def measure(backend):
            def prefill_fn(tok, pos):
                return decoder(tok, pos, last=last)

            def make_step(recurrent):
                def step_fn(tok, pos):
                    return decoder(tok, pos, recurrent=recurrent)[:, -1].argmax(-1, keepdim=True)
                return step_fn

            prefill = prefill_fn
            steps = {m: make_step(m == "recurrent") for m in modes}
            compile_s = {}
            if backend == "compiled":
                if not args.eager_prefill:
                    prefill = torch.compile(prefill_fn, mode="reduce-overhead", fullgraph=True)
                steps = {m: torch.compile(f, mode="reduce-overhead", fullgraph=True)
                         for m, f in steps.items()}
            mark = getattr(getattr(torch, "compiler", None), "cudagraph_mark_step_begin", None)

            def call(fn, *a):
                if mark is not None and backend == "compiled":
                    mark()
                return fn(*a)

            with torch.no_grad():
                # Warm-up (compilation, CUDA-graph recording, cuBLAS heuristics): excluded.
                sync()
                t0 = time.perf_counter()
                for _ in range(WARMUP_STEPS):
                    call(prefill, prompt, prompt_pos).clone()
                sync()
                prefill_warm = time.perf_counter() - t0
                for m in modes:
                    t0 = time.perf_counter()
                    tok = torch.zeros(B, 1, dtype=torch.long, device=device)
                    pos = torch.full((B, 1), P, dtype=torch.long, device=device)
                    for _ in range(WARMUP_STEPS):
                        tok = call(steps[m], tok, pos).clone()
                        pos = pos + 1
                    sync()
                    compile_s[m] = time.perf_counter() - t0
                for m in modes:
                    pp, tg = [], []
                    for _ in range(args.reps):
                        e = [Mark() for _ in range(4)]
                        e[0].record()
                        # (no output of a CUDA graph kept alive across another graph's replay)
                        tok = call(prefill, prompt, prompt_pos)[:, -1].argmax(-1, keepdim=True)
                        e[1].record()
                        pos = torch.full((B, 1), P, dtype=torch.long, device=device)
                        e[2].record()
                        for _ in range(G):
                            tok = call(steps[m], tok, pos).clone()
                            pos = pos + 1
                        e[3].record()
                        sync()
                        pp.append(e[0].elapsed_time(e[1]))
                        tg.append(e[2].elapsed_time(e[3]) / G)
                    pp_ms, tg_ms = statistics.median(pp), statistics.median(tg)
                    emit({
                        "bench": "twin_decode", "config": name, "model": vname,
                        "n_stacks": cfg.n_stacks, "layers_per_stack": cfg.layers_per_stack,
                        "weights": cfg.weights, "mode": m, "backend": backend,
                        "batch": B, "prompt": P, "gen": G, "reps": args.reps,
                        "pp_ms": round(pp_ms, 4), "pp_tok_s": round(B * P / pp_ms * 1e3, 1),
                        "tg_ms_per_token": round(tg_ms, 4),
                        "tg_tok_s": round(B / tg_ms * 1e3, 1),
                        "warmup_s": {"prefill": round(prefill_warm, 2), "step": round(compile_s[m], 2)},
                        "cudagraph_skips": cudagraph_skips() if backend == "compiled" else None,
                        "prefill_compiled": backend == "compiled" and not args.eager_prefill,
                        "dtype": str(dtype)[6:], "device": dev_name, "torch": torch.__version__,
                    })

        for backend in backends:
            try:
                measure(backend)
            except Exception as e:  # a compiler failure must not cost the eager numbers
                if backend == "eager":
                    raise
                print(json.dumps({"bench": "twin_decode", "config": name, "model": vname,
                                  "backend": backend, "error": f"{type(e).__name__}: {e}"[:2000]}),
                      flush=True)
        del decoder, model
        if not on_cpu:
            torch.cuda.empty_cache()
        if can_compile:
            torch._dynamo.reset()

    if args.json:
        with open(args.json, "w") as f:
            json.dump(records, f, indent=1)
    if args.md:
        print()
        print(f"twin decoder, `{name}`, batch {B}, prompt {P}, gen {G}, {str(dtype)[6:]}, {dev_name}, "
              f"torch {torch.__version__}; median of {args.reps} reps "
              f"({'host clock' if on_cpu else 'CUDA events'})")
        print()
        print("| model | p x h | weights | mode | backend | pp ms | pp tok/s | tg ms/token | "
              "tg tok/s | warm-up s (prefill / step) |")
        print("|---|---|---|---|---|---:|---:|---:|---:|---:|")
        for r in records:
            print(f"| {r['model']} | {r['n_stacks']} x {r['layers_per_stack']} | {r['weights']} | "
                  f"{r['mode']} | {r['backend']} | {r['pp_ms']:.2f} | {r['pp_tok_s']:.0f} | "
                  f"{r['tg_ms_per_token']:.3f} | {r['tg_tok_s']:.0f} | "
                  f"{r['warmup_s']['prefill']:.1f} / {r['warmup_s']['step']:.1f} |")
    return 0


def parse_args(argv, prog=None):
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--prompt", type=int, default=512)
    parser.add_argument("--gen", type=int, default=128)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--modes", default="staggered,recurrent",
                        help="decode modes (recurrent only runs for shared weights)")
    parser.add_argument("--baseline", action="store_true",
                        help="also the p=1 model of equal depth (n_stacks 1, layers p*h)")
    parser.add_argument("--no-compile", action="store_true", help="eager only")
    parser.add_argument("--eager-prefill", action="store_true",
                        help="compiled rows: compile the decode step only (saves compile time)")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                        help="cpu: a smoke test of the script (eager, float32, host clock)")
    parser.add_argument("--md", action="store_true", help="print a markdown table at the end")
    parser.add_argument("--json", default=None, help="also write every measurement to this file")
    return parser.parse_args(argv)


def main(argv, prog=None):
    """prog: the name in usage lines (twin_decode.py passes "twin_decode.py bench")."""
    return cmd_bench(parse_args(argv, prog))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
