"""``splitseal model train``: retrain the reference models from scratch."""

from __future__ import annotations

import argparse
import logging

from orchestrator.cli import group
from splitseal.config import Config
from splitseal.errors import InvalidInputError

from .output import emit

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    from orchestrator.training.data import DEFAULT_SEED
    from orchestrator.training.models import SPECS

    models = group(sub, "model", "train, import, split and inspect models")
    p = models.add_parser(
        "train", help="train the reference models on the digits data and export them to ONNX",
        description="Train the reference models in numpy (mini-batch SGD, lr 0.1, momentum 0.9) "
                    "on scikit-learn's digits, evaluate them on the held-out split, export ONNX "
                    "and write <name>.onnx and <name>.metrics.json into --out.")
    p.add_argument("--model", choices=[*SPECS, "all"], default="all", help="which model (default: all)")
    p.add_argument("--out", default="models", help="output directory, relative to home (default: models)")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help="training seed (default: 0)")
    p.add_argument("--split-seed", type=int, default=DEFAULT_SEED,
                   help="seed of the stratified train/test split (default: 0, the reference split)")
    p.add_argument("--max-iters", type=int, default=None,
                   help="iteration cap (default: the model's reference cap)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_train)


def _train(args: argparse.Namespace, config: Config) -> int:
    from orchestrator.training.models import SPECS
    from orchestrator.training.pipeline import train_reference

    if args.max_iters is not None and args.max_iters < 1:
        raise InvalidInputError(f"--max-iters must be at least 1, got {args.max_iters}")
    names = list(SPECS) if args.model == "all" else [args.model]
    out = config.path(args.out)
    out.mkdir(parents=True, exist_ok=True)  # an unusable --out fails now, not after the training
    records = []
    for name in names:
        record = train_reference(name, out, seed=args.seed, split_seed=args.split_seed,
                                 max_iters=args.max_iters, progress=not args.no_progress,
                                 out_label=args.out)
        records.append({**record, "path": str(out / record["file"])})
        if not args.json:
            print(_summary(record, out))
    emit(args, {"models": records})
    return 0 if all(r["meets_target"] for r in records) else 1


def _summary(record: dict, out) -> str:
    name, m = record["model"], record["metrics"]
    quality = (f"test accuracy {m['test_accuracy']:.4f}" if record["kind"] == "classifier" else
               f"ROC AUC {m['roc_auc']:.4f}, EER {m['eer']:.4f} at cosine threshold {m['threshold']:.4f}")
    line = (f"{name}: {quality}; {record['training']['iterations']} iterations in "
            f"{record['training']['seconds']:.1f} s -> {out / record['file']} (sha256 {record['sha256'][:16]}...)")
    if not record["meets_target"]:
        line += f"\n{name}: below the target {record['targets']}; try another --seed or a higher --max-iters"
    return line
