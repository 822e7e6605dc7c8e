"""PyTorch's side of the export check: loads each repository `nin export` wrote under
crates/cli/testdata/export/ into the PyTorch reference module of its family with strict=True,
and writes the logits of fixed images as export_golden.json.

The repositories themselves are written by the Rust test (crates/cli/tests/export.rs) with
NIN_BLESS_EXPORT=1; the test then checks that `nin export` still writes exactly those tensors and
that nin-zoo's classifier gives these logits on them.

Run from the repository root (needs torch and safetensors):
    NIN_BLESS_EXPORT=1 cargo test -p nin-cli --test tests export::
    python3 crates/cli/testdata/gen_export_fixture.py
"""
import importlib.util
import json
import os

import torch
from safetensors.torch import load_file

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", "..", ".."))
REFERENCE = {
    "nin": ("models/nin/testdata/gen_nin_golden.py", "NIN"),
    "nin_bn": ("models/nin/testdata/gen_nin_golden.py", "NIN"),
    "dcnin_s": ("models/dcnin/testdata/gen_dcnin_golden.py", "DcNIN"),
}
N_IMAGES = 4


def reference_class(preset):
    script, name = REFERENCE[preset]
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, script))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, name)


def pixels(n):
    """The fixed images, CHW u8: the same formula as the Rust test's `fixed_pixels`."""
    i = torch.arange(n).view(n, 1, 1, 1)
    c = torch.arange(3).view(1, 3, 1, 1)
    y = torch.arange(32).view(1, 1, 32, 1)
    x = torch.arange(32).view(1, 1, 1, 32)
    return (i * 37 + c * 91 + y * 13 + x * 7 + (x * y) % 17) % 256


def inputs(config, n):
    cfg = config["pretrained_cfg"]
    assert "whitening" not in cfg, "the fixtures are normalised by mean/std"
    mean = torch.tensor(cfg["mean"], dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(cfg["std"], dtype=torch.float32).view(1, 3, 1, 1)
    return (pixels(n).to(torch.float32) / 255.0 - mean) / std


def main():
    export_dir = os.path.join(HERE, "export")
    golden = {"torch": torch.__version__, "images": N_IMAGES, "models": {}}
    for name in sorted(os.listdir(export_dir)):
        repo = os.path.join(export_dir, name)
        if not os.path.isdir(repo):
            continue
        config = json.load(open(os.path.join(repo, "config.json")))
        model = reference_class(config["model"])(config["model_args"])
        state = load_file(os.path.join(repo, "model.safetensors"))
        model.load_state_dict(state, strict=True)  # raises on any missing or unexpected name
        model.eval()
        with torch.no_grad():
            logits = model(inputs(config, N_IMAGES))
        golden["models"][name] = {"logits": logits.tolist(), "tensors": len(state)}
        print(f"{name}: {config['model']} loaded with strict=True ({len(state)} tensors)")
    with open(os.path.join(HERE, "export_golden.json"), "w") as f:
        json.dump(golden, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
