"""PyTorch counterpart of `nin bench`: the same NIN, batch, threads and training step
(forward in train mode, cross-entropy, backward, SGD momentum 0.9 with weight decay 5e-4),
medians over timed steps, and the same CSV columns. Not part of CI.

Run from the repository root:
    python3 benches/pytorch/bench_nin.py --bench both --batch-size 32,128 --threads 2 \
        --csv bench.csv
The model class is the one the golden fixtures use (models/nin/testdata/gen_nin_golden.py).
"""
import argparse
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "models", "nin", "testdata"))
from gen_nin_golden import NIN, config  # noqa: E402

HEADER = ("framework,model,mode,batch_size,samples_per_sec,step_time_ms,step_time_min_ms,"
          "param_count,gmacs,achieved_gflops,peak_rss_mib,threads,device,versions")


def nin_cfg(name, num_classes):
    widths = ([192, 160, 96], [192, 192, 192], [192, 192])
    if name == "nin":
        return config(num_classes, widths)
    if name == "nin_bn":
        return config(num_classes, widths, batch_norm=True)
    raise SystemExit(f"--model {name}: this script knows nin and nin_bn")


def conv_macs(model):
    """Multiply-accumulates of the convolutions for one 32×32 image, counted with hooks."""
    total = 0

    def hook(mod, inp, out):
        nonlocal total
        k = mod.kernel_size[0] * mod.kernel_size[1]
        total += out[0].numel() * mod.in_channels * k

    hooks = [m.register_forward_hook(hook) for m in model.modules()
             if isinstance(m, torch.nn.Conv2d)]
    with torch.inference_mode():
        model.eval()(torch.zeros(1, 3, 32, 32))
    for h in hooks:
        h.remove()
    return total


def reset_peak_rss():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def peak_rss_mib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def bench_one(name, mode, batch, args):
    reset_peak_rss()
    torch.manual_seed(0)
    model = NIN(nin_cfg(name, args.num_classes))
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.normal_(m.weight, std=0.05)
            torch.nn.init.zeros_(m.bias)
    macs = conv_macs(model)
    xs = torch.rand(batch, 3, 32, 32) * 4 - 2
    labels = torch.arange(batch) % args.num_classes
    if mode == "train":
        model.train()
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)

        def step():
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(xs), labels)
            loss.backward()
            opt.step()
            loss.item()
    else:
        model.eval()

        def step():
            with torch.inference_mode():
                model(xs).sum().item()

    for _ in range(args.warmup):
        step()
    times = []
    for _ in range(args.iters):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    times.sort()
    median = times[len(times) // 2]
    sps = batch / median
    passes = 3.0 if mode == "train" else 1.0
    params = sum(p.numel() for p in model.parameters())
    return dict(model=name, mode=mode, batch_size=batch, samples_per_sec=sps,
                step_time_ms=median * 1e3, step_time_min_ms=times[0] * 1e3,
                param_count=params, gmacs=macs / 1e9,
                achieved_gflops=2 * macs * passes * sps / 1e9, peak_rss_mib=peak_rss_mib())


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bench", choices=["infer", "train", "both"], default="both")
    p.add_argument("--model", default="nin")
    p.add_argument("--batch-size", default="32,128")
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--csv", default=None)
    args = p.parse_args()
    if args.device != "cpu":
        raise SystemExit("--device: this script measures the CPU only")
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    versions = f"torch {torch.__version__}"
    modes = ["infer", "train"] if args.bench == "both" else [args.bench]
    out = None
    if args.csv:
        new = not os.path.exists(args.csv) or os.path.getsize(args.csv) == 0
        out = open(args.csv, "a")
        if new:
            out.write(HEADER + "\n")
    print(f"{'model':<10} {'mode':<6} {'batch':>5} {'images/s':>10} {'median ms':>10} "
          f"{'GFLOP/s':>9} {'peak MiB':>9}  ({threads} threads, cpu, {versions})")
    for name in args.model.split(","):
        for mode in modes:
            for batch in [int(b) for b in args.batch_size.split(",")]:
                r = bench_one(name, mode, batch, args)
                print(f"{name:<10} {mode:<6} {batch:>5} {r['samples_per_sec']:>10.1f} "
                      f"{r['step_time_ms']:>10.2f} {r['achieved_gflops']:>9.1f} "
                      f"{r['peak_rss_mib']:>9.0f}", flush=True)
                if out:
                    out.write(f"pytorch,{name},{mode},{batch},{r['samples_per_sec']:.2f},"
                              f"{r['step_time_ms']:.3f},{r['step_time_min_ms']:.3f},"
                              f"{r['param_count']},{r['gmacs']:.4f},{r['achieved_gflops']:.1f},"
                              f"{r['peak_rss_mib']:.1f},{threads},cpu,{versions}\n")
                    out.flush()


if __name__ == "__main__":
    main()
