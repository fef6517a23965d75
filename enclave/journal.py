"""The answer journal's file: length-prefixed sealed records appended to one epoch's file.

:class:`EnclaveCore` seals each answer's record (``enclave.core``); this module only writes the
bytes and makes them durable, in one of three modes (``[enclave] answer_durability``):

``fsync``
    each record is fsynced before the answer leaves: an answer that left survives a power loss.
``background`` (the default)
    each record reaches the OS before the answer leaves (a killed enclave loses nothing) and a
    flusher thread fsyncs it right after the reply is sent (``kick``; at the latest
    :data:`FLUSH_INTERVAL` later), while the node is still sending the delivery transaction: only a power loss within that flush (milliseconds) can lose a record, the same
    window the node's own checkpoint has (SQLite WAL, ``synchronous=NORMAL``).
``write``
    the OS writes the records back in its own time (seconds).

A lost record is never an answer off the record: restore compares the journal with the
chain's anchor (the highest answer sequence delivered) and refuses a state that lacks a
delivered answer, so the enclave is provisioned again; what the modes trade is availability
after a power loss against the fsync's latency on every answer (``scripts/bench_split``).

The file stays open between answers (an open and a close per answer cost more than the write);
:meth:`AnswerJournal.close` flushes what is outstanding and is called on compaction, restore and
stop.
"""

from __future__ import annotations

import logging
import os
import struct
import threading
from pathlib import Path

from splitseal.errors import SealingError
from splitseal.protocol import ANSWER_DURABILITY as DURABILITY_MODES

log = logging.getLogger(__name__)

RECORD_HEADER = struct.Struct(">I")
#: the longest a record waits for the flusher when nobody calls ``kick`` (``background``)
FLUSH_INTERVAL = 0.05


class AnswerJournal:
    """Appends records to one journal file at a time, durable per ``durability``."""

    def __init__(self, durability: str = "background") -> None:
        if durability not in DURABILITY_MODES:
            raise ValueError(f"answer durability {durability!r}; give one of {DURABILITY_MODES}")
        self.durability = durability
        self._path: Path | None = None
        self._fd: int | None = None

        self._appended = 0  # records written to the current file
        self._synced = 0  # of those, records known to be on disk
        #: guards the descriptor and the counters against the flusher thread, which waits on it
        self._wake = threading.Condition()
        self._flusher: threading.Thread | None = None
        self._stopping = False
        self._generation = 0  # bumped per file opened: a flush of an earlier file counts for nothing

    def append(self, path: Path, record: bytes) -> None:
        """Write one record to ``path`` (opened on first use, kept open); per the mode, fsync it now
        or hand it to the flusher. The caller serialises appends (the core's lock)."""
        if path != self._path:
            self.close()
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            with self._wake:
                self._path, self._fd, self._appended, self._synced = path, fd, 0, 0
                self._generation += 1
        assert self._fd is not None
        data = RECORD_HEADER.pack(len(record)) + record
        written = os.write(self._fd, data)
        if written != len(data):  # a full disk: the record is torn, which restore drops
            raise SealingError(f"journal write was short ({written} of {len(data)} bytes): disk full?")
        if self.durability == "fsync":
            os.fsync(self._fd)
            with self._wake:
                self._appended = self._synced = self._appended + 1
        elif self.durability == "background":
            with self._wake:   # no wake-up here: see kick()
                self._appended += 1
                self._start_flusher()
        else:
            with self._wake:
                self._appended += 1

    def _start_flusher(self) -> None:
        if self._flusher is None or not self._flusher.is_alive():
            self._stopping = False
            self._flusher = threading.Thread(target=self._flush_loop, name="enclave-journal-flush", daemon=True)
            self._flusher.start()

    def kick(self) -> None:
        """Start flushing now: the server calls it once the answer's reply is sent, so the
        flusher's wake-up does not compete with the reply for the interpreter; without it the
        flusher looks every :data:`FLUSH_INTERVAL` seconds."""
        with self._wake:
            if self._synced < self._appended:
                self._wake.notify()

    def _flush_loop(self) -> None:
        with self._wake:
            while True:
                while self._synced == self._appended and not self._stopping:
                    self._wake.wait(FLUSH_INTERVAL)
                if self._stopping:
                    return
                target, generation = self._appended, self._generation
                # a duplicate descriptor, so the fsync runs without the lock (the next answer's
                # append is not held up behind it) and close() cannot pull the file away
                fd = os.dup(self._fd) if self._fd is not None else None
                self._wake.release()
                try:
                    if fd is not None:
                        os.fsync(fd)
                    ok = True
                except OSError as exc:  # tried again with the next record, and at close
                    log.error("journal fsync failed: %s", exc)
                    ok = False
                finally:
                    if fd is not None:
                        os.close(fd)
                    self._wake.acquire()
                if not ok:
                    self._wake.wait(0.1)
                elif generation == self._generation:
                    self._synced = max(self._synced, target)
                    self._wake.notify_all()

    def sync(self) -> None:
        """Return once every record appended so far is on disk (``write``: fsync them now)."""
        with self._wake:
            if self._fd is not None and self._synced < self._appended:
                os.fsync(self._fd)
                self._synced = self._appended
                self._wake.notify_all()

    def close(self, *, flush: bool = True) -> None:
        """Close the file, first flushing what is outstanding (any mode); ``flush=False`` when the
        file is about to be removed (its records are in a manifest made durable already)."""
        with self._wake:
            if self._fd is not None:
                try:
                    if flush and self._synced < self._appended:
                        os.fsync(self._fd)
                finally:
                    os.close(self._fd)
                    self._fd, self._path, self._appended, self._synced = None, None, 0, 0
            self._stopping = True
            self._wake.notify_all()
        flusher, self._flusher = self._flusher, None
        if flusher is not None and flusher is not threading.current_thread():
            flusher.join(timeout=5)

    @property
    def outstanding(self) -> int:
        """Records written but not yet known to be on disk."""
        with self._wake:
            return self._appended - self._synced
