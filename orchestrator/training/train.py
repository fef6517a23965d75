"""Mini-batch SGD training of the reference models, as the split-inference text describes.

Learning rate 0.1, momentum 0.9, multi-class cross-entropy, batches reshuffled every epoch,
training-time augmentation (random horizontal flip and shear). Training stops when the epoch
loss has converged (no relative improvement of more than ``tol`` over the best epoch for
``patience`` epochs) or at the iteration cap. All randomness (initialisation, shuffling,
augmentation) derives from one seed, so a run is reproducible.

At a constant rate of 0.1 with momentum 0.9 the weights keep bouncing around the minimum, so
the final weights are an exponential moving average of the iterates (Polyak averaging): it
costs nothing, leaves the SGD recipe unchanged, and removes most of the run-to-run spread of
the test accuracy.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from splitseal.errors import InvalidInputError, ModelError

from .data import Augmentation
from .layers import Sequential, softmax_cross_entropy
from .models import ModelSpec, Network, build

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters. The defaults are the ones the reference models were trained with."""

    learning_rate: float = 0.1
    momentum: float = 0.9
    batch_size: int = 128
    #: L2 penalty on weights (not biases), added to their gradients.
    weight_decay: float = 5e-4
    #: Linear learning-rate warm-up over the first iterations: with lr 0.1 and momentum 0.9
    #: from a random start the first steps otherwise overshoot; after it the rate is 0.1.
    warmup_iters: int = 100
    #: Global gradient-norm clip: a cap on single steps, so a rare bad batch cannot throw the
    #: weights far (None: no clipping).
    grad_clip: float | None = 5.0
    #: Decay of the per-iteration exponential moving average of the weights that becomes the
    #: result (None: keep the last iterate).
    ema_decay: float | None = 0.995
    #: Convergence: relative improvement of the epoch loss that counts as progress.
    tol: float = 0.01
    #: Convergence: epochs without progress before stopping.
    patience: int = 50
    augmentation: Augmentation = field(default_factory=Augmentation)

    def __post_init__(self) -> None:
        if self.learning_rate <= 0 or not 0 <= self.momentum < 1 or self.batch_size < 1:
            raise InvalidInputError("learning_rate must be > 0, momentum in [0, 1), batch_size >= 1")
        if self.ema_decay is not None and not 0 <= self.ema_decay < 1:
            raise InvalidInputError(f"ema_decay must be in [0, 1) or None, got {self.ema_decay}")
        if self.weight_decay < 0 or self.patience < 1:
            raise InvalidInputError("weight_decay must be >= 0 and patience >= 1")


class SGD:
    """Mini-batch SGD with classical momentum: v <- mu v + g (+ wd p); p <- p - lr v."""

    def __init__(self, model: Sequential, learning_rate: float, momentum: float,
                 weight_decay: float = 0.0) -> None:
        self.model = model
        self.learning_rate = learning_rate
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.velocity = {name: np.zeros_like(layer.params[key]) for name, layer, key in model.parameters()}

    def step(self, learning_rate: float | None = None) -> None:
        lr = self.learning_rate if learning_rate is None else learning_rate
        for name, layer, key in self.model.parameters():
            p, v = layer.params[key], self.velocity[name]
            v *= self.momentum
            v += layer.grads[key]
            if self.weight_decay and key == "weight":
                v += self.weight_decay * p
            p -= lr * v


def clip_gradients(model: Sequential, max_norm: float) -> float:
    """Scale all gradients down together so their global L2 norm is at most ``max_norm``."""
    total = float(np.sqrt(sum(float((layer.grads[key].astype(np.float64) ** 2).sum())
                              for _, layer, key in model.parameters())))
    if total > max_norm:
        scale = max_norm / total
        for _, layer, key in model.parameters():
            layer.grads[key] *= np.asarray(scale, dtype=layer.grads[key].dtype)
    return total


@dataclass
class TrainResult:
    """The trained network and how the run went."""

    network: Network
    iterations: int
    epochs: int
    converged: bool
    epoch_losses: list[float]
    seconds: float


