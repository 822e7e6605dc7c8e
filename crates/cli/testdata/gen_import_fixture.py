"""Fixtures of `nin import`: a narrow NIN in the `nn.Sequential` layout of public PyTorch
re-implementations (numbered Conv2d/ReLU/MaxPool/Dropout, as `--map-preset sequential_nin`
expects), saved with torch.save as a plain state dict and as a training checkpoint that nests it
under `state_dict` with DataParallel's `module.` prefix, and PyTorch's logits on fixed images.

The pools are the Caffe model's (3/2, ceil mode, no padding), which nin-zoo's NIN is; several
public re-implementations pad their pools instead, and their weights then import but predict
slightly differently.

Run from the repository root (needs torch):
    python3 crates/cli/testdata/gen_import_fixture.py
"""
import json
import os

import torch
import torch.nn as nn

HERE = os.path.dirname(os.path.abspath(__file__))
WIDTHS = ([16, 12, 8], [16, 16, 16], [16, 16])
NUM_CLASSES = 10
MEAN = [0.4914, 0.4822, 0.4465]  # CIFAR-10's, as nin-data's Normalize::CIFAR10
STD = [0.2470, 0.2435, 0.2616]
N_IMAGES = 4


def sequential_nin(num_classes, widths):
    (a1, a2, a3), (b1, b2, b3), (c1, c2) = widths
    return nn.Sequential(
        nn.Conv2d(3, a1, 5, padding=2), nn.ReLU(inplace=True),  # 0, 1
        nn.Conv2d(a1, a2, 1), nn.ReLU(inplace=True),  # 2, 3
        nn.Conv2d(a2, a3, 1), nn.ReLU(inplace=True),  # 4, 5
        nn.MaxPool2d(3, 2, ceil_mode=True), nn.Dropout(0.5),  # 6, 7
        nn.Conv2d(a3, b1, 5, padding=2), nn.ReLU(inplace=True),  # 8, 9
        nn.Conv2d(b1, b2, 1), nn.ReLU(inplace=True),  # 10, 11
        nn.Conv2d(b2, b3, 1), nn.ReLU(inplace=True),  # 12, 13
        nn.AvgPool2d(3, 2, ceil_mode=True), nn.Dropout(0.5),  # 14, 15
        nn.Conv2d(b3, c1, 3, padding=1), nn.ReLU(inplace=True),  # 16, 17
        nn.Conv2d(c1, c2, 1), nn.ReLU(inplace=True),  # 18, 19
        nn.Conv2d(c2, num_classes, 1), nn.ReLU(inplace=True),  # 20, 21
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),  # 22, 23
    )


class Net(nn.Module):
    """The layout of the popular repositories: the Sequential under `features`."""

    def __init__(self):
        super().__init__()
        self.features = sequential_nin(NUM_CLASSES, WIDTHS)

    def forward(self, x):
        return self.features(x)


def pixels(n):
    """The fixed images, CHW u8: the same formula as the Rust tests' `fixed_pixels`."""
    i = torch.arange(n).view(n, 1, 1, 1)
    c = torch.arange(3).view(1, 3, 1, 1)
    y = torch.arange(32).view(1, 1, 32, 1)
    x = torch.arange(32).view(1, 1, 1, 32)
    return (i * 37 + c * 91 + y * 13 + x * 7 + (x * y) % 17) % 256


def main():
    torch.manual_seed(2026_12_01)
    net = Net()
    for mod in net.modules():
        if isinstance(mod, nn.Conv2d):
            nn.init.kaiming_normal_(mod.weight)
            nn.init.uniform_(mod.bias, 0.0, 0.2)
    net.eval()
    state = net.state_dict()
    torch.save(state, os.path.join(HERE, "seq_nin_plain.pth"))
    nested = {
        "epoch": 3,
        "best_acc": 12.5,
        "state_dict": {f"module.{k}": v for k, v in state.items()},
    }
    torch.save(nested, os.path.join(HERE, "seq_nin_nested.pth"))
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    x = (pixels(N_IMAGES).to(torch.float32) / 255.0 - mean) / std
    with torch.no_grad():
        logits = net(x)
    w1, w2, w3 = WIDTHS
    golden = {
        "torch": torch.__version__,
        "model_args": {"mlpconv1": w1, "mlpconv2": w2, "mlpconv3": w3},
        "images": N_IMAGES,
        "logits": logits.tolist(),
    }
    with open(os.path.join(HERE, "import_golden.json"), "w") as f:
        json.dump(golden, f, indent=1)
        f.write("\n")
    print(f"wrote seq_nin_plain.pth, seq_nin_nested.pth, import_golden.json (torch {torch.__version__})")


if __name__ == "__main__":
    main()
