"""Golden fixtures for nin-model-drnin: a faithful PyTorch DrNIN (our instantiation), its logits,
class maps and the gradients of one step's cross-entropy loss, plus the batch-norm running
statistics after that step, on reduced widths and depth (to keep fixtures small).

Run from the repository root:
    python3 models/drnin/testdata/gen_drnin_golden.py   # writes drnin_golden.safetensors
Each case's metadata entry holds the model config in nin-model-drnin's serde format.
"""
import json
import os
from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file


class DrMLPconv(nn.Module):
    """conv3x3-BN-ELU, conv1x1-BN-ELU, conv1x1-BN, + shortcut (identity or 1x1 conv + BN), ELU."""

    def __init__(self, cin, c, alpha):
        super().__init__()
        self.alpha = alpha
        self.conv1 = nn.Conv2d(cin, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)
        self.conv3 = nn.Conv2d(c, c, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(c)
        self.shortcut = None
        if cin != c:
            self.shortcut = nn.Sequential(OrderedDict(
                conv=nn.Conv2d(cin, c, 1, bias=False), bn=nn.BatchNorm2d(c)))

    def forward(self, x):
        y = F.elu(self.bn1(self.conv1(x)), self.alpha)
        y = F.elu(self.bn2(self.conv2(y)), self.alpha)
        y = self.bn3(self.conv3(y))
        s = x if self.shortcut is None else self.shortcut(x)
        return F.elu(y + s, self.alpha)


class DrNIN(nn.Module):
    """Three stages of DrMLPconv blocks, max pool 3/2 ceil + dropout between them, 1x1 head."""

    def __init__(self, cfg):
        super().__init__()
        alpha = cfg["activation"]["alpha"]
        cin = cfg["in_channels"]
        for s, (n, c) in enumerate(zip(cfg["blocks"], cfg["widths"])):
            blocks = []
            for _ in range(n):
                blocks.append(DrMLPconv(cin, c, alpha))
                cin = c
            self.add_module(f"stage{s + 1}", nn.Sequential(*blocks))
        self.pool = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.drop = nn.Dropout(cfg["dropout"])
        self.head = nn.Sequential(OrderedDict(conv=nn.Conv2d(cin, cfg["num_classes"], 1)))

    def class_maps(self, x):
        x = self.stage1(x)
        x = self.stage2(self.drop(self.pool(x)))
        x = self.stage3(self.drop(self.pool(x)))
        return self.head(x)

    def forward(self, x):
        return self.class_maps(x).mean((2, 3))


def config(num_classes, widths, blocks, dropout):
    return dict(num_classes=num_classes, in_channels=3, widths=widths, blocks=blocks,
                dropout=dropout, activation=dict(kind="elu", alpha=1.0),
                init=dict(kind="kaiming_normal"))


def make_case(name, cfg, train, batch, tensors, meta, dtype):
    model = DrNIN(cfg)
    for mod in model.modules():
        if isinstance(mod, nn.Conv2d):
            nn.init.kaiming_normal_(mod.weight)
            if mod.bias is not None:
                nn.init.uniform_(mod.bias, -0.1, 0.1)
        if isinstance(mod, nn.BatchNorm2d):
            nn.init.uniform_(mod.weight, 0.5, 1.5)
            nn.init.uniform_(mod.bias, -0.2, 0.2)
            # Non-trivial running statistics, so eval mode really uses them.
            mod.running_mean.uniform_(-0.3, 0.3)
            mod.running_var.uniform_(0.5, 2.0)
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
    torch.manual_seed(2021)
    tensors, meta = {}, {}
    # Widths 8, 8, 12 and blocks 2, 1, 1 (L = 4): projection shortcuts in stages 1 and 3,
    # identity ones in between.
    widths, blocks = [8, 8, 12], [2, 1, 1]
    # Eval mode: running statistics, dropout off.
    make_case("drnin_small_eval", config(10, widths, blocks, 0.5), False, 3, tensors, meta,
              torch.float32)
    # Train mode with batch statistics (dropout 0: masks come from different generators), in
    # float64 (checked to 1e-9) and float32 (nin-layers' batch norm sums in float64 as PyTorch's
    # CPU kernel does, so float32 gradients below a norm match too).
    make_case("drnin_small_train", config(7, widths, blocks, 0.0), True, 4, tensors, meta,
              torch.float64)
    make_case("drnin_small_train_f32", config(7, widths, blocks, 0.0), True, 4, tensors, meta,
              torch.float32)
    meta["torch"] = torch.__version__
    out = os.path.join(os.path.dirname(__file__), "drnin_golden.safetensors")
    save_file(tensors, out, metadata=meta)
    print(f"wrote {out}, torch {torch.__version__}")


if __name__ == "__main__":
    main()
