"""``python -m enclave --state-dir DIR --socket PATH``: start the enclave process.

The one place that wires the enclave together: measure the build, open the platform, unseal
(or generate) the keys, serve the entry calls until SIGTERM. Exit status 2 with a one-line
message when it cannot start (for example: sealed keys of another measurement).
"""

from __future__ import annotations

import os

# One BLAS thread, set before anything imports numpy: OpenBLAS otherwise starts a thread per core
# in this long-running process, and under load (the node's onnxruntime on the same cores) a
# 512x1000 Gemm took 32 ms instead of well under 1 ms; heads are small, one thread is fastest.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import logging
import sys
from pathlib import Path
from typing import Sequence

from splitseal.errors import SplitsealError

from .hardening import harden, socket_group
from .journal import DURABILITY_MODES
from .identity import MeasuredConfig, load_identity
from .platform import SimulatedPlatform, platform_dir_for


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m enclave", description="splitseal enclave (SGX stand-in)")
    p.add_argument("--state-dir", required=True, help="sealed state directory (created 0700)")
    p.add_argument("--socket", required=True, help="Unix socket to listen on")
    p.add_argument("--platform-dir", default=None,
                   help="simulated platform (root secret, quoting key); default STATE_DIR/platform")
    p.add_argument("--max-frame-bytes", type=int, default=MeasuredConfig().max_frame_bytes,
                   help="largest frame accepted (measured: changes the measurement)")
    p.add_argument("--idle-timeout", type=float, default=30.0,
                   help="seconds a connection may sit idle before the enclave closes it (default 30)")
    p.add_argument("--product-id", type=int, default=1)
    p.add_argument("--security-version", type=int, default=1)
    p.add_argument("--debug-enclave", action="store_true", help="set the DEBUG attribute")
    p.add_argument("--signer-key-file", default=None,
                   help="file with the build's 32-byte signing key (default: the dev signer)")
    p.add_argument("--user", default=None,
                   help="started as root: drop to this system user (created if missing), which then owns the "
                        "platform secret and the sealed state, so the node's user can neither read the "
                        "enclave's memory nor unseal")
    p.add_argument("--socket-group", default=None,
                   help="group allowed to connect to the socket (mode 0660); default: the enclave's user only")
    p.add_argument("--answer-durability", choices=DURABILITY_MODES, default="background",
                   help="when each answer's journal record reaches the disk: fsync = before the answer "
                        "leaves; background (default) = it reaches the OS before and is fsynced right after, "
                        "while the delivery is sent; write = when the OS writes it back. A record lost to a "
                        "power loss makes restore refuse the state (the enclave is provisioned again); "
                        "nothing is ever answered off the record")
    p.add_argument("--log-level", default="INFO")
    p.add_argument("--json", action="store_true",
                   help="JSON lines on stdout: ready, one per entry call, refused frames, stopped; "
                        "a start-up error as {\"error\": ...}")
    return p


class JsonLines:
    """Events as JSON lines on stdout, one whole line at a time (calls run on several threads)."""

    def __init__(self, stream=None) -> None:
        import threading

        self.stream = stream or sys.stdout
        self._lock = threading.Lock()

    def __call__(self, name: str, fields: dict) -> None:
        import json
        import time

        line = json.dumps({"event": name, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **fields})
        with self._lock:
            self.stream.write(line + "\n")
            self.stream.flush()


def _preload() -> None:
    """Load (and run once) everything the entry calls import lazily: after the privilege drop the
    interpreter's own files may be out of the new user's reach (a Python under /root, say)."""
    import importlib
    import os

    from splitseal.protocol import crypto, eip712

    from .platform import quoting_address_of

    for module in ("interpreter", "package", "quote"):
        importlib.import_module(f"enclave.{module}")

    key = os.urandom(32)
    eip712.checksum_address(eip712.address_of(key))
    quoting_address_of(key)
    crypto.keccak256(b"")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=getattr(logging, str(args.log_level).upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        state_dir = Path(args.state_dir)
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        platform_dir = Path(args.platform_dir) if args.platform_dir else platform_dir_for(state_dir)
        group = socket_group(args.socket_group) if args.socket_group else None
        signer = Path(args.signer_key_file).read_bytes() if args.signer_key_file else None
        config = MeasuredConfig(max_frame_bytes=args.max_frame_bytes)
        identity = load_identity(product_id=args.product_id, security_version=args.security_version,
                                 debug=args.debug_enclave, config=config, signer_private=signer)
        # measured before the entry-call code is imported, as a loader measures before running it
        from .core import EnclaveCore
        from .server import EnclaveServer, serve_forever

        if args.user:
            _preload()

        hardening = harden(run_as=args.user, owned_paths=[state_dir, platform_dir], keep_group=group)

        platform = SimulatedPlatform(platform_dir)
        core = EnclaveCore(platform, identity, state_dir, process=hardening.as_wire(),
                           answer_durability=args.answer_durability)
        serve_forever(EnclaveServer(core, args.socket, max_frame_bytes=config.max_frame_bytes, socket_group=group,
                                    idle_timeout=args.idle_timeout, events=JsonLines() if args.json else None))
    except (SplitsealError, OSError) as exc:  # a state dir or socket path it cannot use is an input error too
        message = (str(exc) if isinstance(exc, SplitsealError) else
                   f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else ""))
        print(f"error: {message}", file=sys.stderr)
        if args.json:
            import json

            print(json.dumps({"error": {"type": type(exc).__name__, "message": message, "exit": 2}}), flush=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
