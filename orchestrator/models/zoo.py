"""The model zoo: real architectures exported by torch (``scripts/setup_zoo``), and their natural cuts.

The exports live in an ignored cache (``.venv/cache/models/zoo``, or ``SPLITSEAL_ZOO_CACHE``),
one file per family and exporter: ``<family>.dynamo.onnx`` (torch's default exporter) and
``<family>.torchscript.onnx`` (``dynamo=False``). Weights are random and seeded (no hub is
reachable): they exercise the operators and the split, not accuracy.

A cut is named so that it means the same in both exporters' graphs, whose node names differ
(``/layer4/layer4.0/conv1/Conv`` against ``node_Conv_322``): by a count of weighted layers from
the end, by the k-th LayerNormalization from the end (a transformer block starts with one), or
at the tensor that enters the RNN.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from splitseal.errors import ModelError
from splitseal.onnx_import import ImportedModel

EXPORTERS = ("dynamo", "torchscript")


@dataclass(frozen=True)
class Cut:
    """A natural cut of a family: what goes into the enclave, as a rule's ``[split]`` line."""

    name: str
    what: str
    last_layers: int = 0          # protect_last_layers
    layer_norm_from_end: int = 0  # at the k-th LayerNormalization from the end
    rnn: bool = False             # at the node that feeds the (first) LSTM/GRU
    crossing: int = 1             # tensors that cross it

    def split_line(self, imported: ImportedModel) -> str:
        if self.last_layers:
            return f"protect_last_layers = {self.last_layers}"
        if self.layer_norm_from_end:
            norms = [n for n in imported.nodes if n.op_type == "LayerNormalization"]
            return f'at_node = "{norms[-self.layer_norm_from_end].name}"'
        rnn = next(n for n in imported.nodes if n.op_type in ("LSTM", "GRU"))
        return f'at_node = "{imported.producer()[rnn.input[0]].name}"'

    def rule_text(self, imported: ImportedModel, policy: str = "features") -> str:
        return (f'version = 1\n[split]\n{self.split_line(imported)}\n[protect]\nparameters = ["*"]\n'
                f'[output]\npolicy = "{policy}"\n')


#: family -> its natural cuts (each puts a real head in the enclave)
CUTS: dict[str, tuple[Cut, ...]] = {
    "resnet18": (Cut("fc", "avgpool + fc", last_layers=1),
                 Cut("layer4", "the last stage + avgpool + fc", last_layers=6),
                 Cut("in_layer4", "inside layer4: its skip and main path both cross", last_layers=5, crossing=2)),
    "mobilenet_v2": (Cut("classifier", "dropout + fc", last_layers=1),
                     Cut("last_conv", "the last 1x1 conv + BN + ReLU6 + pool + classifier", last_layers=2)),
    "efficientnet_b0": (Cut("head", "conv head + SiLU + pool + classifier", last_layers=2),
                        Cut("in_block", "inside the last MBConv (squeeze-excitation)", last_layers=4, crossing=2)),
    "squeezenet1_0": (Cut("classifier", "final conv + ReLU + pool", last_layers=1),
                      Cut("fire8", "the last Fire module + classifier", last_layers=4)),
    "vit": (Cut("last_block", "the last encoder block + LayerNorm + head", layer_norm_from_end=3),
            Cut("last_2_blocks", "the last two encoder blocks + head", layer_norm_from_end=5)),
    "arcface": (Cut("embedding", "fc + BN1d + L2 normalise", last_layers=1),
                Cut("in_layer4", "inside the last block (skip and main path cross) + embedding", last_layers=4,
                    crossing=2)),
    "crnn_lstm": (Cut("rnn", "permute + bi-LSTM + fc + log-softmax", rnn=True),),
    "crnn_gru": (Cut("rnn", "permute + bi-GRU + fc + log-softmax", rnn=True),),
}


def cache_dir() -> Path:
    env = os.environ.get("SPLITSEAL_ZOO_CACHE")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / ".venv" / "cache" / "models" / "zoo"


def manifest(root: Path | None = None) -> dict:
    path = (root or cache_dir()) / "manifest.json"
    if not path.is_file():
        return {}
    return json.loads(path.read_text())


def available(root: Path | None = None) -> bool:
    """True when every family was exported both ways."""
    root = root or cache_dir()
    return all((root / f"{f}.{e}.onnx").is_file() for f in CUTS for e in EXPORTERS)


def model_path(family: str, exporter: str, root: Path | None = None) -> Path:
    path = (root or cache_dir()) / f"{family}.{exporter}.onnx"
    if not path.is_file():
        raise ModelError(f"zoo model {path.name} is missing from {path.parent}: run scripts/setup_zoo")
    return path
