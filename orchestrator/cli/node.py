"""`splitseal node run` (the REE inference node) and `splitseal infer` (the requester)."""

from __future__ import annotations

import argparse
import json
import signal
import threading
from pathlib import Path

import numpy as np
from eth_account import Account

from splitseal.config import Config
from splitseal.errors import ConfigError, InvalidInputError

from .chain import add_chain_option, open_chain, open_deployment

#: Signals that stop ``splitseal node run`` cleanly (finish the current step, close, exit 0).
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def register(sub: argparse._SubParsersAction) -> None:
    from . import group

    node = group(sub, "node", "the REE inference node")
    p = node.add_parser("run", help="serve inference requests of a deployment until SIGTERM")
    add_chain_option(p)
    p.add_argument("--backbone", action="append", default=[], required=True,
                   help="split directory or backbone.onnx this node serves (repeatable); a model version "
                        "is served when the file's keccak256 equals its registered backbone hash")
    p.add_argument("--socket", default=None, help="enclave socket (default: [enclave].socket_path)")
    p.add_argument("--authorize", action="store_true",
                   help="as the admin: grant this node NODE_ROLE and publish its input key")
    p.add_argument("--index", type=int, default=None, help="this node's index among --count nodes")
    p.add_argument("--count", type=int, default=None, help="number of nodes serving the deployment")
    p.add_argument("--state-dir", default=None, help="checkpoint and input key directory")
    p.set_defaults(func=cmd_node_run)

    p = sub.add_parser("infer", help="send an inference request as a transaction and print the result")
    add_chain_option(p)
    p.add_argument("--model", required=True, help="model id (0x-prefixed bytes32) or model name")
    p.add_argument("--version", type=int, default=None, help="model version (default: latest)")
    p.add_argument("--input", required=True, help=".npy array, or an image file (PNG/PGM) with --shape")
    p.add_argument("--shape", default=None, help="C,H,W the image is normalised and resized to")
    p.add_argument("--wait", action="store_true", help="wait for the result and decrypt it")
    p.add_argument("--timeout", type=float, default=120.0)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_infer)


def node_account(config: Config, chain) -> "Account":
    if config.node.account_key:
        return Account.from_key(config.node.account_key)
    if len(chain.accounts) < 3:
        raise ConfigError("set [node].account_key (SPLITSEAL_NODE_ACCOUNT_KEY) to the node's private key")
    return chain.accounts[2]


def requester_account(chain) -> "Account":
    """Development account 3 where the chain offers the development accounts, else the one
    configured account ([chain].admin_key), which then pays for its own requests."""
    return chain.accounts[3] if len(chain.accounts) > 3 else chain.accounts[0]


def cmd_node_run(args: argparse.Namespace, config: Config) -> int:
    """Serve until SIGTERM/SIGINT, then finish the current step, close and exit 0.

    The signal handlers are installed first: a stop asked for while the node is still connecting
    or being built is remembered, and the node then exits before serving instead of dying with
    the default action halfway through its set-up.
    """
    requested = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: requested.set()) for sig in STOP_SIGNALS}
    try:
        return _node_run(args, config, requested)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _node_run(args: argparse.Namespace, config: Config, requested: threading.Event) -> int:
    from orchestrator.node_setup import authorize_node, build_node, load_or_create_x25519_key

    state_dir = Path(args.state_dir) if args.state_dir else config.path(config.node.db_path).parent
    with open_chain(args, config) as chain:
        if chain.url is None:  # no other process can reach it
            raise ConfigError("the embedded chain lives inside one process; run the node with --chain anvil or "
                              "a URL, or use `splitseal demo`, which runs node and requests in one process")
        deployment = open_deployment(chain, config)
        account = node_account(config, chain)
        if args.authorize:
            authorize_node(chain, deployment, chain.accounts[0], account,
                           load_or_create_x25519_key(state_dir / "input.key"))
        wiring = build_node(config, chain, deployment, account,
                            backbone_paths=[Path(b) for b in args.backbone],
                            socket_path=Path(args.socket) if args.socket else None, state_dir=state_dir,
                            node_index=config.node.node_index if args.index is None else args.index,
                            node_count=config.node.node_count if args.count is None else args.count)
        node = wiring.node
        try:
            for sig in STOP_SIGNALS:
                signal.signal(sig, lambda *_: node.stop())
            if not requested.is_set():
                node.setup()
                print(f"node {account.address} serving deployment on chain {chain.chain_id} "
                      f"with enclave {node.enclave.address}; SIGTERM stops it", flush=True)
                node.run(install_signal_handlers=False)
        finally:
            node.close()
            wiring.client.close()
    print(f"node {account.address} stopped", flush=True)
    return 0


