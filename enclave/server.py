"""The enclave process's socket server: one Unix-domain socket, framed entry calls.

Lifecycle: :meth:`EnclaveServer.start` binds the socket (mode 0600) and serves connections on
threads; entry calls are serialised by the core's lock. :meth:`stop` (called on SIGTERM or
SIGINT by :func:`serve_forever`) closes the listener, waits for running calls and removes the
socket file.

Robustness: a frame whose declared length is zero or above the limit gets an error response and
the connection is closed (it cannot be resynchronised); a payload that does not decode, or a
request that is not ``{"call", "id", "args"}``, gets an error response and the connection stays
usable. A connection idle for ``idle_timeout`` seconds (no frame started, or a frame not
finished) is closed, so connections opened and left idle cannot lock the others out past that
time; clients reconnect on their next call. No input crashes the process: unexpected exceptions become a generic "internal error"
whose text is not echoed (it could hold values), only logged by type.

Events: with ``events`` (``python -m enclave --json``) the server reports ``ready``, one ``call``
per entry call (its name, outcome, error type and duration: never arguments or results),
``refused`` for frames it cannot serve, and ``stopped``.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any, Callable

#: ``events(name, fields)``: a sink for the server's lifecycle and per-call events.
EventSink = Callable[[str, dict[str, Any]], None]

from splitseal.errors import SplitsealError
from splitseal.protocol import FailureCode, wire

from .core import EnclaveCore, error_reason

log = logging.getLogger(__name__)


class EnclaveServer:
    """Serves :class:`EnclaveCore` entry calls on a Unix socket."""

    def __init__(self, core: EnclaveCore, socket_path: str | Path, *, max_frame_bytes: int,
                 max_connections: int = 32, socket_group: int | None = None, idle_timeout: float = 30.0,
                 events: EventSink | None = None) -> None:
        self.core = core
        self.events = events
        self.idle_timeout = float(idle_timeout)
        self.max_connections = int(max_connections)
        self.socket_path = Path(socket_path)
        self.max_frame_bytes = int(max_frame_bytes)
        self.socket_group = socket_group
        self._listener: socket.socket | None = None
        self._stopping = threading.Event()
        self._threads: set[threading.Thread] = set()
        self._conns: set[socket.socket] = set()
        self._mutex = threading.Lock()
        self.calls = 0
        self.rejected_frames = 0

    def start(self) -> None:
        """Bind the socket (owner-only, or owner and ``socket_group``) and start accepting."""
        self.socket_path.parent.mkdir(parents=True, exist_ok=True)
        if self.socket_path.exists() or self.socket_path.is_symlink():
            self.socket_path.unlink()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)
        try:
            listener.bind(str(self.socket_path))
        finally:
            os.umask(old_umask)
        if self.socket_group is not None:
            os.chown(self.socket_path, -1, self.socket_group)
            os.chmod(self.socket_path, 0o660)
        listener.listen(16)
        listener.settimeout(0.2)
        self._listener = listener
        thread = threading.Thread(target=self._accept_loop, name="enclave-accept", daemon=True)
        thread.start()
        self._threads.add(thread)
        log.info("enclave listening socket=%s max_frame_bytes=%d", self.socket_path, self.max_frame_bytes)

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stopping.is_set():
            try:
                conn, _ = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                break
            conn.settimeout(self.idle_timeout)
            with self._mutex:
                busy = len(self._conns) >= self.max_connections
            if busy:
                self.rejected_frames += 1
                self._send(conn, _error(None, "Busy", f"the enclave serves at most {self.max_connections} "
                                                      "connections; close idle ones and retry", FailureCode.ENCLAVE_REFUSED))
                conn.close()
                continue
            thread = threading.Thread(target=self._serve_connection, args=(conn,),
                                      name="enclave-conn", daemon=True)
            with self._mutex:
                self._conns.add(conn)
                self._threads.add(thread)
            thread.start()

    def _serve_connection(self, conn: socket.socket) -> None:
        try:
            while not self._stopping.is_set():
                try:
                    payload = wire.read_frame(conn, self.max_frame_bytes)
                except wire.FrameTooLarge as exc:
                    self.rejected_frames += 1
                    self._event("refused", error="FrameTooLarge")
                    self._send(conn, _error(None, "FrameTooLarge", str(exc), FailureCode.ENCLAVE_REFUSED))
                    return
                except wire.FrameError as exc:
                    self.rejected_frames += 1
                    self._event("refused", error="FrameError")
                    self._send(conn, _error(None, "FrameError", str(exc), FailureCode.ENCLAVE_REFUSED))
                    return
                except OSError:
                    return
                if payload is None:
                    return
                self._send(conn, self._handle(payload))
                self.core.answer_sent()
        finally:
            with self._mutex:
                self._conns.discard(conn)
                self._threads.discard(threading.current_thread())
            try:
                conn.close()
            except OSError:
                pass

    def _handle(self, payload: bytes) -> dict[str, Any]:
        try:
            request = wire.decode(payload)
        except wire.FrameError as exc:
            self.rejected_frames += 1
            self._event("refused", error="FrameError")
            return _error(None, "FrameError", f"request does not decode: {exc}", FailureCode.ENCLAVE_REFUSED)
        if not isinstance(request, dict) or not isinstance(request.get("call"), str) \
                or not isinstance(request.get("id", 0), int):
            self.rejected_frames += 1
            return _error(None, "FrameError", "request must be a map with 'call' (str), 'id' (int) "
                                              "and 'args' (map)", FailureCode.ENCLAVE_REFUSED)
        request_id = request.get("id")
        call = request["call"]
        self.calls += 1
        started = time.perf_counter()
        try:
            result = self.core.call(call, request.get("args"))
            self._event("call", call=call, ok=True, started=started)
            if call in _LONG_LIVED_STATE_CALLS:
                settle_heap()
            return {"id": request_id, "ok": True, "result": result}
        except SplitsealError as exc:
            log.info("entry call refused call=%s error=%s", call, type(exc).__name__)
            self._event("call", call=call, ok=False, error=type(exc).__name__, started=started)
            return _error(request_id, type(exc).__name__, str(exc), error_reason(exc))
        except Exception as exc:  # noqa: BLE001 - never crash on input; never echo its text
            log.error("entry call failed call=%s error_type=%s", call, type(exc).__name__)
            self._event("call", call=call, ok=False, error="InternalError", started=started)
            return _error(request_id, "InternalError",
                          f"{call} failed inside the enclave ({type(exc).__name__})", FailureCode.INTERNAL)

    def _event(self, name: str, *, started: float | None = None, **fields: Any) -> None:
        """Report an event (names, outcomes and times only: nothing a call carried)."""
        if self.events is None:
            return
        if started is not None:
            fields["ms"] = round((time.perf_counter() - started) * 1e3, 3)
        self.events(name, fields)

    def _send(self, conn: socket.socket, response: dict[str, Any]) -> None:
        try:
            wire.write_frame(conn, wire.encode(response))
        except OSError:
            pass

    def stop(self) -> None:
        """Stop accepting, close connections, remove the socket file."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        if self._listener is not None:
            self._listener.close()
        with self._mutex:
            conns = list(self._conns)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for thread in list(self._threads):
            if thread is not threading.current_thread():
                thread.join(timeout=5)
        try:
            self.socket_path.unlink()
        except FileNotFoundError:
            pass
        self.core.close()  # the journal's outstanding records to disk
        log.info("enclave stopped calls=%d rejected_frames=%d", self.calls, self.rejected_frames)
        self._event("stopped", calls=self.calls, rejected_frames=self.rejected_frames)

    def wait(self) -> None:
        """Block until :meth:`stop` was requested."""
        self._stopping.wait()


