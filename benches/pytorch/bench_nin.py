"""PyTorch counterpart of `nin bench`: the same model, batch, threads and training step
(forward in train mode, cross-entropy, backward, SGD momentum 0.9 with weight decay 5e-4),
medians over timed steps, and the same CSV columns. Not part of CI.

Run from the repository root:
    python3 benches/pytorch/bench_nin.py --bench both --batch-size 32,128 --threads 2 \
        --csv bench.csv
The model classes are the ones the golden fixtures use (models/*/testdata/gen_*_golden.py);
presets other than nin and nin_bn take their configuration from `nin list --json` (--nin: the
binary, target/release/nin by default).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
for family in ("nin", "cic", "drnin", "dcnin"):
    sys.path.insert(0, os.path.join(ROOT, "models", family, "testdata"))
# The PyTorch modules the golden fixtures are made with: each takes the family's config as the
# Rust crate serialises it.
import gen_cic_golden  # noqa: E402
from gen_nin_golden import NIN, config  # noqa: E402
from gen_drnin_golden import DrNIN  # noqa: E402
from gen_dcnin_golden import DcNIN  # noqa: E402


def dense_window_forward(self, x):
    """A channel-window convolution as one dense convolution, its compact weight scattered into
    a zero weight (what nin-model-cic does): the fixture's reference loops over output channels,
    which measures Python, not the layer."""
    if not hasattr(self, "rows"):
        # Outside inference mode, so that training steps may use the indices too.
        with torch.inference_mode(False):
            w = self.w
            self.rows = torch.arange(len(self.starts)).repeat_interleave(w)
            self.cols = torch.tensor([s + i for s in self.starts for i in range(w)])
            self.taps = torch.arange(w).repeat(len(self.starts))
    cout, _, k, _ = self.weight.shape
    dense = self.weight.new_zeros(cout, x.shape[1], k, k)
    dense = dense.index_put((self.rows, self.cols), self.weight[self.rows, self.taps])
    return F.conv2d(x, dense, self.bias, padding=self.padding)


class CiC(gen_cic_golden.CiC):
    """The fixture's CiC without its max-pool margin bookkeeping (a fixture-only check)."""

    def class_maps(self, x):
        x = self.drop(self.pool1(self.mlpconv1(x)))
        x = self.drop(self.pool2(self.mlpconv2(x)))
        return self.mlpconv3(x)


gen_cic_golden.ChannelWindowConv.forward = dense_window_forward
MODULES = {"nin": NIN, "cic": CiC, "drnin": DrNIN, "dcnin": DcNIN}

HEADER = ("framework,model,mode,batch_size,samples_per_sec,step_time_ms,step_time_min_ms,"
          "param_count,gmacs,achieved_gflops,peak_rss_mib,threads,device,versions")


def model_for(name, num_classes, nin_bin):
    """The PyTorch module of preset `name` and, for presets read from the zoo, its
    multiply-accumulates per image as the zoo counts them (a channel-window layer's compact ones).
    NIN's two presets are written out here; every other preset's configuration is read from
    `nin list --json` (the zoo's own, so both frameworks build the same network)."""
    widths = ([192, 160, 96], [192, 192, 192], [192, 192])
    if name == "nin":
        return NIN(config(num_classes, widths)), None
    if name == "nin_bn":
        return NIN(config(num_classes, widths, batch_norm=True)), None
    try:
        listing = json.loads(subprocess.run([nin_bin, "list", "--json"], check=True,
                                            capture_output=True, text=True).stdout)
    except (OSError, subprocess.CalledProcessError) as e:
        raise SystemExit(f"--nin {nin_bin}: cannot read the zoo's presets ({e}); "
                         "build it with cargo build --release -p nin-cli")
    entry = next((m for m in listing if m["name"] == name), None)
    if entry is None:
        known = ", ".join(m["name"] for m in listing)
        raise SystemExit(f"--model {name}: not a preset of the zoo (known: {known})")
    cfg = dict(entry["config_cifar10"], num_classes=num_classes)
    return MODULES[entry["family"]](cfg), entry["macs_per_image_cifar10"]


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
    model, zoo_macs = model_for(name, args.num_classes, args.nin)
    for p_name, p in model.named_parameters():
        if p.dim() == 4:
            torch.nn.init.normal_(p, std=0.05)
        elif p_name.endswith("bias"):
            torch.nn.init.zeros_(p)
    macs = zoo_macs or conv_macs(model)
    device = torch.device(args.device)
    model = model.to(device)
    xs = (torch.rand(batch, 3, 32, 32) * 4 - 2).to(device)
    labels = (torch.arange(batch) % args.num_classes).to(device)
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
    # `.item()` in each step waits for the GPU, so the times are whole steps there too.
    passes = 3.0 if mode == "train" else 1.0
    params = sum(p.numel() for p in model.parameters())
    return dict(model=name, mode=mode, batch_size=batch, samples_per_sec=sps,
                step_time_ms=median * 1e3, step_time_min_ms=times[0] * 1e3,
                param_count=params, gmacs=macs / 1e9,
                achieved_gflops=2 * macs * passes * sps / 1e9,
                peak_rss_mib=(torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda"
                              else peak_rss_mib()))


