"""``python -m enclave --state-dir DIR --socket PATH``: start the enclave process.

The one place that wires the enclave together: measure the build, open the platform, unseal
(or generate) the keys, serve the entry calls until SIGTERM. Exit status 2 with a one-line
message when it cannot start (for example: sealed keys of another measurement).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Sequence

from splitseal.errors import SplitsealError

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
    p.add_argument("--product-id", type=int, default=1)
    p.add_argument("--security-version", type=int, default=1)
    p.add_argument("--debug-enclave", action="store_true", help="set the DEBUG attribute")
    p.add_argument("--signer-key-file", default=None,
                   help="file with the build's 32-byte signing key (default: the dev signer)")
    p.add_argument("--log-level", default="INFO")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=getattr(logging, str(args.log_level).upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        state_dir = Path(args.state_dir)
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        signer = Path(args.signer_key_file).read_bytes() if args.signer_key_file else None
        config = MeasuredConfig(max_frame_bytes=args.max_frame_bytes)
        identity = load_identity(product_id=args.product_id, security_version=args.security_version,
                                 debug=args.debug_enclave, config=config, signer_private=signer)
        # measured before the entry-call code is imported, as a loader measures before running it
        from .core import EnclaveCore
        from .server import EnclaveServer, serve_forever

        platform = SimulatedPlatform(args.platform_dir or platform_dir_for(state_dir))
        core = EnclaveCore(platform, identity, state_dir)
        serve_forever(EnclaveServer(core, args.socket, max_frame_bytes=config.max_frame_bytes))
    except SplitsealError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