#: entry calls after which the process holds new long-lived objects (a head, its parameters)
_LONG_LIVED_STATE_CALLS = frozenset({"provision_head", "provision_index", "seal_state"})


def settle_heap() -> None:
    """Collect, then move every object alive now out of the cyclic collector's reach
    (``gc.freeze``): what the enclave holds after start-up and provisioning (modules, heads and
    their parameters) lives as long as the process, and a full collection would otherwise walk
    all of it again now and then in the middle of an answer. Reference counting still frees
    frozen objects; only cycles among them would stay (the ``collect`` first clears those)."""
    gc.collect()
    gc.freeze()


def _error(request_id: Any, kind: str, message: str, reason: FailureCode) -> dict[str, Any]:
    return {"id": request_id, "ok": False, "error": {"type": kind, "message": message, "reason": reason}}


def serve_forever(server: EnclaveServer) -> None:
    """Run until SIGTERM or SIGINT, then stop cleanly."""
    stop = threading.Event()

    def _on_signal(signum: int, frame: Any) -> None:
        log.info("signal %d received; stopping", signum)
        stop.set()

    previous = {s: signal.signal(s, _on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.start()
        settle_heap()
        if server.events is not None:
            server.events("ready", {"socket": str(server.socket_path), "address": server.core.address,
                                    "measurement": "0x" + server.core.identity.mr_enclave.hex()})
        else:
            print(f"enclave ready socket={server.socket_path} address={server.core.address}", flush=True)
        while not stop.wait(0.5):
            pass
    finally:
        server.stop()
        for s, handler in previous.items():
            signal.signal(s, handler)