GEMM_SIDE = 2048


def bench_gemm(args):
    """The f32 GEMM ceiling: a 2048³ `torch.mm` (MKL on the CPU), as `nin bench --bench gemm`."""
    reset_peak_rss()
    device = torch.device(args.device)
    n = GEMM_SIDE
    a = (torch.rand(n, n) * 4 - 2).to(device)
    b = a.t().contiguous()
    for _ in range(args.warmup):
        torch.mm(a, b)[0, 0].item()
    times = []
    for _ in range(args.iters):
        start = time.perf_counter()
        torch.mm(a, b)[0, 0].item()
        times.append(time.perf_counter() - start)
    times.sort()
    median = times[len(times) // 2]
    return dict(model="gemm", mode="gemm", batch_size=n, samples_per_sec=1 / median,
                step_time_ms=median * 1e3, step_time_min_ms=times[0] * 1e3, param_count=0,
                gmacs=n ** 3 / 1e9, achieved_gflops=2 * n ** 3 / median / 1e9,
                peak_rss_mib=(torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda"
                              else peak_rss_mib()))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bench", choices=["infer", "train", "both", "gemm"], default="both",
                   help="gemm: the f32 GEMM ceiling (2048³ torch.mm); --model and --batch-size "
                        "do not apply")
    p.add_argument("--model", default="nin")
    p.add_argument("--batch-size", default="32,128")
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (fp32, TF32 off)")
    p.add_argument("--csv", default=None)
    p.add_argument("--nin", default=os.path.join(ROOT, "target", "release", "nin"),
                   help="the nin binary, for the configurations of presets other than nin/nin_bn")
    args = p.parse_args()
    if args.device != "cpu":
        if not torch.cuda.is_available():
            raise SystemExit(f"--device {args.device}: PyTorch sees no CUDA device")
        # Strict fp32 as nin-zoo computes it (cuDNN would otherwise use TF32 for convolutions),
        # and cuDNN's autotuner, as a PyTorch user with fixed shapes would turn on.
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.benchmark = True
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    versions = f"torch {torch.__version__}"
    modes = ["infer", "train"] if args.bench == "both" else [args.bench]
    configs = ([("gemm", "gemm", GEMM_SIDE)] if args.bench == "gemm" else
               [(name, mode, int(batch)) for name in args.model.split(",") for mode in modes
                for batch in args.batch_size.split(",")])
    out = None
    if args.csv:
        new = not os.path.exists(args.csv) or os.path.getsize(args.csv) == 0
        out = open(args.csv, "a")
        if new:
            out.write(HEADER + "\n")
    print(f"{'model':<10} {'mode':<6} {'batch':>5} {'images/s':>10} {'median ms':>10} "
          f"{'GFLOP/s':>9} {'peak MiB':>9}  ({threads} threads, {args.device}, {versions})")
    for name, mode, batch in configs:
        r = bench_gemm(args) if mode == "gemm" else bench_one(name, mode, batch, args)
        print(f"{name:<10} {mode:<6} {batch:>5} {r['samples_per_sec']:>10.1f} "
              f"{r['step_time_ms']:>10.2f} {r['achieved_gflops']:>9.1f} "
              f"{r['peak_rss_mib']:>9.0f}", flush=True)
        if out:
            out.write(f"pytorch,{name},{mode},{batch},{r['samples_per_sec']:.2f},"
                      f"{r['step_time_ms']:.3f},{r['step_time_min_ms']:.3f},"
                      f"{r['param_count']},{r['gmacs']:.4f},{r['achieved_gflops']:.1f},"
                      f"{r['peak_rss_mib']:.1f},{threads},{args.device},{versions}\n")
            out.flush()


if __name__ == "__main__":
    main()