def seeded_generators(seed: int) -> tuple[np.random.Generator, np.random.Generator, np.random.Generator]:
    """Independent generators for initialisation, shuffling and augmentation from one seed."""
    init, shuffle, augment = np.random.SeedSequence(int(seed)).spawn(3)
    return np.random.default_rng(init), np.random.default_rng(shuffle), np.random.default_rng(augment)


def train(spec: ModelSpec, x: np.ndarray, y: np.ndarray, *, seed: int, max_iters: int,
          config: TrainConfig | None = None, progress: bool = True) -> TrainResult:
    """Train a fresh network for ``spec`` on ``(x, y)``; deterministic given ``seed``.

    Runs with one BLAS thread: the matrices are small, and the summation order (hence the
    weights, bit for bit) then no longer depends on the number of cores or how busy they are.
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        return _train(spec, x, y, seed=seed, max_iters=max_iters, config=config or TrainConfig(),
                      progress=progress)


def _train(spec: ModelSpec, x: np.ndarray, y: np.ndarray, *, seed: int, max_iters: int,
           config: TrainConfig, progress: bool) -> TrainResult:
    if max_iters < 1:
        raise InvalidInputError(f"max_iters must be at least 1, got {max_iters}")
    if len(x) != len(y) or len(x) == 0:
        raise InvalidInputError(f"need as many labels as images, got {len(x)} images and {len(y)} labels")
    init_rng, shuffle_rng, aug_rng = seeded_generators(seed)
    network = build(spec, init_rng)
    model = network.training
    opt = SGD(model, config.learning_rate, config.momentum, config.weight_decay)
    average = model.state() if config.ema_decay is not None else None
    x = np.asarray(x, dtype=np.float32)
    y = np.asarray(y)
    n = len(x)
    start = time.perf_counter()
    iteration, epoch, converged = 0, 0, False
    best, stale = np.inf, 0
    losses: list[float] = []
    bar = tqdm(total=max_iters, desc=f"train {spec.name}", unit="it", disable=not progress, leave=False)
    try:
        while iteration < max_iters and not converged:
            order = shuffle_rng.permutation(n)
            epoch_loss, seen = 0.0, 0
            for lo in range(0, n, config.batch_size):
                if iteration >= max_iters:
                    break
                idx = order[lo:lo + config.batch_size]
                xb = config.augmentation.apply(x[idx], aug_rng)
                loss, grad = softmax_cross_entropy(model.forward(xb, train=True), y[idx])
                if not np.isfinite(loss):
                    raise ModelError(f"{spec.name}: training diverged at iteration {iteration} "
                                     f"(loss {loss}); try another seed or a smaller learning rate")
                model.backward(grad)
                if config.grad_clip is not None:
                    clip_gradients(model, config.grad_clip)
                warm = min(1.0, (iteration + 1) / config.warmup_iters) if config.warmup_iters else 1.0
                opt.step(config.learning_rate * warm)
                if average is not None:
                    _update_average(average, model, config.ema_decay, iteration)
                epoch_loss += loss * len(idx)
                seen += len(idx)
                iteration += 1
                bar.update(1)
            epoch += 1
            mean = epoch_loss / max(seen, 1)
            losses.append(mean)
            bar.set_postfix(epoch=epoch, loss=f"{mean:.4f}")
            if mean < best * (1.0 - config.tol):
                stale = 0
            else:
                stale += 1
            best = min(best, mean)
            converged = stale >= config.patience
    finally:
        bar.close()
    if average is not None:
        model.load_state(average)
    seconds = time.perf_counter() - start
    log.info("trained model=%s iterations=%d epochs=%d converged=%s loss=%.4f seconds=%.1f",
             spec.name, iteration, epoch, converged, losses[-1], seconds)
    return TrainResult(network, iteration, epoch, converged, losses, seconds)


def _update_average(average: dict[str, np.ndarray], model: Sequential, decay: float, iteration: int) -> None:
    """EMA of the weights, with the usual warm start (decay grows from 0 to ``decay``)."""
    d = min(decay, (1.0 + iteration) / (10.0 + iteration))
    for name, layer, key in model.parameters():
        a = average[name]
        a *= d
        a += (1.0 - d) * layer.params[key]
