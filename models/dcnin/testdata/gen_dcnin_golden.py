"""Golden fixtures for nin-model-dcnin: a faithful PyTorch DcNIN (our instantiation), its logits,
class maps and the gradients of one step's cross-entropy loss, plus the batch-norm running
statistics after that step, on a reduced growth rate and depth (to keep fixtures small).

Run from the repository root:
    python3 models/dcnin/testdata/gen_dcnin_golden.py   # writes dcnin_golden.safetensors
Each case's metadata entry holds the model config in nin-model-dcnin's serde format.
"""
import json
import os

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file


class BnReluConv(nn.Module):
    """Pre-activation unit: BN, ReLU, conv (names `bn`, `conv`)."""

    def __init__(self, cin, cout, kernel, bias):
        super().__init__()
        self.bn = nn.BatchNorm2d(cin)
        self.conv = nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=bias)

    def forward(self, x):
        return self.conv(F.relu(self.bn(x)))


class DenseUnit(nn.Module):
    """BN-ReLU-conv3x3 -> 2g, BN-ReLU-conv1x1 -> g."""

    def __init__(self, cin, g):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, 2 * g, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(2 * g)
        self.conv2 = nn.Conv2d(2 * g, g, 1, bias=False)

    def forward(self, x):
        y = self.conv1(F.relu(self.bn1(x)))
        return self.conv2(F.relu(self.bn2(y)))


class Stem(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1, bias=False)

    def forward(self, x):
        return self.conv(x)


class DcNIN(nn.Module):
    """Stem, three dense stages with halving transitions + avg pool 2x2, BN-ReLU-conv1x1 head."""

    def __init__(self, cfg):
        super().__init__()
        g = cfg["growth"]
        self.stem = Stem(cfg["in_channels"], 2 * g)
        c = 2 * g
        for s, n in enumerate(cfg["units"]):
            self.add_module(f"stage{s + 1}", nn.ModuleList(DenseUnit(c + j * g, g) for j in range(n)))
            c += n * g
            if s < 2:
                self.add_module(f"trans{s + 1}", BnReluConv(c, c // 2, 1, bias=False))
                c //= 2
        self.head = BnReluConv(c, cfg["num_classes"], 1, bias=True)
        self.drop = nn.Dropout(cfg["dropout"])

    def class_maps(self, x):
        x = self.stem(x)
        for s in range(3):
            feats = [x]
            for unit in getattr(self, f"stage{s + 1}"):
                feats.append(self.drop(unit(torch.cat(feats, 1))))
            x = torch.cat(feats, 1)
            if s < 2:
                x = F.avg_pool2d(getattr(self, f"trans{s + 1}")(x), 2)
        return self.head(x)

    def forward(self, x):
        return self.class_maps(x).mean((2, 3))


def config(num_classes, growth, units, dropout):
    return dict(num_classes=num_classes, in_channels=3, growth=growth, units=units,
                dropout=dropout, init=dict(kind="kaiming_normal"))


def make_case(name, cfg, train, batch, tensors, meta, dtype):
    model = DcNIN(cfg)
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
    torch.manual_seed(2025)
    tensors, meta = {}, {}
    # g = 3, units 3, 2, 2: stage outputs 15 and 13 channels, so the transitions halve odd
    # widths (to 7 and 6).
    growth, units = 3, [3, 2, 2]
    make_case("dcnin_small_eval", config(10, growth, units, 0.0), False, 3, tensors, meta,
              torch.float32)
    # Train mode with batch statistics in float64 (see gen_nin_golden.py for why).
    make_case("dcnin_small_train", config(7, growth, units, 0.0), True, 4, tensors, meta,
              torch.float64)
    meta["torch"] = torch.__version__
    out = os.path.join(os.path.dirname(__file__), "dcnin_golden.safetensors")
    save_file(tensors, out, metadata=meta)
    print(f"wrote {out}, torch {torch.__version__}")


if __name__ == "__main__":
    main()
