"""Export the model zoo: real architectures, seeded random weights, both torch ONNX exporters.

Run by ``scripts/setup_zoo`` with the torch venv (``.venv/torch``, pinned in
``models/zoo/requirements.txt``); it imports torch, torchvision and onnx only, nothing of the
project (the project's venv has no torch). Writes ``<out>/<family>.<exporter>.onnx`` for the
exporters ``dynamo`` (torch's default, through onnxscript) and ``torchscript`` (``dynamo=False``),
and ``<out>/manifest.json`` with what was exported, how long each export took and every export
that failed (with the exception), so a gap is visible instead of silently missing.

No pretrained weights (hubs are unreachable): weights are random with a fixed seed, BatchNorm
running statistics randomised too (so folding them is visible), which is what the split and the
operator checks need. Input sizes are kept small for the tests.

    .venv/torch/bin/python models/zoo/export.py --out .venv/cache/models/zoo [--only resnet18,vit]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
import warnings
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

SEED = 0
EXPORTERS = ("dynamo", "torchscript")
TORCHSCRIPT_OPSET = 17
DYNAMO_OPSET = 18


# --- architectures not in torchvision ---------------------------------------------------------

class _IBasicBlock(nn.Module):
    """The ArcFace ``iresnet`` block: BN -> conv -> BN -> PReLU -> conv(stride) -> BN, plus skip."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.prelu = nn.PReLU(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        return out + (x if self.downsample is None else self.downsample(x))


