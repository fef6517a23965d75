"""`splitseal enclave serve|attest|status|restore` and `splitseal model provision`."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from splitseal.config import Config
from splitseal.errors import ConfigError, InvalidInputError

from .output import emit, progress


def register(sub: argparse._SubParsersAction) -> None:
    from . import group
    from .chain import add_chain_option

    enclave = group(sub, "enclave", "run, attest and inspect the sealed enclave process")
    p = enclave.add_parser("serve", help="run the enclave process (its own OS process) until SIGTERM")
    _socket_options(p)
    p.add_argument("--debug-enclave", action="store_true", default=None,
                   help="set the DEBUG attribute (the registry refuses debug enclaves)")
    p.add_argument("--user", default=None,
                   help="started as root, drop to this system user, which alone owns the platform secret "
                        "and sealed state (default: [enclave].user; empty: stay this user)")
    p.add_argument("--socket-group", default=None,
                   help="group that may connect to the socket, e.g. the node's (default: [enclave].socket_group)")
    p.add_argument("--log-level", default="INFO")
    p.set_defaults(func=cmd_serve)

    p = enclave.add_parser("attest", help="quote for a fresh nonce, verify it, register the enclave on-chain")
    _socket_options(p)
    add_chain_option(p)
    p.add_argument("--expect-measurement", default=None, help="refuse unless the quote has this measurement")
    p.set_defaults(func=cmd_attest)

    p = enclave.add_parser("status", help="the enclave's identity, keys (public) and loaded models")
    _socket_options(p)
    p.set_defaults(func=cmd_status)

    p = enclave.add_parser("restore", help="after a restart: reload sealed state checked against the chain")
    _socket_options(p)
    add_chain_option(p)
    p.set_defaults(func=cmd_restore)

    model = group(sub, "model", "train, import, split, register and provision models")
    p = model.add_parser("provision", help="encrypt a split's head package and index to a registered "
                                           "enclave, record them on-chain, load them, submit confirmations")
    _socket_options(p)
    add_chain_option(p)
    p.add_argument("split_dir", help="directory written by `splitseal model split` (head.pkg, head.index, split.json)")
    p.add_argument("--model-id", required=True, help="0x-prefixed bytes32, or a name (its keccak256 is the id)")
    p.add_argument("--version", type=int, default=None,
                   help="model version (default: the latest registered; with --register: the new one)")
    p.add_argument("--register", action="store_true",
                   help="register the split as a new model version first (owner = --owner-key)")
    p.add_argument("--allow-measurement", action="store_true",
                   help="allow the enclave's measurement for the model first (owner only)")
    p.add_argument("--owner-key", default=None, help="owner's hex private key (default: the admin account)")
    p.set_defaults(func=cmd_provision)


def _socket_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--socket", default=None, help="enclave socket (default: [enclave].socket_path)")
    p.add_argument("--state-dir", default=None, help="enclave state dir (default: [enclave].state_dir)")


def _paths(args: argparse.Namespace, config: Config) -> tuple[Path, Path]:
    socket_path = Path(args.socket) if args.socket else config.path(config.enclave.socket_path)
    state_dir = Path(args.state_dir) if args.state_dir else config.path(config.enclave.state_dir)
    return socket_path, state_dir


def _client(args: argparse.Namespace, config: Config) -> Any:
    from splitseal.enclave_client import EnclaveClient

    socket_path, _ = _paths(args, config)
    return EnclaveClient(socket_path, max_frame_bytes=config.enclave.max_frame_bytes)


def cmd_serve(args: argparse.Namespace, config: Config) -> int:
    """Replace this process with ``python -m enclave`` so no host library is loaded in it."""
    socket_path, state_dir = _paths(args, config)
    debug = config.enclave.debug if args.debug_enclave is None else args.debug_enclave
    cmd = [sys.executable, "-m", "enclave", "--state-dir", str(state_dir), "--socket", str(socket_path),
           "--product-id", str(config.enclave.product_id),
           "--security-version", str(config.enclave.security_version),
           "--max-frame-bytes", str(config.enclave.max_frame_bytes), "--log-level", args.log_level,
           "--answer-durability", config.enclave.answer_durability]
    if debug:
        cmd.append("--debug-enclave")
    if args.json:  # JSON lines: ready, one per entry call, stopped (docs/CLI.md)
        cmd.append("--json")
    user = config.enclave.user if args.user is None else args.user
    group = config.enclave.socket_group if args.socket_group is None else args.socket_group
    if user:
        cmd += ["--user", user]
    if group:
        cmd += ["--socket-group", group]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, cmd)
    return 0  # pragma: no cover - execv does not return


def _connect_chain(args: argparse.Namespace, config: Config) -> tuple[Any, Any]:
    from .chain import open_chain, open_deployment

    chain = open_chain(args, config)
    try:
        return chain, open_deployment(chain, config)
    except Exception:
        chain.close()
        raise


def _account(chain: Any, key: str | None, config: Config) -> Any:
    from splitseal.chain.keys import account_from

    account = account_from(key=key or config.chain.admin_key, keystore="" if key else config.chain.admin_keystore,
                           password_file=config.chain.keystore_password_file, what="--key / [chain].admin_key")
    return account if account is not None else chain.accounts[0]


def cmd_attest(args: argparse.Namespace, config: Config) -> int:
    from orchestrator.provision import attest_enclave

    expected = _bytes32(args.expect_measurement, "--expect-measurement") if args.expect_measurement else None
    chain, deployment = _connect_chain(args, config)
    progress("quoting the enclave for a fresh nonce, verifying the quote, registering it (registerEnclave)")
    with chain, _client(args, config) as client:
        reg = attest_enclave(chain, deployment, client, sender=_account(chain, None, config),
                             expected_measurement=expected)
    out = {"enclave": reg.enclave, "encryption_key": "0x" + reg.encryption_key.hex(),
           "measurement": "0x" + reg.measurement.hex(), "signer": "0x" + reg.signer.hex(),
           "expires_at": reg.expires_at, "tx": reg.tx_hash}
    _print(args, out, f"enclave {reg.enclave} registered (measurement 0x{reg.measurement.hex()})")
    return 0


def cmd_status(args: argparse.Namespace, config: Config) -> int:
    with _client(args, config) as client:
        s = client.status()
    out = {"enclave": s.enclave, "measurement": "0x" + s.measurement.hex(), "signer": "0x" + s.signer.hex(),
           "product_id": s.product_id, "security_version": s.security_version, "debug": s.debug,
           "encryption_key": "0x" + s.encryption_key.hex(), "quoting_key": s.quoting_key,
           "state_version": s.state_version, "restored": s.restored, "answered": s.answered,
           "sequence": s.sequence, "process": s.process,
           "models": [{"model_id": "0x" + m["model_id"].hex(), "version": m["version"],
                       "state_version": m["state_version"], "serving": m["serving"]} for m in s.models]}
    _print(args, out, None)
    return 0


def cmd_restore(args: argparse.Namespace, config: Config) -> int:
    from orchestrator.provision import restore_enclave

    chain, deployment = _connect_chain(args, config)
    with chain, _client(args, config) as client:
        result = restore_enclave(chain, deployment, client)
    emit(args, {"state_version": result["state_version"], "models": result["models"]},
         f"restored sealed state version {result['state_version']} ({result['models']} model(s))")
    return 0


def cmd_provision(args: argparse.Namespace, config: Config) -> int:
    from orchestrator.provision import provision_model, register_model_version

    split_dir = Path(args.split_dir)
    try:
        summary = json.loads((split_dir / "split.json").read_text())
        package = (split_dir / summary["head"]["package_file"]).read_bytes()
        index = (split_dir / summary["index"]["file"]).read_bytes()
    except (OSError, KeyError, ValueError) as exc:
        raise InvalidInputError(f"{split_dir} is not a split directory ({exc}); run `splitseal model split`") from None
    model_id = parse_model_id(args.model_id)
    chain, deployment = _connect_chain(args, config)
    with chain, _client(args, config) as client:
        owner = _account(chain, args.owner_key, config)
        version = args.version
        if args.register:
            progress("registering the split's hashes as a new model version (registerModelWithPolicy)")
            version = register_model_version(chain, deployment, owner, model_id, split_dir, summary)
        elif version is None:
            version = chain.call(deployment.model_registry.functions.latestVersion(model_id))
            if not version:
                raise InvalidInputError(f"model {args.model_id} is not registered; pass --register")
        result = provision_model(chain, deployment, client, owner, model_id=model_id, version=version,
                                 package_bytes=package, index_bytes=index,
                                 allow_measurement=args.allow_measurement, progress=progress)
    out = {"model_id": "0x" + model_id.hex(), "version": version, "enclave": result.enclave,
           "package_hash": "0x" + result.package_hash.hex(),
           "encrypted_index_hash": "0x" + result.encrypted_index_hash.hex(),
           "state_version": result.state_version, "serving": result.serving}
    _print(args, out, f"model 0x{model_id.hex()} v{version} provisioned to {result.enclave} "
                           f"(state version {result.state_version}, serving={result.serving})")
    return 0


def parse_model_id(text: str) -> bytes:
    """A model id: 0x + 64 hex digits, or any other text whose keccak256 becomes the id."""
    from splitseal.protocol.crypto import keccak256

    if text.startswith("0x") and len(text) == 66:
        return _bytes32(text, "--model-id")
    if not text:
        raise InvalidInputError("--model-id must not be empty")
    return keccak256(text.encode())


def _bytes32(text: str, what: str) -> bytes:
    try:
        value = bytes.fromhex(text[2:] if text.startswith("0x") else text)
    except ValueError:
        raise ConfigError(f"{what} must be hex") from None
    if len(value) != 32:
        raise ConfigError(f"{what} must be 32 bytes, got {len(value)}")
    return value


def _print(args: argparse.Namespace, out: dict[str, Any], headline: str | None) -> None:
    """The document under --json, else the headline and one line per field."""
    lines = ([headline] if headline else []) + [f"  {k:18s} {v}" for k, v in out.items()]
    emit(args, out, "\n".join(lines))
