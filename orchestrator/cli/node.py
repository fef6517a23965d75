"""`splitseal node run` (the REE inference node) and `splitseal infer` (the requester)."""

from __future__ import annotations

import argparse
import dataclasses
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from splitseal.config import Config
from splitseal.enclave_client import EnclaveUnavailableError
from splitseal.errors import ChainError, ConfigError, InvalidInputError, ModelError
from splitseal.protocol import MAX_DELIVERY_BATCH

from .chain import add_chain_option, open_chain, open_deployment
from .output import emit, event

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

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
    p.add_argument("--batch", type=int, default=None,
                   help="deliver up to N results per transaction (default [node].delivery_batch; 1: one each)")
    p.add_argument("--state-dir", default=None, help="checkpoint and input key directory")
    p.add_argument("--input-key", default=None,
                   help="the input key file all nodes of the deployment share (default: <state-dir>/input.key, "
                        "created if missing)")
    p.add_argument("--rotate-input-key", action="store_true",
                   help="with --authorize: publish this node's key even though other nodes use another one")
    p.add_argument("--from-block", type=int, default=None,
                   help="with a new checkpoint: first block to read (default: the deployment's); a node "
                        "joining a busy deployment need not read its whole history")
    p.set_defaults(func=cmd_node_run)

    p = node.add_parser("keeper", help="end (timeout()) requests whose deadline passed, until SIGTERM")
    add_chain_option(p)
    p.add_argument("--once", action="store_true", help="one sweep, then exit")
    p.add_argument("--interval", type=float, default=None, help="seconds between sweeps (default [node].keeper_interval)")
    p.add_argument("--from-block", type=int, default=None, help="first block to read (default: the deployment's)")
    p.set_defaults(func=cmd_node_keeper)

    p = sub.add_parser("infer", help="send an inference request as a transaction and print the result")
    add_chain_option(p)
    p.add_argument("--model", required=True, help="model id (0x-prefixed bytes32) or model name")
    p.add_argument("--version", type=int, default=None, help="model version (default: latest)")
    p.add_argument("--input", required=True, help=".npy array, or an image file (PNG, JPEG, PGM) with --shape")
    p.add_argument("--shape", default=None, help="C,H,W the image is normalised and resized to")
    p.add_argument("--backbone", action="append", default=[],
                   help="the model's public backbone (file or split node directory; repeatable; default "
                        "var/split/node): the input's shape and dtype are checked against it before sending")
    p.add_argument("--wait", action="store_true", help="wait for the result and decrypt it")
    p.add_argument("--timeout", type=float, default=120.0)
    p.add_argument("--consumer", default=None,
                   help="contract to call back with the result (IInferenceConsumer; docs/PROTOCOL.md)")
    p.add_argument("--callback-gas", type=int, default=100_000,
                   help="gas the consumer's callback gets (5,000 to 1,000,000; default 100,000)")
    p.set_defaults(func=cmd_infer)


def node_account(config: Config, chain) -> "LocalAccount":
    from splitseal.chain.keys import account_from

    account = account_from(key=config.node.account_key, keystore=config.node.account_keystore,
                           password_file=config.chain.keystore_password_file,
                           what="[node].account_key / account_keystore")
    if account is not None:
        return account
    if len(chain.accounts) < 3:
        raise ConfigError("set [node].account_key (SPLITSEAL_NODE_ACCOUNT_KEY) to the node's private key, or "
                          "[node].account_keystore to its keystore")
    return chain.accounts[2]


