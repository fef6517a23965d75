"""`splitseal chain up|down|status` and `splitseal deploy`."""

from __future__ import annotations

import argparse

from splitseal.chain import AnvilNode, running_node, state_file
from splitseal.config import ChainConfig, Config
from splitseal.errors import ChainError

from .output import emit, note, progress


def register(sub: argparse._SubParsersAction) -> None:
    from . import group

    chain = group(sub, "chain", "start, stop or inspect the local anvil node")
    up = chain.add_parser("up", help="start anvil on loopback (free port, HTTP + WebSocket)")
    up.add_argument("--port", type=int, default=None)
    up.set_defaults(func=_up)
    down = chain.add_parser("down", help="stop the anvil node started by `chain up`")
    down.set_defaults(func=_down)
    status = chain.add_parser("status", help="show the running node")
    status.set_defaults(func=_status)

    deploy = sub.add_parser("deploy", help="deploy the five contracts (idempotent)")
    add_chain_option(deploy)
    deploy.add_argument("--quoting-key", default=None,
                        help="address of the attestation quoting key to pin "
                             "(default: the local enclave platform's)")
    deploy.set_defaults(func=_deploy)


def add_chain_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--chain", default=None,
                        help="embedded (default), anvil, or an http(s):// JSON-RPC URL")


def chain_config(args: argparse.Namespace, config: Config) -> ChainConfig:
    """The chain section with ``--chain`` applied."""
    from dataclasses import replace

    return replace(config.chain, url=args.chain) if getattr(args, "chain", None) else config.chain


def open_chain(args: argparse.Namespace, config: Config, *, start_anvil: bool = False):
    """The chain a command talks to: ``--chain`` or the configured one, under the configured home."""
    from splitseal.chain import connect

    return connect(chain_config(args, config), home=config.path(""), start_anvil=start_anvil)


def open_deployment(chain, config: Config):
    """The deployment recorded for ``chain`` under the configured home."""
    from splitseal.chain import load_deployment

    return load_deployment(chain, config.path(""))


def _node_document(node, **extra) -> dict:
    """``chain up|down|status --json``: the node's pid and endpoints."""
    return {"pid": node.pid, "port": node.port, "http": node.http_url, "ws": node.ws_url, **extra}


def _up(args: argparse.Namespace, config: Config) -> int:
    node = running_node(config.path(""))
    if node:
        emit(args, {**_node_document(node, started=False)},
             f"anvil already running: pid={node.pid} {node.http_url} {node.ws_url}")
        return 0
    path = state_file(config.path(""))
    path.parent.mkdir(parents=True, exist_ok=True)
    node = AnvilNode.start(port=args.port, log_path=path.with_suffix(".log"))
    node.save(path)
    emit(args, _node_document(node, started=True),
         f"anvil started: pid={node.pid} http={node.http_url} ws={node.ws_url}\n"
         "use it with --chain anvil; stop it with `splitseal chain down`")
    return 0


def _down(args: argparse.Namespace, config: Config) -> int:
    node = running_node(config.path(""))
    path = state_file(config.path(""))
    if not node:
        path.unlink(missing_ok=True)
        emit(args, {"stopped": False, "pid": None}, "no anvil node is running")
        return 0
    node.stop()
    path.unlink(missing_ok=True)
    emit(args, {"stopped": True, "pid": node.pid}, f"anvil stopped (pid={node.pid})")
    return 0


def _status(args: argparse.Namespace, config: Config) -> int:
    node = running_node(config.path(""))
    if not node:
        raise ChainError("no anvil node is running; start one with `splitseal chain up`")
    emit(args, _node_document(node, running=True),
         f"anvil running: pid={node.pid} http={node.http_url} ws={node.ws_url}")
    return 0


def _deploy(args: argparse.Namespace, config: Config) -> int:
    from orchestrator.deploy import ensure_deployed
    from splitseal.chain import deployment_path

    with open_chain(args, config) as chain:
        admin = chain.accounts[0]
        quoting_key = args.quoting_key or _local_quoting_key(config)
        deployment = ensure_deployed(chain, admin, home=config.path(""), quoting_key=quoting_key, progress=progress)
        record = deployment.to_json()
        if args.json:
            emit(args, record)
            return 0
        verb = "found live deployment" if deployment.reused else "deployed"
        print(f"{verb} on chain {chain.name} (chain id {chain.chain_id}), "
              f"record: {deployment_path(chain.chain_id, config.path(''))}")
        for name, address in record["contracts"].items():
            print(f"  {name:22s} {address}")
        if chain.url is None:  # gone when this command ends
            note(args, "note: the embedded chain lives inside this process; `splitseal demo` deploys "
                  "and uses it in one run. Use --chain anvil for a chain that outlives the command.")
    return 0


def _local_quoting_key(config: Config) -> str:
    """The quoting key address of the local enclave platform, when one is set up."""
    try:
        from enclave.platform import quoting_key_address  # type: ignore[attr-defined]
    except ImportError:
        return "0x" + "00" * 20
    return quoting_key_address(config.path(config.enclave.state_dir))
