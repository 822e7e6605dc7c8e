"""The comparison table of docs/performance.md from the CSV rows of compare.sh: per preset, mode
and batch, the median images/s of each program over the rounds (with their range), nin-zoo ÷
PyTorch, each step's share of the machine's f32 GEMM peak, and peak memory. Not part of CI.

    python3 benches/pytorch/summarize.py bench.csv [--baseline bench.baseline.csv]

The machine's peak is the higher of the two programs' `--bench gemm` medians in the same CSV
(a 2048³ product at the same threads); a step's GFLOP/s counts a training step as three forward
passes, as both benchmarks do. With --baseline (compare.sh's BASELINE_BIN rows), a column gives
nin-zoo's images/s before and the speed-up.
"""
import argparse
import csv
import statistics
from collections import defaultdict

PROGRAMS = {"candle": "nin-zoo", "pytorch": "PyTorch"}


def load(path):
    """{(framework, model, mode, batch): [row, ...]} in file order (one row per round)."""
    rows = defaultdict(list)
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            key = (r["framework"], r["model"], r["mode"], int(r["batch_size"]))
            rows[key].append(r)
    return rows


def median(rows, field):
    return statistics.median(float(r[field]) for r in rows)


def with_span(rows, field):
    """The median, and the range over the rounds when there are several."""
    values = [float(r[field]) for r in rows]
    m = statistics.median(values)
    return f"{m:.0f} ({min(values):.0f}–{max(values):.0f})" if len(values) > 1 else f"{m:.0f}"


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("csv")
    p.add_argument("--baseline", help="rows of the nin binary before a change (BASELINE_BIN)")
    args = p.parse_args()
    rows = load(args.csv)
    base = load(args.baseline) if args.baseline else {}
    peaks = {fw: median(rows[(fw, "gemm", "gemm", 2048)], "achieved_gflops")
             for fw in PROGRAMS if (fw, "gemm", "gemm", 2048) in rows}
    if not peaks:
        raise SystemExit(f"{args.csv}: no `--bench gemm` rows; run compare.sh, which adds them")
    peak = max(peaks.values())
    rounds = len(rows[next(iter(k for k in rows if k[1] == "gemm"))])
    print("GEMM 2048³ medians: " + ", ".join(f"{PROGRAMS[fw]} {g:.0f} GFLOP/s"
                                             for fw, g in peaks.items())
          + f"; the machine's peak is taken as {peak:.0f}. {rounds} round(s).\n")
    header = ["preset", "mode", "batch", "nin-zoo img/s", "PyTorch img/s", "nin-zoo ÷ PyTorch",
              "% of GEMM peak (nin-zoo / PyTorch)", "peak MiB (nin-zoo / PyTorch)"]
    if base:
        header[4:4] = ["nin-zoo before", "after ÷ before"]
    print("| " + " | ".join(header) + " |")
    print("|" + " --- |" * len(header))
    configs = sorted({k[1:] for k in rows if k[1] != "gemm"},
                     key=lambda k: (k[0], k[1] != "train", k[2]))
    for model, mode, batch in configs:
        ours, theirs = rows.get(("candle", model, mode, batch)), rows.get(
            ("pytorch", model, mode, batch))
        if not ours:
            continue
        ips = median(ours, "samples_per_sec")
        cells = [f"`{model}`", mode, str(batch), with_span(ours, "samples_per_sec")]
        if base:
            before = base.get(("candle", model, mode, batch))
            if before:
                b = median(before, "samples_per_sec")
                cells += [f"{b:.0f}", f"{ips / b:.2f}×"]
            else:
                cells += ["", ""]
        share = f"{100 * median(ours, 'achieved_gflops') / peak:.0f}"
        mem = f"{median(ours, 'peak_rss_mib'):.0f}"
        if theirs:
            pt = median(theirs, "samples_per_sec")
            ratio = ips / pt
            cells += [with_span(theirs, "samples_per_sec"),
                      f"**{ratio:.2f}×**" if ratio >= 1.2 else f"{ratio:.2f}×",
                      f"{share} / {100 * median(theirs, 'achieved_gflops') / peak:.0f}",
                      f"{mem} / {median(theirs, 'peak_rss_mib'):.0f}"]
        else:
            cells += ["", "", share, mem]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
