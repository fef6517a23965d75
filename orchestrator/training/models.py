"""The two reference architectures and the names their ONNX graphs use.

Names matter: protection rules refer to nodes, tensors and parameters by name. Every layer is
an ONNX node of the same name; its parameters are initializers ``<node>.weight`` /
``<node>.bias``; its output tensor is ``<node>.out``, except the model output (``probabilities``
or ``embedding``). The graph input is ``image``: float32 [N, 1, 16, 16], values 0..1.

``digits_classifier``::

    backbone.block1.conv (Conv 3x3, 1->16, pad 1) -> backbone.block1.relu -> backbone.block1.pool
    backbone.block2.conv (Conv 3x3, 16->32, pad 1) -> backbone.block2.relu -> backbone.block2.pool
    backbone.flatten (Flatten, 512)
    neck.fc (Gemm 512->64) -> neck.relu
    head.fc (Gemm 64->10, the logits) -> head.softmax (Softmax) => probabilities [N, 10]

``digits_embedding`` (kept to Conv / Relu / MaxPool / Flatten / Gemm, for the MPC nodes)::

    backbone.block1.conv (Conv 3x3, 1->8, pad 1) -> backbone.block1.relu -> backbone.block1.pool
    backbone.block2.conv (Conv 3x3, 8->16, pad 1) -> backbone.block2.relu -> backbone.block2.pool
    backbone.flatten (Flatten, 256)
    neck.fc (Gemm 256->64) -> neck.relu
    head.fc (Gemm 64->32) => embedding [N, 32]  (compare with cosine similarity)

During training the embedding model carries an extra cosine-softmax classifier
(``train.cosine``) after ``head.fc``; it exists only to shape the feature space and is dropped
before export.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from splitseal.errors import ModelError

from .data import DEFAULT_INPUT_SIZE, NUM_CLASSES
from .layers import Conv2d, CosineClassifier, Flatten, Layer, Linear, MaxPool2d, ReLU, Sequential, Softmax

INPUT_NAME = "image"


@dataclass(frozen=True)
class ModelSpec:
    """What distinguishes the reference models: kind, sizes, output and default budget."""

    name: str
    kind: str  # "classifier" or "embedding"
    output_name: str
    output_dim: int
    description: str
    input_size: int = DEFAULT_INPUT_SIZE
    channels: tuple[int, int] = (8, 16)
    hidden: int = 64
    max_iters: int = 4000


SPECS: dict[str, ModelSpec] = {
    "digits_classifier": ModelSpec(
        name="digits_classifier", kind="classifier", output_name="probabilities",
        output_dim=NUM_CLASSES, channels=(16, 32),
        description="Handwritten digit classifier: conv/relu/maxpool backbone, fully connected "
                    "neck, Gemm + Softmax head; output class probabilities."),
    "digits_embedding": ModelSpec(
        name="digits_embedding", kind="embedding", output_name="embedding", output_dim=32,
        description="Handwritten digit embedding: conv/relu/maxpool backbone, fully connected "
                    "neck and head; output a 32-d feature vector compared by cosine similarity."),
}


def get_spec(name: str) -> ModelSpec:
    """The spec of a reference model by name, or a clear error listing the known ones."""
    try:
        return SPECS[name]
    except KeyError:
        raise ModelError(f"unknown reference model {name!r}; known: {sorted(SPECS)}") from None


@dataclass
class Network:
    """A reference network: ``body`` is trained and exported; ``tail`` is appended only in the
    exported graph (the classifier's Softmax); ``train_head`` only during training."""

    spec: ModelSpec
    body: list[Layer]
    tail: list[Layer]
    train_head: list[Layer]

    @property
    def training(self) -> Sequential:
        """The chain whose output feeds the cross-entropy loss."""
        return Sequential(self.body + self.train_head)

    @property
    def exported(self) -> Sequential:
        """The chain that the ONNX file contains."""
        return Sequential(self.body + self.tail)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """The exported model's output, computed in numpy (the reference for the export check)."""
        return self.exported.forward(x, train=False)


def build(spec: ModelSpec, rng: np.random.Generator) -> Network:
    """A freshly initialised network for ``spec``; all randomness comes from ``rng``."""
    c1, c2 = spec.channels
    side = spec.input_size
    if side % 4:
        raise ModelError(f"{spec.name}: input size {side} must be a multiple of 4 (two 2x2 poolings)")
    flat = c2 * (side // 4) ** 2
    body: list[Layer] = [
        Conv2d("backbone.block1.conv", 1, c1, 3, rng, padding=1, input_grad=False),
        ReLU("backbone.block1.relu"),
        MaxPool2d("backbone.block1.pool", 2),
        Conv2d("backbone.block2.conv", c1, c2, 3, rng, padding=1),
        ReLU("backbone.block2.relu"),
        MaxPool2d("backbone.block2.pool", 2),
        Flatten("backbone.flatten"),
        Linear("neck.fc", flat, spec.hidden, rng),
        ReLU("neck.relu"),
        Linear("head.fc", spec.hidden, spec.output_dim, rng),
    ]
    if spec.kind == "classifier":
        return Network(spec, body, [Softmax("head.softmax")], [])
    if spec.kind == "embedding":
        return Network(spec, body, [], [CosineClassifier("train.cosine", spec.output_dim, NUM_CLASSES, rng)])
    raise ModelError(f"{spec.name}: unknown model kind {spec.kind!r}")
