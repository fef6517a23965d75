"""Reference models trained here, in numpy, on the digits data scikit-learn ships.

Public API:

- :func:`orchestrator.training.data.load_split` -- the held-out split every area evaluates on;
- :func:`orchestrator.training.pipeline.train_reference` -- train, check, export and record;
- :data:`orchestrator.training.models.SPECS` -- the reference models and their graph names;
- :data:`REFERENCE_MODELS_DIR` / :func:`reference_model_path` -- the committed ONNX files.
"""

from __future__ import annotations

from pathlib import Path

from splitseal.config import PROJECT_ROOT

from .data import DEFAULT_INPUT_SIZE, DEFAULT_SEED, load_split

#: Where the committed reference models and their metrics live.
REFERENCE_MODELS_DIR = PROJECT_ROOT / "models"


def reference_model_path(name: str) -> Path:
    """Path of the committed ONNX file of reference model ``name`` (see ``models/README.md``)."""
    from .models import get_spec

    return REFERENCE_MODELS_DIR / f"{get_spec(name).name}.onnx"


def reference_metrics_path(name: str) -> Path:
    """Path of the metrics record that goes with :func:`reference_model_path`."""
    from .models import get_spec

    return REFERENCE_MODELS_DIR / f"{get_spec(name).name}.metrics.json"


__all__ = ["DEFAULT_INPUT_SIZE", "DEFAULT_SEED", "REFERENCE_MODELS_DIR", "load_split",
           "reference_metrics_path", "reference_model_path"]
