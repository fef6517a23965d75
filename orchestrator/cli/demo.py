"""`splitseal demo`: the README's main command."""

from __future__ import annotations

import argparse

from splitseal.config import Config

from .chain import add_chain_option
from .output import emit, note


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="the whole flow: deploy, split, attest, provision, infer, audit")
    add_chain_option(p)
    p.add_argument("--requests", type=int, default=20, help="inference requests to send (default 20)")
    p.add_argument("--state-dir", default=None, help="working directory (default var/demo, wiped first)")
    p.add_argument("--no-mpc", action="store_true", help="skip the MPC feature-share section")
    p.add_argument("--no-pretrained", action="store_true",
                   help="skip the real pretrained models (SFace on ORL faces, PP-OCRv4 on text lines)")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace, config: Config) -> int:
    from dataclasses import asdict

    from orchestrator.demo import run_demo

    state_dir = config.path(args.state_dir or "var/demo")
    # the steps are the demo's progress: on stderr under --json, so stdout is the result alone
    result = run_demo(config, chain_target=args.chain or config.chain.url, requests=args.requests,
                      state_dir=state_dir, mpc=not args.no_mpc,
                      pretrained=not args.no_pretrained, say=lambda line: note(args, line))
    emit(args, {**asdict(result), "report": str(state_dir / "audit.html")},
         f"\ndemo finished on {result.chain}: {result.completed}/{result.requests} requests served, "
         f"accuracy {result.accuracy:.4f} = plaintext {result.plaintext_accuracy:.4f}, "
         f"audit of request {result.audited_request} {'verified' if result.audit_verified else 'NOT verified'}, "
         f"{result.gas_per_request} gas for its whole lifecycle")
    return 0
