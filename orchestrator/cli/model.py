"""``splitseal model split`` and ``splitseal model inspect``.

``model split MODEL --rule RULE --out DIR`` writes ``backbone.onnx``, ``head.pkg``,
``head.index`` and ``split.json`` (every hash the registry records) after proving that backbone
followed by head equals the whole model within 1e-5 on the verification inputs: the held-out
digits test split when the model takes (N, 1, S, S) images, otherwise seeded random inputs, or
an ``.npy`` file given with ``--inputs``.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.cli import group
from splitseal.config import Config

if TYPE_CHECKING:  # onnx, onnxruntime and numpy load when a command runs, not for --help
    import numpy as np

    from orchestrator.models import ImportedModel
from splitseal.errors import InvalidInputError

from .output import emit, progress

logger = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    model = group(sub, "model", "train, import, split, inspect and provision models")

    p = model.add_parser("split", help="split a model by a protection rule into backbone + head package")
    p.add_argument("model", help="ONNX model file")
    p.add_argument("--rule", required=True, help="protection rule (TOML)")
    p.add_argument("--out", required=True, help="output directory")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--inputs", help="verification inputs: a .npy float32 array for the model's input")
    src.add_argument("--random", type=int, metavar="N", help="verify on N seeded random inputs in [0, 1)")
    src.add_argument("--dataset", choices=["digits"], help="verify on the held-out digits test split")
    p.set_defaults(func=cmd_split)

    p = model.add_parser("inspect", help="layers, parameters, sides, sizes and hashes of a model or split dir")
    p.add_argument("path", help="ONNX model file or a directory written by `model split`")
    p.add_argument("--rule", help="with a model file: show where each layer and parameter lands under this rule")
    p.set_defaults(func=cmd_inspect)

    p = model.add_parser("example-input", help="write a sample input for a model (a held-out digit), as .npy",
                         description="Write one held-out test digit, shaped for the model's input (the batch "
                                     "axis dropped), as a float32 .npy file that `splitseal infer --input` takes. "
                                     "Example: splitseal model example-input models/digits_classifier.onnx "
                                     "--out image.npy")
    p.add_argument("model", help="ONNX model file (an 8x8-digit model: 1 channel, square)")
    p.add_argument("--out", required=True, help="the .npy file to write")
    p.add_argument("--index", type=int, default=0, help="which test digit (default 0)")
    p.set_defaults(func=cmd_example_input)


def _digits_inputs(imported: "ImportedModel") -> "np.ndarray | None":
    import numpy as np

    if len(imported.inputs) != 1:
        return None
    shape = imported.inputs[0].shape
    if len(shape) != 4 or shape[1] != 1 or shape[2] != shape[3] or shape[2] is None:
        return None
    from orchestrator.training.data import load_split
    _, _, x_test, _ = load_split(input_size=int(shape[2]))
    return x_test.astype(np.float32)


def _samples(args: argparse.Namespace, imported: "ImportedModel") -> tuple[Any, str]:
    import numpy as np

    from orchestrator.models.split import random_samples

    if args.inputs:
        try:
            arr = np.load(args.inputs, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise InvalidInputError(f"--inputs {args.inputs}: cannot read a .npy array ({exc})") from None
        if arr.dtype.kind not in "biuf":
            raise InvalidInputError(f"--inputs {args.inputs}: its values are not numeric (dtype {arr.dtype})")
        return arr.astype(np.float32), f"inputs from {args.inputs}"
    if args.random is not None:
        if args.random < 1:
            raise InvalidInputError(f"--random needs at least 1 input, got {args.random}")
        return random_samples(imported, args.random), f"{args.random} seeded random inputs"
    digits = _digits_inputs(imported)
    if digits is not None:
        return digits, "held-out digits test split"
    if args.dataset:
        raise InvalidInputError("--dataset digits needs a model with one (N, 1, S, S) image input")
    return random_samples(imported, 64), "64 seeded random inputs"


def cmd_split(args: argparse.Namespace, config: Config) -> int:
    from orchestrator.models import load_model
    from orchestrator.models.inspect import inspect_path, render
    from orchestrator.models.rule import load_rule
    from orchestrator.models.split import split_model, verify_split

    progress(f"importing {args.model}")
    imported = load_model(args.model)
    rule = load_rule(args.rule)
    samples, source = _samples(args, imported)
    progress(f"splitting by rule {rule.name!r}")
    result = split_model(imported, rule, None)
    progress(f"verifying backbone + head = model on the {source} (onnxruntime and the enclave interpreter)")
    result.verification = verify_split(result, samples, source=source)
    summary = result.write(args.out, model_path=str(args.model), rule_path=str(args.rule))
    if args.json:
        emit(args, summary)
        return 0
    print(render(inspect_path(args.out)))
    print(f"\nwrote {Path(args.out) / 'backbone.onnx'}, head.pkg, head.index, rule.toml, split.json")
    return 0


def cmd_example_input(args: argparse.Namespace, config: Config) -> int:
    import numpy as np

    from orchestrator.models import load_model

    imported = load_model(args.model)
    samples = _digits_inputs(imported)
    if samples is None:
        raise InvalidInputError(f"{args.model} does not take one square 1-channel image; example inputs exist "
                                "for the digits models only (give your own .npy of the model's input shape)")
    if not 0 <= args.index < len(samples):
        raise InvalidInputError(f"--index must be 0..{len(samples) - 1}")
    try:
        np.save(args.out, samples[args.index])
    except OSError as exc:
        raise InvalidInputError(f"cannot write {args.out} ({exc.strerror or exc}); give a writable --out") from None
    spec = imported.inputs[0]
    shape = list(samples[args.index].shape)
    declared = ["N" if d is None else d for d in spec.shape]
    emit(args, {"file": str(args.out), "shape": shape, "dtype": "float32", "input": spec.name,
                "inputShape": declared, "index": args.index},
         f"wrote {args.out}: shape {tuple(shape)} float32 for input {spec.name!r} {tuple(declared)}")
    return 0


def cmd_inspect(args: argparse.Namespace, config: Config) -> int:
    from orchestrator.models.inspect import inspect_path, render

    report = inspect_path(args.path, args.rule)
    emit(args, report, render(report))
    return 1 if report.get("problems") else 0
