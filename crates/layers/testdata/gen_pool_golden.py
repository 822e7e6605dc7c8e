"""Golden fixtures for nin-layers pooling: PyTorch forward and backward of every pooling
configuration the NIN family uses, plus padded, odd-sized ceil-mode and tied-maximum cases.

Run from the repository root:  python3 crates/layers/testdata/gen_pool_golden.py
Writes crates/layers/testdata/pool_golden.safetensors (inputs, outputs, grads per case) whose
metadata holds each case's configuration and the torch version.
"""
import json
import os

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

torch.manual_seed(20131216)  # NIN's arXiv date: any fixed seed will do.

# name, kind, kernel, stride, padding, ceil_mode, count_include_pad, input shape, integer ties
CASES = [
    ("nin_max_32", "max", 3, 2, 0, True, False, (2, 3, 32, 32), False),
    ("nin_max_odd", "max", 3, 2, 0, True, False, (2, 3, 9, 9), False),
    ("nin_avg_16", "avg", 3, 2, 0, True, False, (2, 3, 16, 16), False),
    ("nin_avg_odd", "avg", 3, 2, 0, True, False, (2, 3, 9, 9), False),
    ("max_pad1_floor", "max", 3, 2, 1, False, False, (2, 2, 8, 8), False),
    ("max_pad1_ceil_odd", "max", 3, 2, 1, True, False, (1, 2, 7, 7), False),
    ("avg_pad1_incl_ceil", "avg", 3, 2, 1, True, True, (1, 2, 7, 7), False),
    ("avg_pad1_excl_s1", "avg", 3, 1, 1, False, False, (1, 2, 6, 5), False),
    ("avg_2x2", "avg", 2, 2, 0, False, True, (2, 4, 8, 8), False),
    ("max_ties", "max", 3, 2, 0, True, False, (1, 2, 9, 9), True),
    ("max_2x2_floor_odd", "max", 2, 2, 0, False, False, (1, 3, 7, 7), False),
]


def main():
    tensors = {}
    meta = {"torch": torch.__version__}
    configs = []
    for name, kind, k, s, p, ceil, incl, shape, ties in CASES:
        if ties:
            x = torch.randint(0, 3, shape).float()
        else:
            x = torch.randn(shape)
        x.requires_grad_(True)
        if kind == "max":
            y = F.max_pool2d(x, k, s, p, ceil_mode=ceil)
        else:
            y = F.avg_pool2d(x, k, s, p, ceil_mode=ceil, count_include_pad=incl)
        gy = torch.randn_like(y)
        y.backward(gy)
        tensors[f"{name}.input"] = x.detach().contiguous()
        tensors[f"{name}.output"] = y.detach().contiguous()
        tensors[f"{name}.grad_output"] = gy.contiguous()
        tensors[f"{name}.grad_input"] = x.grad.contiguous()
        configs.append(
            dict(name=name, kind=kind, kernel=k, stride=s, padding=p, ceil_mode=ceil,
                 count_include_pad=incl)
        )
    meta["cases"] = json.dumps(configs)
    out = os.path.join(os.path.dirname(__file__), "pool_golden.safetensors")
    save_file(tensors, out, metadata=meta)
    print(f"wrote {out}: {len(configs)} cases, torch {torch.__version__}")


if __name__ == "__main__":
    main()