class ArcFaceEmbedder(nn.Module):
    """A narrow iresnet (ArcFace's backbone) on 3x112x112: PReLU, BN, then fc -> BN1d -> L2 normalise."""

    def __init__(self, width: int = 16, embedding: int = 128) -> None:
        super().__init__()
        w = width
        self.conv1 = nn.Conv2d(3, w, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(w)
        self.prelu = nn.PReLU(w)
        self.layer1 = _IBasicBlock(w, w, 2)          # 56
        self.layer2 = _IBasicBlock(w, 2 * w, 2)      # 28
        self.layer3 = _IBasicBlock(2 * w, 4 * w, 2)  # 14
        self.layer4 = _IBasicBlock(4 * w, 8 * w, 2)  # 7
        self.bn2 = nn.BatchNorm2d(8 * w)
        self.dropout = nn.Dropout(0.4)
        self.fc = nn.Linear(8 * w * 7 * 7, embedding)
        self.features = nn.BatchNorm1d(embedding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = torch.flatten(self.dropout(self.bn2(x)), 1)
        return F.normalize(self.features(self.fc(x)), dim=1)


class CRNN(nn.Module):
    """A text-line recogniser on 1x32x128: conv stack -> (W, N, C) sequence -> bi-RNN -> fc per step
    -> log-probabilities (N, W, classes)."""

    def __init__(self, rnn: str, classes: int = 37, hidden: int = 32) -> None:
        super().__init__()
        self.cnn = nn.Sequential(
            nn.Conv2d(1, 16, 3, 1, 1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2, 2),      # 16x64
            nn.Conv2d(16, 32, 3, 1, 1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2, 2),     # 8x32
            nn.Conv2d(32, 64, 3, 1, 1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d((2, 1), (2, 1)),  # 4x32
            nn.Conv2d(64, 64, (4, 1)), nn.BatchNorm2d(64), nn.ReLU())                           # 1x32
        cls = {"lstm": nn.LSTM, "gru": nn.GRU}[rnn]
        self.rnn = cls(64, hidden, num_layers=1, bidirectional=True)
        self.fc = nn.Linear(2 * hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.cnn(x).squeeze(2).permute(2, 0, 1)   # (W, N, C): the RNN runs time-major
        y, _ = self.rnn(f)
        return self.fc(y).log_softmax(2).permute(1, 0, 2)   # (N, W, classes), as OCR decoders read it


# --- the zoo -------------------------------------------------------------------------------------

def _torchvision_models():
    """torchvision's model definitions without its package ``__init__``.

    The PyPI torchvision wheels link their compiled ops (``_C.so``) against torch's CUDA libraries
    (``libtorch_cuda.so``), which the CPU build of torch does not ship, and ``torchvision/__init__``
    fails registering fake kernels for ops that never loaded. The model definitions are plain
    Python and need none of those ops, so the package is entered without running ``__init__``.
    """
    import importlib
    import importlib.util
    import types
    if "torchvision" not in sys.modules:
        spec = importlib.util.find_spec("torchvision")
        if spec is None or not spec.submodule_search_locations:
            raise ImportError("torchvision is not installed in this venv (scripts/setup_zoo installs it)")
        pkg = types.ModuleType("torchvision")
        pkg.__path__ = list(spec.submodule_search_locations)
        pkg.__file__, pkg.__spec__ = spec.origin, spec
        sys.modules["torchvision"] = pkg
    return importlib.import_module("torchvision.models")


def _vit() -> nn.Module:
    VisionTransformer = _torchvision_models().vision_transformer.VisionTransformer
    return VisionTransformer(image_size=32, patch_size=8, num_layers=3, num_heads=4, hidden_dim=64,
                             mlp_dim=128, num_classes=10)


def _tv(name: str, **kw) -> nn.Module:
    return getattr(_torchvision_models(), name)(weights=None, **kw)


#: family -> (constructor, input shape without the batch dimension)
ZOO = {
    "resnet18": (lambda: _tv("resnet18", num_classes=100), (3, 64, 64)),
    "mobilenet_v2": (lambda: _tv("mobilenet_v2", num_classes=100), (3, 64, 64)),
    "efficientnet_b0": (lambda: _tv("efficientnet_b0", num_classes=100), (3, 64, 64)),
    "squeezenet1_0": (lambda: _tv("squeezenet1_0", num_classes=100), (3, 64, 64)),
    "vit": (_vit, (3, 32, 32)),
    "arcface": (ArcFaceEmbedder, (3, 112, 112)),
    "crnn_lstm": (lambda: CRNN("lstm"), (1, 32, 128)),
    "crnn_gru": (lambda: CRNN("gru"), (1, 32, 128)),
}


def build(family: str) -> tuple[nn.Module, torch.Tensor]:
    ctor, shape = ZOO[family]
    torch.manual_seed(SEED)
    model = ctor()
    gen = torch.Generator().manual_seed(SEED + 1)
    for m in model.modules():   # non-trivial BN statistics, so folding errors would show
        if isinstance(m, nn.Linear) and not m.weight.any():   # torchvision's ViT zeroes its head
            nn.init.normal_(m.weight, std=0.05, generator=gen)
            nn.init.normal_(m.bias, std=0.05, generator=gen)
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
    model.eval()
    x = torch.rand((2,) + shape, generator=gen)
    return model, x


def export(family: str, exporter: str, out: Path) -> dict:
    model, x = build(family)
    path = out / f"{family}.{exporter}.onnx"
    t0 = time.perf_counter()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if exporter == "dynamo":
            batch = torch.export.Dim("batch", min=1, max=1024)
            program = torch.onnx.export(model, (x,), dynamo=True, input_names=["input"], output_names=["output"],
                                        dynamic_shapes=({0: batch},), opset_version=DYNAMO_OPSET,
                                        optimize=True, verbose=False)
            program.save(str(path))
        else:
            torch.onnx.export(model, (x,), str(path), dynamo=False, input_names=["input"], output_names=["output"],
                              dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
                              opset_version=TORCHSCRIPT_OPSET, do_constant_folding=True)
    seconds = time.perf_counter() - t0
    import onnx
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    ops = sorted({n.op_type for n in proto.graph.node})
    return {"file": path.name, "family": family, "exporter": exporter, "seconds": round(seconds, 2),
            "input_shape": [None, *ZOO[family][1]], "opset": next(i.version for i in proto.opset_import
                                                                     if i.domain in ("", "ai.onnx")),
            "nodes": len(proto.graph.node), "ops": ops}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--only", default="", help="comma-separated families (default: all)")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    families = [f for f in args.only.split(",") if f] or list(ZOO)
    torch.set_num_threads(1)
    # nn.MultiheadAttention's inference fast path is one fused aten op that the TorchScript
    # exporter cannot write; the unfused path computes the same and exports as plain ops
    torch.backends.mha.set_fastpath_enabled(False)
    exported, failed = [], []
    t0 = time.perf_counter()
    for family in families:
        for exporter in EXPORTERS:
            try:
                entry = export(family, exporter, args.out)
                exported.append(entry)
                print(f"zoo: {entry['file']} ({entry['nodes']} nodes, {entry['seconds']} s)", flush=True)
            except Exception as exc:  # recorded and reported: the manifest says which export failed and why
                failed.append({"family": family, "exporter": exporter,
                               "error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"})
                traceback.print_exc(file=sys.stderr)
    manifest = {"torch": torch.__version__, "seed": SEED, "exported": exported, "failed": failed,
                "seconds": round(time.perf_counter() - t0, 1)}
    (args.out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"zoo: {len(exported)} exports in {manifest['seconds']} s", flush=True)
    if failed:
        print(f"zoo: {len(failed)} export(s) failed: {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
