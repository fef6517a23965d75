"""SQLite checkpoint of a chain service: the last block processed and each request's stage.

A node killed at any moment resumes from here: blocks after ``last_block`` are read again
(processing is idempotent per request), and a request's stage says which step comes next, so
nothing is lost and nothing is submitted twice. Every write is one committed transaction; the
writes that go together (an answer and the stage it moves the request to, a request's end and
the removal of its transfer) commit together.

Durability: WAL with ``synchronous=NORMAL``. A commit survives the node process being killed at
any point (it is in the WAL, which SQLite replays); only an operating-system crash or power loss
can drop the last commits, never corrupt the file. That costs nothing in correctness: the node
then reads those blocks again, the enclave (which fsyncs each answer before it leaves) hands
out the same signed answer again, and the chain refuses a second delivery. ``FULL`` would add
an fsync to each of the commits on a request's critical path.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from enum import Enum
from pathlib import Path


class Stage(str, Enum):
    """Where a request stands for this node. The order is the order of the pipeline."""

    SEEN = "seen"                    # event read; nothing sent yet
    TRANSFERRED = "transferred"      # backbone output recorded + transfer tx mined (our claim)
    COMPLETED = "completed"          # signed result mined
    FAILED = "failed"                # failure recorded on-chain
    SKIPPED = "skipped"              # another node claimed it, or it ended on-chain without us

    @property
    def final(self) -> bool:
        return self in (Stage.COMPLETED, Stage.FAILED, Stage.SKIPPED)


@dataclass(frozen=True)
class RequestRecord:
    request_id: int
    stage: Stage
    attempts: int
    block: int
    detail: str
    updated_at: float


@dataclass(frozen=True)
class StoredTransfer:
    ciphertext: bytes
    shape: tuple[int, ...]
    dtype: str
    output_commitment: bytes


class Checkpoint:
    """Progress of one node, in one SQLite file (WAL, synchronous=NORMAL: see the module doc)."""

    def __init__(self, path: str | Path, scope: str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.scope = scope  # chain id + contract address: a checkpoint never crosses deployments
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript("""
            CREATE TABLE IF NOT EXISTS cursor (scope TEXT PRIMARY KEY, last_block INTEGER NOT NULL);
            CREATE TABLE IF NOT EXISTS requests (
                scope TEXT NOT NULL, request_id INTEGER NOT NULL, stage TEXT NOT NULL,
                attempts INTEGER NOT NULL DEFAULT 0, block INTEGER NOT NULL, detail TEXT NOT NULL DEFAULT '',
                updated_at REAL NOT NULL, PRIMARY KEY (scope, request_id));
            CREATE TABLE IF NOT EXISTS answers (
                scope TEXT NOT NULL, request_id INTEGER NOT NULL, encrypted_result BLOB NOT NULL,
                signature BLOB NOT NULL, sequence INTEGER NOT NULL, transfer_hash BLOB NOT NULL DEFAULT x'',
                public_label BLOB, PRIMARY KEY (scope, request_id));
            CREATE TABLE IF NOT EXISTS transfers (
                scope TEXT NOT NULL, request_id INTEGER NOT NULL, ciphertext BLOB NOT NULL,
                shape TEXT NOT NULL, dtype TEXT NOT NULL, commitment BLOB NOT NULL,
                PRIMARY KEY (scope, request_id));
        """)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(answers)")}
        if "transfer_hash" not in columns:  # a checkpoint written before answers named their transfer
            self._db.execute("ALTER TABLE answers ADD COLUMN transfer_hash BLOB NOT NULL DEFAULT x''")
        if "public_label" not in columns:  # written before answers could carry a public label
            self._db.execute("ALTER TABLE answers ADD COLUMN public_label BLOB")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def last_block(self, default: int) -> int:
        with self._lock:
            row = self._db.execute("SELECT last_block FROM cursor WHERE scope=?", (self.scope,)).fetchone()
        return default if row is None else int(row[0])

    def set_last_block(self, block: int) -> None:
        with self._lock:
            self._db.execute("INSERT INTO cursor(scope, last_block) VALUES(?, ?) "
                             "ON CONFLICT(scope) DO UPDATE SET last_block=excluded.last_block",
                             (self.scope, int(block)))

    def get(self, request_id: int) -> RequestRecord | None:
        with self._lock:
            row = self._db.execute(
                "SELECT request_id, stage, attempts, block, detail, updated_at FROM requests "
                "WHERE scope=? AND request_id=?", (self.scope, int(request_id))).fetchone()
        return None if row is None else RequestRecord(int(row[0]), Stage(row[1]), int(row[2]), int(row[3]),
                                                      row[4], float(row[5]))

    def see(self, request_id: int, block: int) -> RequestRecord:
        """Record a request as seen, unless it is known already; returns its record."""
        with self._lock:
            self._db.execute("INSERT OR IGNORE INTO requests(scope, request_id, stage, block, updated_at) "
                             "VALUES(?, ?, ?, ?, ?)", (self.scope, int(request_id), Stage.SEEN.value,
                                                       int(block), time.time()))
        record = self.get(request_id)
        assert record is not None
        return record

    def advance(self, request_id: int, stage: Stage, detail: str = "") -> None:
        with self._lock:
            self._advance(request_id, stage, detail)

    def _advance(self, request_id: int, stage: Stage, detail: str) -> None:
        self._db.execute("UPDATE requests SET stage=?, detail=?, updated_at=? WHERE scope=? AND request_id=?",
                         (stage.value, detail, time.time(), self.scope, int(request_id)))

    def finish(self, request_id: int, stage: Stage, detail: str = "") -> None:
        """Record the request's final stage and forget its transfer and reply, in one commit."""
        if not stage.final:
            raise ValueError(f"finish needs a final stage, got {stage.value}")
        with self._lock, self._db:
            self._db.execute("BEGIN")
            self._advance(request_id, stage, detail)
            self._drop(request_id)

    def attempt(self, request_id: int) -> int:
        """Count one more attempt at the request's next step; returns the new count."""
        with self._lock:
            self._db.execute("UPDATE requests SET attempts=attempts+1, updated_at=? WHERE scope=? AND request_id=?",
                             (time.time(), self.scope, int(request_id)))
            row = self._db.execute("SELECT attempts FROM requests WHERE scope=? AND request_id=?",
                                   (self.scope, int(request_id))).fetchone()
        return int(row[0]) if row else 0

    def store_transfer(self, request_id: int, ciphertext: bytes, shape: tuple[int, ...], dtype: str,
                       commitment: bytes) -> None:
        """Keep the exact transfer ciphertext: its hash goes on-chain, so a restarted node must
        hand the enclave these bytes, not a fresh encryption."""
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO transfers VALUES(?, ?, ?, ?, ?, ?)",
                             (self.scope, int(request_id), bytes(ciphertext),
                              ",".join(str(d) for d in shape), dtype, bytes(commitment)))

    def load_transfer(self, request_id: int) -> StoredTransfer | None:
        with self._lock:
            row = self._db.execute("SELECT ciphertext, shape, dtype, commitment FROM transfers "
                                   "WHERE scope=? AND request_id=?", (self.scope, int(request_id))).fetchone()
        if row is None:
            return None
        shape = tuple(int(d) for d in row[1].split(",") if d)
        return StoredTransfer(bytes(row[0]), shape, row[2], bytes(row[3]))

    def store_reply(self, request_id: int, encrypted_result: bytes, signature: bytes, sequence: int,
                    transfer_hash: bytes = b"", public_label: bytes | None = None, *,
                    stage: Stage | None = None) -> None:
        """Keep the enclave's signed answer, its sequence number, the transfer it answers and the
        public label it signed (None: none; the ``public_label`` policy only): a
        node that dies before submitting submits this very reply (the enclave would hand out the
        same one again, but only while it keeps it among its recent answers). With ``stage``, the
        request moves to it in the same commit."""
        with self._lock, self._db:
            self._db.execute("BEGIN")
            self._db.execute("INSERT OR REPLACE INTO answers(scope, request_id, encrypted_result, signature, "
                             "sequence, transfer_hash, public_label) VALUES(?, ?, ?, ?, ?, ?, ?)",
                             (self.scope, int(request_id), bytes(encrypted_result), bytes(signature), int(sequence),
                              bytes(transfer_hash), None if public_label is None else bytes(public_label)))
            if stage is not None:
                self._advance(request_id, stage, "")

    def load_reply(self, request_id: int) -> tuple[bytes, bytes, int, bytes, bytes | None] | None:
        """(encrypted result, signature, sequence, transfer hash (empty when not recorded),
        public label (None without one))."""
        with self._lock:
            row = self._db.execute("SELECT encrypted_result, signature, sequence, transfer_hash, public_label "
                                   "FROM answers WHERE scope=? AND request_id=?",
                                   (self.scope, int(request_id))).fetchone()
        return None if row is None else (bytes(row[0]), bytes(row[1]), int(row[2]), bytes(row[3]),
                                         None if row[4] is None else bytes(row[4]))

    def drop_transfer(self, request_id: int) -> None:
        """Forget the request's transfer and reply once it ended."""
        with self._lock, self._db:
            self._db.execute("BEGIN")
            self._drop(request_id)

    def _drop(self, request_id: int) -> None:
        self._db.execute("DELETE FROM transfers WHERE scope=? AND request_id=?", (self.scope, int(request_id)))
        self._db.execute("DELETE FROM answers WHERE scope=? AND request_id=?", (self.scope, int(request_id)))

    def pending(self) -> list[RequestRecord]:
        """Requests seen but not final, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT request_id, stage, attempts, block, detail, updated_at FROM requests "
                "WHERE scope=? AND stage IN (?, ?) ORDER BY request_id",
                (self.scope, Stage.SEEN.value, Stage.TRANSFERRED.value)).fetchall()
        return [RequestRecord(int(r[0]), Stage(r[1]), int(r[2]), int(r[3]), r[4], float(r[5])) for r in rows]

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT stage, COUNT(*) FROM requests WHERE scope=? GROUP BY stage",
                                    (self.scope,)).fetchall()
        return {stage: int(n) for stage, n in rows}
