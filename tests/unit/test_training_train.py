"""Training: reproducibility, the loss goes down, convergence stops early, the CLI writes files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from orchestrator.training.data import load_split
from orchestrator.training.layers import softmax_cross_entropy
from orchestrator.training.models import build, get_spec
from orchestrator.training.train import SGD, TrainConfig, seeded_generators, train
from splitseal.errors import InvalidInputError


@pytest.fixture(scope="module")
def split():
    return load_split(16, 0)


def test_same_seed_same_weights_other_seed_other_weights(split) -> None:
    x, y = split[0][:256], split[1][:256]
    spec = get_spec("digits_classifier")
    a = train(spec, x, y, seed=5, max_iters=6, progress=False).network.training.state()
    b = train(spec, x, y, seed=5, max_iters=6, progress=False).network.training.state()
    c = train(spec, x, y, seed=6, max_iters=6, progress=False).network.training.state()
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    assert any(not np.array_equal(a[name], c[name]) for name in a)


@pytest.mark.parametrize("name", ["digits_classifier", "digits_embedding"])
def test_short_run_lowers_the_training_loss(split, name: str) -> None:
    x, y = split[0], split[1]
    spec = get_spec(name)
    init_rng, _, _ = seeded_generators(1)
    before_net = build(spec, init_rng)  # the very initialisation train() starts from
    before = softmax_cross_entropy(before_net.training.forward(x), y)[0]
    result = train(spec, x, y, seed=1, max_iters=60, progress=False)
    after = softmax_cross_entropy(result.network.training.forward(x), y)[0]
    assert result.iterations == 60
    assert after < 0.5 * before, (before, after)


def test_convergence_stops_before_the_cap(split) -> None:
    x, y = split[0][:256], split[1][:256]
    # demand a 90% improvement per epoch: the second epoch cannot deliver it, patience 1 stops
    config = TrainConfig(tol=0.9, patience=1)
    result = train(get_spec("digits_classifier"), x, y, seed=0, max_iters=1000, config=config, progress=False)
    assert result.converged and result.epochs == 2 and result.iterations == 4


def test_sgd_momentum_update_rule() -> None:
    network = build(get_spec("digits_classifier"), np.random.default_rng(0))
    model = network.training
    layer = model.layers[-1]
    for _, lyr, key in model.parameters():
        lyr.grads[key] = np.zeros_like(lyr.params[key])
    g = np.ones_like(layer.params["bias"])
    layer.grads["bias"] = g
    start = layer.params["bias"].copy()
    opt = SGD(model, learning_rate=0.1, momentum=0.9)
    opt.step()
    opt.step()  # v1 = g, v2 = 0.9 g + g = 1.9 g; total step = 0.1 * (1 + 1.9) g
    np.testing.assert_allclose(layer.params["bias"], start - 0.29 * g, rtol=1e-6)


def test_bad_arguments_are_refused(split) -> None:
    with pytest.raises(InvalidInputError):
        train(get_spec("digits_classifier"), split[0], split[1], seed=0, max_iters=0)
    with pytest.raises(InvalidInputError):
        TrainConfig(momentum=1.0)


def test_cli_train_writes_model_and_metrics(tmp_path, capsys) -> None:
    from orchestrator.cli import main

    status = main(["--config", str(_config(tmp_path)), "model", "train", "--model", "digits_embedding",
                   "--max-iters", "12", "--seed", "3", "--out", str(tmp_path / "m"), "--no-progress"])
    record = json.loads((tmp_path / "m" / "digits_embedding.metrics.json").read_text())
    data = (tmp_path / "m" / "digits_embedding.onnx").read_bytes()
    import hashlib

    assert record["sha256"] == hashlib.sha256(data).hexdigest()
    assert record["training"]["iterations"] == 12 and record["training"]["seed"] == 3
    assert record["command"].startswith("splitseal model train --model digits_embedding --seed 3 --max-iters 12")
    assert record["export_check"]["onnxruntime_max_abs_diff"] <= 1e-5
    assert 0.0 <= record["metrics"]["eer"] <= 1.0
    assert status == (0 if record["meets_target"] else 1)
    assert "digits_embedding: ROC AUC" in capsys.readouterr().out


def test_cli_rejects_bad_iteration_cap(tmp_path, capsys) -> None:
    from orchestrator.cli import main

    assert main(["--config", str(_config(tmp_path)), "model", "train", "--max-iters", "0"]) == 2
    assert "--max-iters must be at least 1" in capsys.readouterr().err


def _config(tmp_path):
    path = tmp_path / "splitseal.toml"
    path.write_text(f'home = "{tmp_path}"\n')
    return path
