#!/usr/bin/env python3
"""Python/PyTorch side of the native tests and of `npm run bench:model`.

  torch_forward.py forward --model M --threads T --input IN.f32 --shape N,C,H,W --output OUT.f32 [...]
      Plain reference: torch.jit.load, eval, inference mode, NCHW input, default executor.
      Writes the logits as raw float32 and prints their shapes as JSON. --input/--shape/--output
      may repeat (one process, one model load, several inputs).
  torch_forward.py serve --model M --threads T [--channels-last] [--no-profiling] [--precision bf16]
      Line protocol on stdin for paired benchmarks: "forward B ITERS" -> "TIMES ms ... CPU ms ..."
      (wall clock, then process CPU time per forward), "quit".
      --channels-last / --no-profiling / --precision apply the addon's optimisations, so the
      comparison is like for like.
  torch_forward.py profile --model M --threads T --batch B [--channels-last] [--no-profiling] [--iters N]
      torch profiler over N forwards (after warm-up): each op's share of self CPU time, as JSON
      lines {"op", "share", "ms_per_forward", "calls_per_forward"} sorted by share.
"""
import argparse
import json
import sys
import time

import torch


def channels_last_constants(module):
    """Same as native/engine.cc: 4-D tensor constants of the frozen graph -> channels-last."""
    n = 0
    for node in module.graph.nodes():
        if node.kind() == "prim::Constant" and node.hasAttribute("value") and node.kindOf("value") == "t":
            t = node.t("value")
            if t.dim() == 4 and not t.is_contiguous(memory_format=torch.channels_last):
                node.t_("value", t.contiguous(memory_format=torch.channels_last))
                n += 1
    return n


CONV_LINEAR = {"aten::_convolution", "aten::conv2d", "aten::convolution", "aten::linear"}


def bf16_conv_linear_constants(module):
    """Same as native/engine.cc: fp32 constants feeding only conv/linear weight or bias -> bf16
    once at load (autocast would cast them again on every call)."""
    n = 0
    for node in module.graph.nodes():
        if node.kind() != "prim::Constant" or not node.hasAttribute("value") or node.kindOf("value") != "t":
            continue
        t = node.t("value")
        uses = node.output().uses()
        if t.dtype != torch.float32 or not uses:
            continue
        if all(u.user.kind() in CONV_LINEAR and u.offset in (1, 2) for u in uses):
            node.t_("value", t.to(torch.bfloat16))
            n += 1
    return n


def profile(run, x, iters):
    for _ in range(3):
        run(x)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(iters):
            run(x)
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    for e in sorted(events, key=lambda e: -e.self_cpu_time_total):
        print(json.dumps({"op": e.key, "share": round(e.self_cpu_time_total / total, 4),
                          "ms_per_forward": round(e.self_cpu_time_total / 1000 / iters, 3),
                          "calls_per_forward": e.count / iters}))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["forward", "serve", "profile"])
    p.add_argument("--model", required=True)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--input", action="append", default=[])
    p.add_argument("--shape", action="append", default=[])
    p.add_argument("--output", action="append", default=[])
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--no-profiling", action="store_true")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--input-shape", default="3,224,224")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--iters", type=int, default=5)
    a = p.parse_args()

    if a.threads > 0:
        torch.set_num_threads(a.threads)
    if a.no_profiling:
        torch._C._jit_set_profiling_mode(False)
    m = torch.jit.load(a.model, map_location="cpu").eval()
    converted = channels_last_constants(m) if a.channels_last else 0
    bf16_weights = bf16_conv_linear_constants(m) if a.precision == "bf16" and a.mode == "serve" else 0

    def run(x):
        if a.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            if a.precision == "bf16":
                with torch.cpu.amp.autocast(dtype=torch.bfloat16):
                    y = m(x)
            else:
                y = m(x)
        return y.float()

    if a.mode == "forward":
        if not a.input or len(a.input) != len(a.shape) or len(a.input) != len(a.output):
            sys.exit("forward needs as many --input, --shape and --output as each other (at least one)")
        shapes = []
        for inp, shp, out in zip(a.input, a.shape, a.output):
            shape = [int(s) for s in shp.split(",")]
            x = torch.from_file(inp, size=int(torch.Size(shape).numel()), dtype=torch.float32).reshape(shape)
            y = run(x).contiguous()
            y.numpy().tofile(out)
            shapes.append(list(y.shape))
        print(json.dumps({"shapes": shapes, "threads": torch.get_num_threads(), "torch": torch.__version__}))
        return

    c, h, w = [int(s) for s in a.input_shape.split(",")]
    if a.mode == "profile":
        profile(run, torch.rand((a.batch, c, h, w), generator=torch.Generator().manual_seed(42)) * 4 - 2, a.iters)
        return
    print(f"INFO torch={torch.__version__} threads={torch.get_num_threads()} channels_last_weights={converted} "
          f"bf16_weights={bf16_weights}", flush=True)
    print("READY", flush=True)
    g = torch.Generator().manual_seed(42)
    for line in sys.stdin:
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "quit":
            break
        if parts[0] != "forward":
            print("ERROR unknown command", flush=True)
            continue
        b, n = int(parts[1]), int(parts[2])
        x = torch.rand((b, c, h, w), generator=g) * 4 - 2
        times, cpu = [], []
        for _ in range(n):
            t0, c0 = time.perf_counter(), time.process_time()
            run(x)
            times.append((time.perf_counter() - t0) * 1000)
            cpu.append((time.process_time() - c0) * 1000)
        print("TIMES " + " ".join(f"{t:.3f}" for t in times) + " CPU " + " ".join(f"{t:.3f}" for t in cpu), flush=True)


if __name__ == "__main__":
    main()
