"""One MPC node's own SQLite store: its model (shares or plaintext kernels) and its
feature-vector shares per subject.

Enrolment is two-phase so that nothing is half-stored: :meth:`NodeStore.stage` writes the share
as *pending* (invisible to recognition), :meth:`NodeStore.commit` makes it enrolled once every
node (and, when configured, the chain) succeeded, :meth:`NodeStore.discard` drops it otherwise.
Each step is one SQLite transaction. The commitment salt stays here and never leaves the node.
"""

from __future__ import annotations

import io
import json
import logging
import sqlite3
import time
from pathlib import Path

import numpy as np

from mpc.engine.protocol import Layer, NodeModel
from splitseal.errors import InvalidInputError

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS model (id INTEGER PRIMARY KEY CHECK (id = 1), manifest TEXT NOT NULL,
                                  arrays BLOB NOT NULL, installed REAL NOT NULL);
CREATE TABLE IF NOT EXISTS masked_weights (model_id TEXT PRIMARY KEY, arrays BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS subjects (
    subject TEXT PRIMARY KEY, share BLOB NOT NULL, dim INTEGER NOT NULL, salt BLOB NOT NULL,
    commitment BLOB NOT NULL, state TEXT NOT NULL CHECK (state IN ('pending', 'enrolled')),
    session TEXT NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS decisions (
    session TEXT PRIMARY KEY, kind TEXT NOT NULL, subject TEXT, accepted INTEGER NOT NULL,
    probe_commitment BLOB NOT NULL, created REAL NOT NULL);
"""


def _pack(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _unpack(blob: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(blob), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def model_to_blobs(model: NodeModel) -> tuple[str, dict[str, np.ndarray]]:
    """(manifest JSON, arrays) — the wire and storage form of a node's model (no pickle)."""
    layers = []
    arrays: dict[str, np.ndarray] = {}
    for i, la in enumerate(model.layers):
        layers.append({"op": la.op, "params": la.params, "w": la.weight is not None, "b": la.bias is not None})
        if la.weight is not None:
            arrays[f"w{i}"] = la.weight
        if la.bias is not None:
            arrays[f"b{i}"] = la.bias
    manifest = {"input_shape": list(model.input_shape), "shared": model.shared, "model_id": model.model_id,
                "frac_bits": model.frac_bits, "weight_frac_bits": model.weight_frac_bits, "layers": layers}
    return json.dumps(manifest), arrays


def model_from_blobs(manifest: str, arrays: dict[str, np.ndarray]) -> NodeModel:
    m = json.loads(manifest)
    layers = [Layer(la["op"], arrays.get(f"w{i}") if la["w"] else None,
                    arrays.get(f"b{i}") if la["b"] else None, dict(la["params"]))
              for i, la in enumerate(m["layers"])]
    model = NodeModel(tuple(m["input_shape"]), layers, bool(m["shared"]), int(m["frac_bits"]),
                      str(m.get("model_id", "")), int(m.get("weight_frac_bits", m["frac_bits"])))
    model.validate()
    return model


class NodeStore:
    """The node's SQLite database (one file per node; no other node reads it)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    # --- model ---------------------------------------------------------------------------

    def install_model(self, model: NodeModel) -> None:
        manifest, arrays = model_to_blobs(model)
        with self._tx():
            self._db.execute("INSERT OR REPLACE INTO model (id, manifest, arrays, installed) VALUES (1, ?, ?, ?)",
                             (manifest, _pack(arrays), time.time()))

    def model(self) -> NodeModel:
        row = self._db.execute("SELECT manifest, arrays FROM model WHERE id = 1").fetchone()
        if row is None:
            raise InvalidInputError("no model installed on this node; run `splitseal mpc up` with a model")
        return model_from_blobs(row[0], _unpack(row[1]))

    def save_masked_weights(self, model_id: str, masked: dict[int, np.ndarray]) -> None:
        """The opened ``W - B`` of every shared weight (public to the nodes; see Session.mask_weights)."""
        with self._tx():
            self._db.execute("DELETE FROM masked_weights")
            self._db.execute("INSERT INTO masked_weights VALUES (?, ?)",
                             (model_id, _pack({str(k): v for k, v in masked.items()})))

    def masked_weights(self, model_id: str) -> dict[int, np.ndarray] | None:
        row = self._db.execute("SELECT arrays FROM masked_weights WHERE model_id = ?", (model_id,)).fetchone()
        return None if row is None else {int(k): v for k, v in _unpack(row[0]).items()}

    def has_model(self) -> bool:
        return self._db.execute("SELECT 1 FROM model WHERE id = 1").fetchone() is not None

    # --- subjects ---------------------------------------------------------------------------

    def stage(self, subject: str, share: np.ndarray, salt: bytes, commitment: bytes, session: str) -> None:
        """Write a pending enrolment; refuses a subject already enrolled or pending."""
        share = np.ascontiguousarray(share, dtype="<u8").reshape(-1)
        with self._tx():
            row = self._db.execute("SELECT state FROM subjects WHERE subject = ?", (subject,)).fetchone()
            if row is not None:
                raise InvalidInputError(f"subject {subject!r} is already {row[0]} on this node; "
                                        "choose another id")
            self._db.execute("INSERT INTO subjects VALUES (?, ?, ?, ?, ?, 'pending', ?, ?)",
                             (subject, share.tobytes(), share.size, salt, commitment, session, time.time()))

    def commit(self, session: str) -> int:
        with self._tx():
            return self._db.execute("UPDATE subjects SET state = 'enrolled' WHERE session = ? AND state = 'pending'",
                                    (session,)).rowcount

    def discard(self, session: str) -> int:
        with self._tx():
            return self._db.execute("DELETE FROM subjects WHERE session = ? AND state = 'pending'",
                                    (session,)).rowcount

    def share(self, subject: str) -> np.ndarray | None:
        row = self._db.execute("SELECT share FROM subjects WHERE subject = ? AND state = 'enrolled'",
                               (subject,)).fetchone()
        return None if row is None else np.frombuffer(row[0], dtype="<u8").astype(np.uint64)

    def gallery(self) -> tuple[list[str], np.ndarray]:
        """Every enrolled subject, sorted by id (all nodes list them in the same order)."""
        rows = self._db.execute("SELECT subject, share, dim FROM subjects WHERE state = 'enrolled' "
                                "ORDER BY subject").fetchall()
        if not rows:
            return [], np.zeros((0, 0), dtype=np.uint64)
        return [r[0] for r in rows], np.stack([np.frombuffer(r[1], dtype="<u8").astype(np.uint64) for r in rows])

    def subject_states(self) -> dict[str, str]:
        return dict(self._db.execute("SELECT subject, state FROM subjects").fetchall())

    def salt_and_commitment(self, subject: str) -> tuple[bytes, bytes] | None:
        row = self._db.execute("SELECT salt, commitment FROM subjects WHERE subject = ?", (subject,)).fetchone()
        return None if row is None else (bytes(row[0]), bytes(row[1]))

    def record_decision(self, session: str, kind: str, subject: str | None, accepted: bool,
                        probe_commitment: bytes) -> None:
        with self._tx():
            self._db.execute("INSERT OR REPLACE INTO decisions VALUES (?, ?, ?, ?, ?, ?)",
                             (session, kind, subject, int(accepted), probe_commitment, time.time()))

    def _tx(self):
        db = self._db

        class _Tx:
            def __enter__(self_inner):
                db.execute("BEGIN IMMEDIATE")

            def __exit__(self_inner, exc_type, exc, tb):
                db.execute("COMMIT" if exc_type is None else "ROLLBACK")
                return False

        return _Tx()
