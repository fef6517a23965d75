"""The terminal's side of a hybrid request (splitseal.protocol.hybrid): the image stays here.

1. :func:`prepare` — normalise and check the capture, split it into N input shares, draw one
   salt per share and commit to each; the manifest names the node set (its on-chain id and the
   nodes' addresses in party order) and the commitments. It goes on-chain as the request's input.
2. :func:`compute` — once the request has its id, send node i its share, its salt and the
   request's public facts (manifest, ids, the serving enclave's address and registered key); the
   nodes run the backbone on shares and each answers with its output share sealed to the enclave
   and signed. The client gets ciphertexts it cannot open.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from mpc.engine.ring import encode, share, to_bytes_u64
from splitseal.errors import InvalidInputError, ProtocolError
from splitseal.protocol import hybrid

from .cluster import MpcClient


@dataclass(frozen=True, repr=False)
class PreparedInput:
    """A capture in shares, with the salts that open the manifest's commitments (client only)."""

    manifest: hybrid.Manifest
    shares: tuple[np.ndarray, ...]
    salts: tuple[bytes, ...]

    def __repr__(self) -> str:
        return f"PreparedInput(set_id={self.manifest.set_id}, parties={self.manifest.parties})"

    @property
    def manifest_bytes(self) -> bytes:
        return self.manifest.encode()


def prepare(client: MpcClient, image: Any, set_id: int, *, model_input: bool = False) -> PreparedInput:
    """Step 1 of the module doc. ``model_input``: ``image`` is already the model's input (C, H, W),
    e.g. a face the terminal detected and aligned (mpc.client.faces.terminal_input, 0..255 for
    SFace), shared as it is instead of normalised to 0..1."""
    if model_input:
        x = np.asarray(image, dtype=np.float64)
        if x.shape != client.terminal.shape or not np.all(np.isfinite(x)):
            raise InvalidInputError(f"a model input of shape {client.terminal.shape} with finite values is needed, "
                                    f"got shape {x.shape}")
        shares = share(encode(x[None], client.terminal.f), client.terminal.n)
    else:
        shares = client._image_shares(image)
    salts = tuple(os.urandom(32) for _ in shares)
    commitments = tuple(hybrid.input_share_commitment(salt, to_bytes_u64(share)) for salt, share in zip(salts, shares))
    manifest = hybrid.Manifest(int(set_id), tuple(client.addresses()), commitments, client.terminal.f)
    return PreparedInput(manifest, tuple(shares), salts)


def compute(client: MpcClient, prepared: PreparedInput, *, request_id: int, model_id: bytes, version: int,
            enclave: str, encryption_key: bytes, chain_id: int, transfer: str
            ) -> tuple[list[dict[str, Any]], tuple[int, ...]]:
    """Step 2: the nodes' sealed output shares ``[{party, sealed, signature}]`` and their shape."""
    sid, seed = os.urandom(32).hex(), os.urandom(32).hex()
    common = {"session": sid, "seed": seed, "request_id": int(request_id), "model_id": model_id.hex(),
              "version": int(version), "enclave": enclave, "encryption_key": encryption_key.hex(),
              "manifest": prepared.manifest_bytes.hex(), "chain_id": int(chain_id), "transfer": transfer}
    metas = [{**common, "salt": salt.hex()} for salt in prepared.salts]
    answers = client._all("hybrid", metas, [[s] for s in prepared.shares])
    shapes = {tuple(a["shape"]) for a in answers}
    if len(shapes) != 1:
        raise ProtocolError(f"the nodes' output shares differ in shape ({sorted(shapes)}); the session is void")
    shares = [{"party": int(a["party"]), "sealed": bytes.fromhex(a["sealed"]),
               "signature": bytes.fromhex(a["signature"])} for a in answers]
    return shares, shapes.pop()
