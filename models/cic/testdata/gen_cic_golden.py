"""Golden fixtures for nin-model-cic: a faithful PyTorch CiC, its logits, class maps and the
gradients of one SGD step's cross-entropy loss, on reduced widths (to keep fixtures small).

Run from the repository root:
    python3 models/cic/testdata/gen_cic_golden.py   # writes cic_golden.safetensors
Each case's metadata entry holds the model config in nin-model-cic's serde format.

The channel-window convolution is implemented here independently of the Rust one: output channel
j is an ordinary convolution of input channels [s_j, s_j + w) with its own [1, w, k, k] weight,
computed one output channel at a time (the Rust layer gathers a dense weight instead).
"""
import json
import os

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file


def window_starts(cin, cout, w):
    """s_j = round(j (in - w) / (out - 1)), halves rounded up (Python's round() would round
    halves to even), in integers; s_0 = 0 when out = 1."""
    if cout == 1:
        return [0]
    span, den = cin - w, cout - 1
    return [(2 * j * span + den) // (2 * den) for j in range(cout)]


class ChannelWindowConv(nn.Module):
    """Each output channel reads `w` consecutive input channels; weight [out, w, k, k]."""

    def __init__(self, cin, cout, w, kernel, padding):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(cout, w, kernel, kernel))
        self.bias = nn.Parameter(torch.empty(cout))
        self.starts = window_starts(cin, cout, w)
        self.w, self.padding = w, padding

    def forward(self, x):
        outs = [
            F.conv2d(x[:, s:s + self.w], self.weight[j:j + 1], self.bias[j:j + 1],
                     padding=self.padding)
            for j, s in enumerate(self.starts)
        ]
        return torch.cat(outs, 1)


def conv(cin, cout, kernel, padding, window):
    if window is None:
        return nn.Conv2d(cin, cout, kernel, padding=padding)
    return ChannelWindowConv(cin, cout, window, kernel, padding)


class CicBlock(nn.Module):
    """k×k conv then 1×1 convs, each followed by (batch norm and) ReLU; names as NIN's mlpconv."""

    def __init__(self, cin, kernel, padding, widths, windows, batch_norm):
        super().__init__()
        ins = [cin, *widths[:-1]]
        self.conv = conv(cin, widths[0], kernel, padding, windows[0])
        self.mlp = nn.ModuleList(conv(a, b, 1, 0, win)
                                 for a, b, win in zip(ins[1:], widths[1:], windows[1:]))
        self.bn = nn.ModuleList(nn.BatchNorm2d(w) for w in widths) if batch_norm else None

    def forward(self, x):
        for i, layer in enumerate([self.conv, *self.mlp]):
            x = layer(x)
            if self.bn is not None:
                x = self.bn[i](x)
            MARGINS.append(x.detach().abs().min())
            x = F.relu(x)
        return x


# Smallest |ReLU input| and smallest gap between a max-pool window's two largest (positive)
# values, recorded during a forward pass: a float32 fixture is only meaningful when rounding
# (about 1e-6 here) cannot flip a ReLU or move a max, which would change gradients by 1e-3.
MARGINS = []


def max_pool_margin(x):
    # Ceil mode on 32×32 and 16×16 inputs: one extra column and row of -inf.
    x = F.pad(x, (0, 1, 0, 1), value=float("-inf"))
    n, c, h, w = x.shape
    windows = F.unfold(x.reshape(n * c, 1, h, w), 3, stride=2)
    top = windows.topk(2, dim=1).values
    gap = top[:, 0] - top[:, 1]
    return gap[(top[:, 0] > 0) & (gap > 0)].min()