def requester_account(chain) -> "LocalAccount":
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
    import logging

    from orchestrator.node_setup import authorize_node, build_node, load_or_create_x25519_key, require_node_role

    # an operator sees every request the node serves or fails, without -v
    node_logger = logging.getLogger("chain_node")
    if node_logger.getEffectiveLevel() > logging.INFO:
        node_logger.setLevel(logging.INFO)

    if args.batch is not None:
        if not 1 <= args.batch <= MAX_DELIVERY_BATCH:
            raise ConfigError(f"--batch {args.batch}: give 1 to {MAX_DELIVERY_BATCH} results per transaction")
        config = dataclasses.replace(config, node=dataclasses.replace(config.node, delivery_batch=args.batch))
    missing = [b for b in args.backbone if not Path(b).exists()]
    if missing:  # before the chain: nothing to serve
        raise InvalidInputError(f"--backbone {missing[0]} does not exist; give a split directory or its "
                                "backbone.onnx (`splitseal model split` writes them)")
    state_dir = Path(args.state_dir) if args.state_dir else config.path(config.node.db_path).parent
    key_path = Path(args.input_key) if args.input_key else state_dir / "input.key"
    if args.input_key and not key_path.exists():
        raise ConfigError(f"--input-key {key_path} does not exist; give the key file the other nodes use "
                          "(the first node's <state-dir>/input.key), or leave --input-key out to create one")
    with open_chain(args, config) as chain:
        if chain.url is None:  # no other process can reach it
            raise ConfigError("the embedded chain lives inside one process; run the node with --chain anvil or "
                              "a URL, or use `splitseal demo`, which runs node and requests in one process")
        deployment = open_deployment(chain, config)
        account = node_account(config, chain)
        if not args.authorize:
            require_node_role(chain, deployment, account)  # before anything is created or read
        input_key = load_or_create_x25519_key(key_path)
        if args.authorize:
            authorize_node(chain, deployment, chain.accounts[0], account, input_key, rotate=args.rotate_input_key)
        try:
            wiring = build_node(config, chain, deployment, account,
                                backbone_paths=[Path(b) for b in args.backbone],
                                socket_path=Path(args.socket) if args.socket else None, state_dir=state_dir,
                                node_index=config.node.node_index if args.index is None else args.index,
                                node_count=config.node.node_count if args.count is None else args.count,
                                input_key=input_key, start_block=args.from_block, wait=requested)
        except EnclaveUnavailableError:
            if not requested.is_set():
                raise
            event(args, "stopped", f"node {account.address} stopped while waiting for the enclave",
                  node=account.address, served=False)
            return 0
        node = wiring.node
        if args.json:  # one line per request the node completes, fails or leaves to another node
            node.on_finished = lambda request_id, stage, detail, times: event(
                args, "request", requestId=request_id, stage=stage.name, detail=detail,
                **({} if times is None else {"backboneMs": round(times.backbone * 1e3, 2),
                                             "enclaveMs": round(times.enclave * 1e3, 2),
                                             "deliveryMs": round(times.delivery_tx * 1e3, 2)}))
        try:
            for sig in STOP_SIGNALS:
                signal.signal(sig, lambda *_: node.stop())
            if not requested.is_set():
                node.setup()
                event(args, "started", f"node {account.address} serving deployment on chain {chain.chain_id} "
                                       f"with enclave {node.enclave.address}; SIGTERM stops it",
                      node=account.address, chainId=chain.chain_id, enclave=node.enclave.address,
                      index=node.node_index, count=node.node_count)
                node.run(install_signal_handlers=False)
        finally:
            node.close()
            wiring.client.close()
    stats = node.stats
    event(args, "stopped", f"node {account.address} stopped", node=account.address, served=True,
          completed=stats.completed, failed=stats.failed, skipped=stats.skipped, timedOut=stats.timed_out)
    return 0


def cmd_node_keeper(args: argparse.Namespace, config: Config) -> int:
    """Sweep expired requests every ``--interval`` s (or once) until SIGTERM/SIGINT."""
    from chain_node.keeper import Keeper

    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in STOP_SIGNALS}
    try:
        with open_chain(args, config) as chain:
            deployment = open_deployment(chain, config)
            account = node_account(config, chain)
            keeper = Keeper(chain, deployment, account,
                            start_block=deployment.block if args.from_block is None else args.from_block)
            interval = config.node.keeper_interval if args.interval is None else args.interval
            event(args, "started", f"keeper {account.address} watching deployment on chain {chain.chain_id}",
                  keeper=account.address, chainId=chain.chain_id, interval=interval)
            while True:
                try:
                    ended = keeper.sweep()
                except ChainError as exc:  # the chain went away: try again at the next sweep
                    event(args, "sweep_failed", f"sweep failed: {exc}", error=str(exc))
                    ended = 0
                else:
                    event(args, "sweep", f"timed out {ended} request(s); {len(keeper.open_requests)} open"
                          if ended else None, timedOut=ended, open=len(keeper.open_requests))
                if args.once or stop.wait(interval):
                    break
            event(args, "stopped", f"keeper stopped: {keeper.timed_out} request(s) timed out, "
                                   f"{len(keeper.open_requests)} open",
                  timedOut=keeper.timed_out, open=len(keeper.open_requests))
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def load_input(path: str, shape: str | None) -> np.ndarray:
    """A .npy array as stored, or an image normalised to 0..1 and resized to ``shape`` (C,H,W)."""
    from mpc.client.terminal import normalise, read_image  # the image reader (Pillow) shared with the MPC terminal

    image = read_image(path)
    if Path(path).suffix.lower() == ".npy":
        return _check_values(image)
    if not shape:
        raise InvalidInputError(f"{path} is an image: give the model's input shape with --shape C,H,W "
                                "(`splitseal model inspect` shows it)")
    try:
        dims = tuple(int(d) for d in shape.split(","))
    except ValueError:
        dims = ()
    if len(dims) != 3 or min(dims) <= 0:
        raise InvalidInputError(f"--shape {shape!r} is not C,H,W (three positive integers)")
    return _check_values(normalise(image, dims).astype(np.float32))


def _check_values(x: np.ndarray) -> np.ndarray:
    """An input the backbone can take: floats, non-empty, finite (checked before any chain call)."""
    if x.dtype.kind != "f":
        raise InvalidInputError(f"input dtype {x.dtype} is not a float type; the backbone takes float32")
    if x.size == 0 or not np.all(np.isfinite(x)):
        raise InvalidInputError("input must be a non-empty array of finite numbers (no NaN or Inf)")
    return x


