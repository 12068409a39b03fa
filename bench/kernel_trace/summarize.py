#!/usr/bin/env python3
"""summarize.py — per-step GPU time table from a kernel_trace.cpp trace.

Usage: python3 bench/kernel_trace/summarize.py TRACE.tsv --boundary REGEX [--at start|end]
                                               [--timeline OUT.tsv] [--top N]

The trace holds every kernel / copy / memset of a program. Steps are cut at the records whose
"kind name" matches --boundary: a step starts at the first record of each run of matching
records (--at start: e.g. our trainer's token upload 'memcpy_htod'), or ends after the last one
(--at end: e.g. the twin's fused AdamW kernel 'fused_adamw'); cuts closer than --min-records
records are merged. The last --last complete steps are averaged (earlier ones hold
initialisation, autotuning, compilation). Printed per step: wall time
(boundary to boundary), GPU busy time (the union of the records' intervals), the idle gap
between them (launch and host overhead), and per kernel name the time, count and share, with a
rough category (matrix product / attention / other) total.
"""

import argparse
import collections
import re
import sys


def demangle(name):
    """A readable short form of an Itanium-mangled kernel name (namespaces::function<...>)."""
    if not name.startswith("_Z"):
        return name
    i = 2
    nested = name.startswith("_ZN")
    if nested:
        i = 3
    parts = []
    while i < len(name) and name[i].isdigit():
        j = i
        while name[j].isdigit():
            j += 1
        n = int(name[i:j])
        parts.append(name[j:j + n])
        i = j + n
        if not nested:
            break
    short = "::".join(parts) if parts else name
    if i < len(name) and name[i] == "I":
        short += "<...>"
    return short


def category(name):
    low = name.lower()
    if re.search(r"gemm|nvjet|cutlass|xmma|sm90_|cublas", low):
        return "matrix products"
    if re.search(r"attention|flash|fmha|attn|sdpa", low):
        return "attention"
    return "other"


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trace")
    parser.add_argument("--boundary", required=True)
    parser.add_argument("--at", choices=("start", "end"), default="start")
    parser.add_argument("--last", type=int, default=3, help="average the last N complete steps")
    parser.add_argument("--min-records", type=int, default=50,
                        help="a step has at least this many records (closer cuts are merged)")
    parser.add_argument("--timeline", help="write the last step's records here")
    parser.add_argument("--top", type=int, default=40)
    args = parser.parse_args(argv)

    records = []
    with open(args.trace) as f:
        for line in f:
            kind, start, end, name = line.rstrip("\n").split("\t", 3)
            label = demangle(name) if kind == "kernel" else kind
            records.append((kind, int(start), int(end), label, name))
    boundary = re.compile(args.boundary)
    matches = [bool(boundary.search(f"{r[0]} {r[4]}")) for r in records]
    cuts = []
    for i, m in enumerate(matches):
        if args.at == "start" and m and (i == 0 or not matches[i - 1]):
            cuts.append(i)
        if args.at == "end" and m and (i + 1 == len(records) or not matches[i + 1]):
            cuts.append(i + 1)
    merged = []
    for cut in cuts:
        if not merged or cut - merged[-1] >= args.min_records:
            merged.append(cut)
    steps = [(merged[k], merged[k + 1]) for k in range(len(merged) - 1)]
    if len(steps) < args.last:
        print(f"summarize: found {len(steps)} complete steps at '{args.boundary}', "
              f"fewer than --last {args.last}", file=sys.stderr)
        return 1
    steps = steps[-args.last:]

    per_name = collections.defaultdict(lambda: [0.0, 0])
    wall = busy = 0.0
    for a, b in steps:
        span = records[a:b]
        wall += (records[b][1] if b < len(records) else span[-1][2]) - span[0][1]
        covered_until = span[0][1]
        for kind, start, end, label, _ in span:
            busy += max(0, end - max(start, covered_until))
            covered_until = max(covered_until, end)
            per_name[label][0] += end - start
            per_name[label][1] += 1
    n = len(steps)
    ms = 1e-6 / n
    print(f"{n} steps averaged; per step: wall {wall * ms:.2f} ms, GPU busy {busy * ms:.2f} ms, "
          f"idle {(wall - busy) * ms:.2f} ms, {sum(c for _, c in per_name.values()) / n:.0f} records")
    cats = collections.defaultdict(float)
    for label, (t, _) in per_name.items():
        cats[category(label)] += t
    print("  ".join(f"{c}: {t * ms:.2f} ms" for c, t in sorted(cats.items(), key=lambda x: -x[1])))
    print(f"{'ms/step':>9} {'calls':>6} {'share':>6}  kernel")
    total = sum(t for t, _ in per_name.values())
    for label, (t, c) in sorted(per_name.items(), key=lambda x: -x[1][0])[:args.top]:
        print(f"{t * ms:9.3f} {c / n:6.0f} {100 * t / total:5.1f}%  {label[:150]}")
    if args.timeline:
        a, b = steps[-1]
        t0 = records[a][1]
        with open(args.timeline, "w") as f:
            prev_end = t0
            for kind, start, end, label, _ in records[a:b]:
                f.write(f"{(start - t0) / 1e3:10.1f} us  gap {(start - prev_end) / 1e3:7.1f}  "
                        f"dur {(end - start) / 1e3:8.1f}  {label[:160]}\n")
                prev_end = max(prev_end, end)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
