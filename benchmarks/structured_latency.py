#!/usr/bin/env python
"""Do fewer MACs become real speed?  ResNet-50 pruned to 1/2 and 1/4 of its MACs, ours vs Torch-Pruning.

Two measurements in one run.

1. **Channel sweep** (which channel counts the hardware runs well).  One 3×3 convolution with C
   input and C output channels at 28×28 (14×14 with --small), for every C in a window such as
   112..144, timed interleaved.  The table gives the time per GMAC of each C and the mean time
   per GMAC of the counts that are multiples of 8, 16, 32 and 64 against the others.  This is
   the measurement behind `round_to`: choose the smallest multiple that reaches the fast regime.

2. **ResNet-50 latency vs MACs.**  torchvision's ResNet-50 (1000 classes, random weights: latency
   depends on shapes only) is pruned to `--targets` of its MACs (default 0.5 and 0.25) two ways:
   - *ours*: `structured_prune(criterion="l1", allocation="uniform", round_to=R)` for each R in
     `--round-to`: every kept channel count a multiple of R;
   - *Torch-Pruning default*: `tp.pruner.MetaPruner` with `GroupMagnitudeImportance(p=2)` and no
     rounding (its defaults), at the uniform ratio that meets the same target.
   The dense model and every pruned model are then timed interleaved (round-robin, so machine
   noise hits all alike) at each batch size of `--batch-sizes`.  The table gives MACs, the MACs
   ratio, median latency, speed-up over dense and speed-up / MACs ratio.  On CUDA the issue's
   target is checked: speed-up ≥ 0.7 × MACs ratio at the largest batch (bf16, channels_last).

Defaults: CUDA → bf16, channels_last, batch sizes 1 and 256, 30 repeats.  CPU → float32,
channels_last, batch sizes 1 and 16 at 224×224, 5 repeats (a 2-core machine cannot time
batch 256 at 224×224 in reasonable time; say what you ran when quoting numbers).

Examples::

    python benchmarks/structured_latency.py                                  # CPU defaults
    python benchmarks/structured_latency.py --device cuda --round-to 8,32,64 --json lat.json
    python benchmarks/structured_latency.py --device cpu --batch-sizes 1,32 --image-size 160
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from slr_prune.metrics.flops import cost_summary  # noqa: E402
from slr_prune.metrics.latency import compare_latency, prepare_for_timing, timed_call  # noqa: E402
from slr_prune.structured import structured_prune, torch_pruning_baseline  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"],
                   help="default: bfloat16 on CUDA, float32 on CPU")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--batch-sizes", default=None, help="comma list; default 1,256 (CUDA) or 1,16 (CPU)")
    p.add_argument("--targets", default="0.5,0.25", help="fractions of the dense MACs to keep")
    p.add_argument("--round-to", default="8", help="comma list of channel multiples for our pruning")
    p.add_argument("--repeats", type=int, default=None, help="timed calls per model (default 30 CUDA, 5 CPU)")
    p.add_argument("--warmup", type=int, default=None, help="untimed calls per model (default 10 CUDA, 2 CPU)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--no-channels-last", action="store_true")
    p.add_argument("--no-sweep", action="store_true", help="skip the channel-count sweep")
    p.add_argument("--sweep", default="112:145", help="channel window lo:hi for the sweep")
    p.add_argument("--sweep-batch", type=int, default=None, help="batch of the sweep (default 64 CUDA, 8 CPU)")
    p.add_argument("--small", action="store_true", help="sweep at 14×14 instead of 28×28")
    p.add_argument("--json", default=None, help="write all measurements to this file")
    return p.parse_args(argv)


def channel_sweep(args: argparse.Namespace, device: torch.device, dtype: torch.dtype | None) -> dict:
    lo, hi = (int(v) for v in args.sweep.split(":"))
    size = 14 if args.small else 28
    batch = args.sweep_batch or (64 if device.type == "cuda" else 8)
    x = torch.randn(batch, 1, size, size)
    rows = []
    prepared = {}
    for c in range(lo, hi):
        xc = x.expand(batch, c, size, size).contiguous()
        prepared[c] = prepare_for_timing(nn.Conv2d(c, c, 3, padding=1, bias=False), xc, device, dtype,
                                         not args.no_channels_last)
    samples: dict[int, list[float]] = {c: [] for c in prepared}
    with torch.inference_mode():
        for _ in range(args.warmup):
            for m, xc in prepared.values():
                timed_call(m, xc, device.type == "cuda")
        for _ in range(args.repeats):  # round-robin over channel counts: load noise hits all alike
            for c, (m, xc) in prepared.items():
                samples[c].append(timed_call(m, xc, device.type == "cuda"))
    stats = {c: statistics.median(v) for c, v in samples.items()}
    for c, ms in stats.items():
        gmacs = batch * c * c * 9 * size * size / 1e9
        rows.append({"channels": c, "median_ms": ms, "ms_per_gmac": ms / gmacs})
    summary = {}
    for m in (8, 16, 32, 64):
        on = [r["ms_per_gmac"] for r in rows if r["channels"] % m == 0]
        off = [r["ms_per_gmac"] for r in rows if r["channels"] % 8 != 0]
        if on and off:
            summary[m] = {"multiples_ms_per_gmac": sum(on) / len(on),
                          "non_multiples_of_8_ms_per_gmac": sum(off) / len(off), "n": len(on)}
    return {"spatial": size, "batch": batch, "rows": rows, "summary": summary}


def build_models(args: argparse.Namespace, device: torch.device) -> tuple[dict[str, nn.Module], dict[str, dict]]:
    import torchvision

    torch.manual_seed(0)
    dense = torchvision.models.resnet50(weights=None).eval().to(device)
    example = torch.randn(1, 3, args.image_size, args.image_size, device=device)
    models = {"dense": dense}
    info = {"dense": {**{k: v for k, v in cost_summary(dense, example).items() if k in ("params", "macs")},
                      "how": "torchvision resnet50"}}
    for target in (float(t) for t in args.targets.split(",")):
        for r in (int(v) for v in args.round_to.split(",")):
            m = copy.deepcopy(dense)
            t0 = time.perf_counter()
            res = structured_prune(m, example_input=example, criterion="l1", flops_target=target, round_to=r,
                                   ignored_layers=["fc"], device=device)
            name = f"ours r{r} @{target:g}"
            models[name] = m
            info[name] = {**res.costs["after"], "how": f"l1, uniform, round_to={r}",
                          "prune_seconds": time.perf_counter() - t0,
                          "odd_counts": sum(1 for k in res.counts.values() if k % 2)}
        m = copy.deepcopy(dense)
        t0 = time.perf_counter()
        res = torch_pruning_baseline(m, example, flops_target=target, ignored_layers=["fc"])
        name = f"tp-default @{target:g}"
        models[name] = m
        convs = [mod.out_channels for mod in m.modules() if isinstance(mod, nn.Conv2d)]
        info[name] = {**res["costs"]["after"], "how": f"Torch-Pruning MetaPruner, GroupMagnitude p=2, ratio "
                      f"{res['ratio']:.4f}, no rounding", "prune_seconds": time.perf_counter() - t0,
                      "odd_counts": sum(1 for c in convs if c % 2)}
    return models, info


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else ("cpu" if args.device == "auto" else args.device))
    if device.type == "cuda" and not torch.cuda.is_available():
        print("--device cuda asked for, but no CUDA device is available", file=sys.stderr)
        return 2
    cuda = device.type == "cuda"
    dtype_name = args.dtype or ("bfloat16" if cuda else "float32")
    dtype = None if dtype_name == "float32" else getattr(torch, dtype_name)
    args.repeats = args.repeats or (30 if cuda else 5)
    args.warmup = args.warmup if args.warmup is not None else (10 if cuda else 2)
    batches = [int(b) for b in (args.batch_sizes or ("1,256" if cuda else "1,16")).split(",")]
    machine = torch.cuda.get_device_name(device) if cuda else f"{platform.processor() or platform.machine()}, " \
        f"{os.cpu_count()} cores, {torch.get_num_threads()} threads"
    print(f"device {device} ({machine}), {dtype_name}, channels_last={not args.no_channels_last}, "
          f"image {args.image_size}, batches {batches}, repeats {args.repeats}, torch {torch.__version__}")
    out: dict = {"device": str(device), "machine": machine, "dtype": dtype_name, "image_size": args.image_size,
                 "batch_sizes": batches, "repeats": args.repeats, "torch": torch.__version__}

    if not args.no_sweep:
        sweep = channel_sweep(args, device, dtype)
        out["sweep"] = sweep
        print(f"\nchannel sweep: 3x3 conv C→C at {sweep['spatial']}x{sweep['spatial']}, batch {sweep['batch']}")
        print("  C   ms    ms/GMAC")
        for r in sweep["rows"]:
            mark = "".join(f" x{m}" for m in (64, 32, 16, 8) if r["channels"] % m == 0)[:4]
            print(f"  {r['channels']:<4}{r['median_ms']:<8.3f}{r['ms_per_gmac']:<8.3f}{mark}")
        for m, s in sweep["summary"].items():
            print(f"  multiples of {m:<2}: {s['multiples_ms_per_gmac']:.3f} ms/GMAC vs counts not a multiple of 8: "
                  f"{s['non_multiples_of_8_ms_per_gmac']:.3f} ({s['n']} multiples in the window)")

    models, info = build_models(args, device)
    out["models"] = info
    example = torch.randn(1, 3, args.image_size, args.image_size)
    results: dict[str, dict] = {}
    for b in batches:
        x = example.repeat(b, 1, 1, 1)
        stats = compare_latency(models, x, device=device, dtype=dtype, channels_last=not args.no_channels_last,
                                warmup=args.warmup, repeats=args.repeats)
        results[str(b)] = {k: v.to_dict() for k, v in stats.items()}
    out["latency"] = results

    dense_macs = info["dense"]["macs"]
    header = f"\n{'model':<18}{'GMACs':>7}{'MACs x':>8}{'params M':>9}{'odd ch':>7}"
    for b in batches:
        header += f"{f'b{b} ms':>11}{'speedup':>9}{'sp/MACs':>8}"
    print(header)
    verdicts = []
    for name in models:
        macs = info[name]["macs"]
        ratio = dense_macs / macs
        line = f"{name:<18}{macs / 1e9:>7.3f}{ratio:>8.2f}{info[name]['params'] / 1e6:>9.2f}" \
               f"{info[name].get('odd_counts', 0):>7}"
        for b in batches:
            ms = results[str(b)][name]["median_ms"]
            speed = results[str(b)]["dense"]["median_ms"] / ms
            line += f"{ms:>11.2f}{speed:>9.2f}{speed / ratio:>8.2f}"
            results[str(b)][name]["speedup"] = speed
            results[str(b)][name]["speedup_over_macs_ratio"] = speed / ratio
        print(line)
        if cuda and name != "dense":
            speed = results[str(max(batches))][name]["speedup"]
            verdicts.append((name, speed, ratio, speed >= 0.7 * ratio))
    if cuda:
        print(f"\ntarget on the GPU at batch {max(batches)}: speed-up ≥ 0.7 × MACs ratio")
        for name, speed, ratio, ok in verdicts:
            print(f"  {name:<18} {speed:.2f}x vs 0.7 × {ratio:.2f} = {0.7 * ratio:.2f}: {'PASS' if ok else 'FAIL'}")
    else:
        print("\n(CPU run: the GPU target speed-up ≥ 0.7 × MACs ratio is checked only with --device cuda)")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
        print(f"json: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