def load_input(path: str, shape: str | None) -> np.ndarray:
    """A .npy array as stored, or an image normalised to 0..1 and resized to ``shape`` (C,H,W)."""
    from mpc.client.terminal import normalise, read_image  # PNG / PGM reader shared with the MPC terminal

    image = read_image(path)
    if Path(path).suffix.lower() == ".npy":
        return image
    if not shape:
        raise InvalidInputError(f"{path} is an image: give the model's input shape with --shape C,H,W "
                                "(`splitseal model inspect` shows it)")
    try:
        dims = tuple(int(d) for d in shape.split(","))
    except ValueError:
        dims = ()
    if len(dims) != 3 or min(dims) <= 0:
        raise InvalidInputError(f"--shape {shape!r} is not C,H,W (three positive integers)")
    return normalise(image, dims)


def cmd_infer(args: argparse.Namespace, config: Config) -> int:
    from splitseal.protocol.crypto import X25519KeyPair

    from .enclave import parse_model_id
    from orchestrator.requester import Requester

    x = load_input(args.input, args.shape)
    with open_chain(args, config) as chain:
        if chain.url is None:  # no node process can serve it
            raise ConfigError("the embedded chain lives inside one process and has no node to serve requests; "
                              "use --chain anvil (after `splitseal chain up` and a running node) or `splitseal demo`")
        deployment = open_deployment(chain, config)
        model_id = parse_model_id(args.model)
        version = args.version or int(chain.call(deployment.model_registry.functions.latestVersion(model_id)))
        if version == 0:
            raise InvalidInputError(f"model {args.model} is not registered on this deployment")
        key_path = config.path("var/requester/key")
        from orchestrator.node_setup import load_or_create_x25519_key

        key: X25519KeyPair = load_or_create_x25519_key(key_path)
        requester = Requester(chain, deployment, requester_account(chain), key=key,
                              blob_dir=config.path(config.node.blob_dir))
        submitted = requester.submit(model_id, version, x)
        if not args.wait:
            print(json.dumps({"requestId": submitted.request_id, "tx": submitted.tx_hash}) if args.json else
                  f"request {submitted.request_id} sent in tx {submitted.tx_hash}")
            return 0
        outcome = requester.wait(submitted, timeout=args.timeout)
        doc = outcome_document(outcome)
        if args.json:
            print(json.dumps(doc, indent=2))
        else:
            print(render_outcome(doc))
        return 0 if outcome.ok else 1


def outcome_document(outcome) -> dict:
    """``infer --json``: row 0's label / scores / features (as before) and every batch row's
    (``labels``, ``allScores``, ``allFeatures``; ``rows`` counts them); None where the model's
    output policy releases no such part."""
    parts = [p for p in (outcome.labels, outcome.all_scores, outcome.all_features) if p]
    return {"requestId": outcome.request_id, "status": outcome.status.name, "rows": len(parts[0]) if parts else 0,
            "label": outcome.label, "scores": outcome.scores, "features": outcome.features,
            "labels": outcome.labels, "allScores": outcome.all_scores, "allFeatures": outcome.all_features,
            "failureCode": outcome.failure_code.name if outcome.failure_code else None,
            "failureReason": outcome.failure_reason, "enclave": outcome.enclave,
            "transactions": outcome.transactions, "latencyMs": {k: round(v * 1e3, 2) for k, v in outcome.latency.items()}}


def _numbers(values: list[float], limit: int = 16) -> str:
    shown = " ".join(f"{v:.4g}" for v in values[:limit])
    return shown + (f" ... ({len(values)} values)" if len(values) > limit else "")


def render_outcome(doc: dict) -> str:
    """``infer`` as text: per batch row its label (prediction), scores and features, whichever the
    model's output policy releases."""
    lines = [f"request {doc['requestId']}: {doc['status']}"]
    if doc["status"] == "COMPLETED":
        labels, scores, features = doc.get("labels"), doc.get("allScores"), doc.get("allFeatures")
        rows = doc.get("rows") or 0
        for i in range(rows):
            pad = "  " if rows == 1 else "    "
            if rows > 1:
                lines.append(f"  row {i}:")
            if labels:
                lines.append(f"{pad}prediction: {labels[i]}")
            if scores:
                lines.append(f"{pad}scores: " + " ".join(f"{s:.3f}" for s in scores[i]))
            if features:
                lines.append(f"{pad}features: " + _numbers(features[i]))
        if not rows:
            lines.append("  prediction: none released")
        lines.append(f"  enclave: {doc['enclave']}")
    else:
        lines.append(f"  failure: {doc.get('failureCode')}: {doc.get('failureReason')}")
    for name, tx in doc["transactions"].items():
        lines.append(f"  tx {name}: {tx}")
    lines.append("  latency: " + ", ".join(f"{k} {v} ms" for k, v in doc["latencyMs"].items()))
    return "\n".join(lines)
