"""A real local node: anvil from the project's node_modules.

Started directly (npx adds ~0.35 s and leaves a process tree) in its own process group, on
127.0.0.1 and a free port, HTTP and WebSocket on the same port; stopped by killing the group.
``splitseal chain up`` records the node in ``var/chain/anvil.json`` so that other commands use it.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from splitseal.config import PROJECT_ROOT
from splitseal.errors import ChainError

log = logging.getLogger(__name__)

ANVIL_BINARY = PROJECT_ROOT / "node_modules" / "@foundry-rs" / "anvil-linux-amd64" / "bin" / "anvil"
#: Where `splitseal chain up` records its node, relative to the configured home.
STATE_FILE = Path("var") / "chain" / "anvil.json"
#: Keep this many blocks of state: bare --prune-history keeps only the latest, so an eth_call at
#: "latest" fails with BlockOutOfRangeError when a block is mined at the same moment.
PRUNE_HISTORY = 64


def anvil_binary() -> Path:
    for candidate in (ANVIL_BINARY, PROJECT_ROOT / "node_modules" / ".bin" / "anvil"):
        if candidate.exists():
            return candidate
    raise ChainError("anvil is not installed in node_modules; run scripts/setup (it installs the "
                     "pinned @foundry-rs/anvil from package-lock.json)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class AnvilNode:
    pid: int
    port: int
    log_path: str = ""

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @classmethod
    def start(cls, *, port: int | None = None, block_time: float | None = None,
              log_path: Path | None = None, timeout: float = 20.0, accounts: int | None = None) -> "AnvilNode":
        binary = anvil_binary()
        if port and not _port_free(port):
            raise ChainError(f"port {port} on 127.0.0.1 is in use by another program; give another --port, "
                             "or none to take a free one")
        port = port or free_port()
        args = [str(binary), "--host", "127.0.0.1", "--port", str(port), "--prune-history",
                str(PRUNE_HISTORY), "--silent"]
        if block_time:
            args += ["--block-time", str(block_time)]
        if accounts:  # funded development accounts of the well-known mnemonic (anvil's default 10)
            args += ["--accounts", str(accounts)]
        out = open(log_path, "ab") if log_path else subprocess.DEVNULL
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
        node = cls(pid=proc.pid, port=port, log_path=str(log_path or ""))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise ChainError(f"anvil exited at start with status {proc.returncode}; "
                                 f"is port {port} free?")
            if node.alive() and proc.poll() is None:  # ours answering, not another server on the port
                log.info("anvil started pid=%d port=%d", proc.pid, port)
                return node
            time.sleep(0.05)
        node.stop()
        raise ChainError(f"anvil did not answer on port {port} within {timeout} s")

    def alive(self) -> bool:
        """The node answers JSON-RPC on its port."""
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}).encode()
        req = urllib.request.Request(self.http_url, data=body, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=1) as resp:
                return b"result" in resp.read()
        except OSError:
            return False

    def stop(self, timeout: float = 5.0) -> None:
        try:
            os.killpg(self.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.killpg(self.pid, 0)
            except ProcessLookupError:
                break
            _reap(self.pid)
            time.sleep(0.05)
        else:
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        _reap(self.pid)

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self)))


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def state_file(home: Path) -> Path:
    return Path(home) / STATE_FILE


def running_node(home: Path) -> AnvilNode | None:
    """The node ``splitseal chain up`` recorded under ``home``, if it still answers."""
    path = state_file(home)
    try:
        node = AnvilNode(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None
    return node if node.alive() else None


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", int(port)))
        except OSError:
            return False
    return True