def cmd_infer(args: argparse.Namespace, config: Config) -> int:
    from orchestrator.requester import Requester
    from splitseal.protocol.crypto import X25519KeyPair

    from .enclave import parse_model_id

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
        backbone = check_against_backbone(chain, deployment, model_id, version, x,
                                          [Path(b) for b in args.backbone] or [config.path("var/split/node")])
        key_path = config.path("var/requester/key")
        from orchestrator.node_setup import load_or_create_x25519_key

        key: X25519KeyPair = load_or_create_x25519_key(key_path)
        requester = Requester(chain, deployment, requester_account(chain), key=key,
                              blob_dir=config.path(config.node.blob_dir))
        submitted = requester.submit(model_id, version, x, consumer=args.consumer,
                                     callback_gas_limit=args.callback_gas)
        if not args.wait:
            emit(args, {"requestId": submitted.request_id, "tx": submitted.tx_hash},
                 f"request {submitted.request_id} sent in tx {submitted.tx_hash}")
            return 0
        outcome = requester.wait(submitted, timeout=args.timeout)
        doc = outcome_document(outcome, characters=text_characters(backbone))
        emit(args, doc, render_outcome(doc))
        return 0 if outcome.ok else 1


def check_against_backbone(chain, deployment, model_id: bytes, version: int, x: np.ndarray,
                           candidates: list[Path]):
    """Refuse, before any money is spent, an input whose dtype or shape the registered backbone
    does not take (found among ``candidates`` by its registered hash); without a local copy of
    it, say that the shape was not checked. Returns the backbone (None without a local copy)."""
    from chain_node.inference_node import BackboneUnavailable
    from chain_node.inputs import InputProblem, check_input_shape
    from orchestrator.node_setup import BackboneLibrary

    _check_values(x)
    library = BackboneLibrary(chain, deployment, [])
    for path in candidates:
        if path.exists():
            try:
                library.add(path)
            except ConfigError:
                continue
    try:
        backbone = library(model_id, version)
    except BackboneUnavailable:
        print(f"note: input shape {tuple(x.shape)} not checked: no local copy of the registered backbone "
              "(give it with --backbone)", file=sys.stderr, flush=True)
        return None
    except ModelError as exc:
        raise InvalidInputError(f"model {model_id.hex()[:16]}… v{version} cannot be served: {exc}; nothing was sent") \
            from None
    try:
        check_input_shape(x, backbone.input_shape)
    except InputProblem as exc:
        raise InvalidInputError(f"{exc}; nothing was sent") from None
    return backbone


def text_characters(backbone) -> list[str] | None:
    """The character list of a text recogniser's backbone (PaddleOCR's ``character`` metadata),
    or None (another kind of model, or no local copy of the backbone)."""
    from orchestrator.pretrained.ocr import CHARACTER_KEY, characters_from_metadata

    if backbone is None or CHARACTER_KEY not in backbone.metadata:
        return None
    return characters_from_metadata(backbone.metadata)


def outcome_document(outcome, characters: list[str] | None = None) -> dict:
    """``infer --json``: row 0's label / scores / features (as before) and every batch row's
    (``labels``, ``allScores``, ``allFeatures``; ``rows`` counts them); None where the model's
    output policy releases no such part. A text recogniser's ``sequences`` (character indices
    per row) are decoded into ``texts`` with ``characters`` (None without the character list).
    ``publicLabel``: the label handed to the consumer in plaintext (policy ``public_label``)."""
    from orchestrator.pretrained.ocr import read_line

    parts = [p for p in (outcome.labels, outcome.all_scores, outcome.all_features, outcome.sequences) if p]
    texts = [read_line(s, characters) for s in outcome.sequences] if outcome.sequences and characters else None
    return {"requestId": outcome.request_id, "status": outcome.status.name, "rows": len(parts[0]) if parts else 0,
            "label": outcome.label, "scores": outcome.scores, "features": outcome.features,
            "labels": outcome.labels, "allScores": outcome.all_scores, "allFeatures": outcome.all_features,
            "sequences": outcome.sequences, "texts": texts, "text": texts[0] if texts else None,
            "publicLabel": outcome.public_label,
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
        sequences, texts = doc.get("sequences"), doc.get("texts")
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
            if texts:
                lines.append(f"{pad}text: {texts[i]!r}")
            elif sequences:
                lines.append(f"{pad}characters (indices; no character list: give the backbone with "
                             f"--backbone): " + " ".join(str(c) for c in sequences[i]))
        if not rows:
            lines.append("  prediction: none released")
        if doc.get("publicLabel") is not None:
            lines.append(f"  public label (signed, handed to the consumer): {doc['publicLabel']}")
        lines.append(f"  enclave: {doc['enclave']}")
    else:
        lines.append(f"  failure: {doc.get('failureCode')}: {doc.get('failureReason')}")
    for name, tx in doc["transactions"].items():
        lines.append(f"  tx {name}: {tx}")
    lines.append("  latency: " + ", ".join(f"{k} {v} ms" for k, v in doc["latencyMs"].items()))
    return "\n".join(lines)