class CiC(nn.Module):
    """The NIN skeleton with channel-window layers, as nin-model-cic instantiates CiC."""

    def __init__(self, cfg):
        super().__init__()
        c, w = cfg["num_classes"], cfg["window"]
        w1, w2, w3 = cfg["mlpconv1"], cfg["mlpconv2"], cfg["mlpconv3"]
        spatial = w if cfg["sparsity"] == "channel_spatial" else None
        bn = cfg["batch_norm"]
        self.mlpconv1 = CicBlock(3, 5, 2, w1, [None, w, w], bn)
        self.mlpconv2 = CicBlock(w1[2], 5, 2, w2, [spatial, w, w], bn)
        self.mlpconv3 = CicBlock(w2[2], 3, 1, [*w3, c], [spatial, w, None], bn)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.pool2 = (nn.MaxPool2d(3, 2, ceil_mode=True) if cfg["pool2"] == "max"
                      else nn.AvgPool2d(3, 2, ceil_mode=True))
        self.drop = nn.Dropout(cfg["dropout"])

    def class_maps(self, x):
        x = self.mlpconv1(x)
        MARGINS.append(max_pool_margin(x.detach()))
        x = self.drop(self.pool1(x))
        x = self.mlpconv2(x)
        if isinstance(self.pool2, nn.MaxPool2d):
            MARGINS.append(max_pool_margin(x.detach()))
        x = self.drop(self.pool2(x))
        return self.mlpconv3(x)

    def forward(self, x):
        return self.class_maps(x).mean((2, 3))


def config(num_classes, widths, window, sparsity, pool2="avg", batch_norm=False, dropout=0.5):
    w1, w2, w3 = widths
    return dict(num_classes=num_classes, in_channels=3, mlpconv1=w1, mlpconv2=w2, mlpconv3=w3,
                window=window, sparsity=sparsity, pool2=pool2, dropout=dropout,
                batch_norm=batch_norm, init=dict(kind="normal", std=0.05))


def make_case(name, cfg, train, batch, tensors, meta, dtype=torch.float32):
    model = CiC(cfg)
    for mod in model.modules():
        if isinstance(mod, (nn.Conv2d, ChannelWindowConv)):
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
    # Redraw the input until the float32 comparison is well conditioned (see MARGINS).
    for _ in range(200):
        x = torch.randn(batch, 3, 32, 32, dtype=dtype)
        MARGINS.clear()
        with torch.no_grad():
            model.class_maps(x)
        if dtype == torch.float64 or min(MARGINS) > 1e-5:
            break
    else:
        raise RuntimeError(f"{name}: no well-conditioned input found")
    if train:
        # The probe pass above moved the running statistics: restore them.
        model.load_state_dict({k[len(name) + 7:]: v for k, v in tensors.items()
                               if k.startswith(f"{name}.param.")}, strict=False)
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
    torch.manual_seed(1603_06759)
    # Windows of 6 over 8 to 16 channels: every layer kind, overlapping windows, uneven starts.
    small = ([16, 12, 8], [16, 16, 16], [16, 16])
    # Batches of 2 to 4 keep the file under 500 KB.
    tensors, meta = {}, {}
    # Eval mode: dropout is off, so PyTorch and candle see the same network.
    make_case("cic_1d_small", config(10, small, 6, "channel"), False, 3, tensors, meta)
    make_case("cic_3d_small", config(100, small, 6, "channel_spatial", pool2="max"), False, 2,
              tensors, meta)
    # Train mode with batch statistics (dropout 0: masks come from different generators), in
    # float64: candle's batch norm sums in float32 where PyTorch's CPU kernel accumulates in
    # float64, so float32 gradients of the blocks below a norm differ by up to 1e-2 (see NIN's
    # fixture).
    make_case("cic_3d_bn_small", config(10, small, 5, "channel_spatial", batch_norm=True,
                                        dropout=0.0), True, 4, tensors, meta, torch.float64)
    meta["torch"] = torch.__version__
    out = os.path.join(os.path.dirname(__file__), "cic_golden.safetensors")
    save_file(tensors, out, metadata=meta)
    print(f"wrote {out}, torch {torch.__version__}")


if __name__ == "__main__":
    main()
