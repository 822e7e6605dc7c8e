"""Golden fixtures for nin-model-nin: a faithful PyTorch NIN, its logits, class maps and the
gradients of one SGD step's cross-entropy loss, on reduced widths (to keep fixtures small).

Run from the repository root:
    python3 models/nin/testdata/gen_nin_golden.py             # writes nin_golden.safetensors
    python3 models/nin/testdata/gen_nin_golden.py --full PATH # also a full-width fixture at PATH
The Rust test reads the committed fixture, and the full-width one when NIN_FULL_GOLDEN=PATH.
Each case's metadata entry holds the model config in nin-model-nin's serde format.
"""
import argparse
import json
import os

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file


class MlpConv(nn.Module):
    """k×k conv then 1×1 convs, each followed by (batch norm and) ReLU; names as in nin-zoo."""

    def __init__(self, cin, kernel, padding, widths, batch_norm):
        super().__init__()
        self.conv = nn.Conv2d(cin, widths[0], kernel, padding=padding)
        self.mlp = nn.ModuleList(nn.Conv2d(a, b, 1) for a, b in zip(widths, widths[1:]))
        self.bn = nn.ModuleList(nn.BatchNorm2d(w) for w in widths) if batch_norm else None

    def forward(self, x):
        for i, conv in enumerate([self.conv, *self.mlp]):
            x = conv(x)
            if self.bn is not None:
                x = self.bn[i](x)
            x = F.relu(x)
        return x


class NIN(nn.Module):
    """The authors' CIFAR-10 Caffe model: pool1 max 3/2 ceil, pool2 avg (or max) 3/2 ceil."""

    def __init__(self, cfg):
        super().__init__()
        c = cfg["num_classes"]
        w1, w2, w3 = cfg["mlpconv1"], cfg["mlpconv2"], cfg["mlpconv3"]
        bn = cfg["batch_norm"]
        self.mlpconv1 = MlpConv(3, 5, 2, w1, bn)
        self.mlpconv2 = MlpConv(w1[2], 5, 2, w2, bn)
        self.mlpconv3 = MlpConv(w2[2], 3, 1, [*w3, c], bn)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.pool2 = (nn.MaxPool2d(3, 2, ceil_mode=True) if cfg["pool2"] == "max"
                      else nn.AvgPool2d(3, 2, ceil_mode=True))
        self.drop = nn.Dropout(cfg["dropout"])

    def class_maps(self, x):
        x = self.drop(self.pool1(self.mlpconv1(x)))
        x = self.drop(self.pool2(self.mlpconv2(x)))
        return self.mlpconv3(x)

    def forward(self, x):
        return self.class_maps(x).mean((2, 3))


def config(num_classes, widths, pool2="avg", batch_norm=False, dropout=0.5):
    w1, w2, w3 = widths
    return dict(num_classes=num_classes, in_channels=3, mlpconv1=w1, mlpconv2=w2, mlpconv3=w3,
                pool2=pool2, dropout=dropout, batch_norm=batch_norm,
                init=dict(kind="normal", std=0.05))


def make_case(name, cfg, train, batch, tensors, meta, dtype=torch.float32):
    model = NIN(cfg)
    for mod in model.modules():
        if isinstance(mod, nn.Conv2d):
            nn.init.kaiming_normal_(mod.weight)
            nn.init.uniform_(mod.bias, -0.1, 0.1)
        if isinstance(mod, nn.BatchNorm2d):
            nn.init.uniform_(mod.weight, 0.5, 1.5)
            nn.init.uniform_(mod.bias, -0.2, 0.2)
    model = model.to(dtype)
    for key, value in model.state_dict().items():
        if not key.endswith("num_batches_tracked"):
            tensors[f"{name}.param.{key}"] = value.detach().clone().contiguous()
    model.train(train)
    x = torch.randn(batch, 3, 32, 32, dtype=dtype)
    labels = torch.randint(0, cfg["num_classes"], (batch,))
    maps = model.class_maps(x)
    logits = maps.mean((2, 3))
    loss = F.cross_entropy(logits, labels)
    loss.backward()
    tensors[f"{name}.input"] = x
    tensors[f"{name}.labels"] = labels
    tensors[f"{name}.class_maps"] = maps.detach().contiguous()
    tensors[f"{name}.logits"] = logits.detach().contiguous()
    tensors[f"{name}.loss"] = loss.detach().reshape(1)
    for key, p in model.named_parameters():
        tensors[f"{name}.grad.{key}"] = p.grad.contiguous()
    for key, b in model.named_buffers():
        if not key.endswith("num_batches_tracked"):
            tensors[f"{name}.after.{key}"] = b.detach().clone().contiguous()
    meta[name] = json.dumps(dict(config=cfg, train=train, dtype=str(dtype).split(".")[-1]))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--full", help="also write a full-width fixture to this path")
    args = parser.parse_args()
    torch.manual_seed(1312_4400)
    small = ([16, 12, 8], [16, 16, 16], [16, 16])
    tensors, meta = {}, {}
    # Eval mode: dropout is off, so PyTorch and candle see the same network.
    make_case("nin_small", config(10, small), False, 4, tensors, meta)
    make_case("nin_small_maxpool2", config(10, small, pool2="max"), False, 4, tensors, meta)
    # Train mode with batch statistics (dropout 0: masks come from different generators), in
    # float64 (checked to 1e-9) and float32. PyTorch's CPU kernel sums a norm's statistics and
    # gradients in float64, as nin-layers' batch norm does; candle's own sums in float32 and
    # missed the float32 gradients below a norm by up to 1e-2.
    make_case("nin_bn_small", config(10, small, batch_norm=True, dropout=0.0), True, 6, tensors,
              meta, torch.float64)
    make_case("nin_bn_small_f32", config(10, small, batch_norm=True, dropout=0.0), True, 6,
              tensors, meta)
    meta["torch"] = torch.__version__
    out = os.path.join(os.path.dirname(__file__), "nin_golden.safetensors")
    save_file(tensors, out, metadata=meta)
    print(f"wrote {out}, torch {torch.__version__}")
    if args.full:
        full = ([192, 160, 96], [192, 192, 192], [192, 192])
        tensors, meta = {}, {}
        # float64: in float32, candle's weight gradient of the first convolution (8,192 products
        # summed per weight) differs from PyTorch's by up to 1e-3; the logits agree to 1e-6.
        make_case("nin_full", config(10, full), False, 8, tensors, meta, torch.float64)
        make_case("nin_bn_full", config(100, full, batch_norm=True, dropout=0.0), True, 8, tensors,
                  meta, torch.float64)
        meta["torch"] = torch.__version__
        save_file(tensors, args.full, metadata=meta)
        print(f"wrote {args.full}")


if __name__ == "__main__":
    main()
