"""`splitseal audit request ID | model ID | enclave ADDRESS | subject ID`: histories rebuilt from
events and verified, on any chain reachable by URL, from our deployment record, the operator's
(``--deployment FILE``) or the registry's address alone (``--registry``); every contract's code is
checked against the build artifacts first."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from splitseal.config import Config
from splitseal.errors import ConfigError, InvalidInputError

from .chain import add_chain_option, open_chain, open_deployment
from .output import emit


def register(sub: argparse._SubParsersAction) -> None:
    from . import group

    audit = group(sub, "audit", "rebuild and verify histories from on-chain events alone")
    def command(name: str, help: str, func: Any) -> argparse.ArgumentParser:
        """An audit command: the chain, where its deployment comes from, --json."""
        p = audit.add_parser(name, help=help)
        add_chain_option(p)
        _add_deployment_options(p)
        p.set_defaults(func=func)
        return p

    p = command("request", "one inference request: every stage, signature, enclave, hash chain; a hybrid "
                           "request's node set and each node's signed share", cmd_request)
    p.add_argument("request_id", type=int)
    p.add_argument("--blobs", default=None, metavar="DIR",
                   help="the blob store holding a hybrid request's contributions record (default: [node].blob_dir)")
    p = command("model", "a model: registration, split hashes, enclaves, provisioning, requests", cmd_model)
    p.add_argument("model", help="model id (0x-prefixed bytes32) or model name")
    p.add_argument("--html", default=None, help="also write an HTML report (timeline, latency and gas plots)")
    p = command("enclave", "an enclave's answers: the numbers delivered on-chain and any gaps "
                           "(answers given off the record)", cmd_enclave)
    p.add_argument("enclave", help="the enclave's address")
    p.add_argument("--socket", default=None,
                   help="also ask the running enclave how many answers it issued (its socket)")
    p = command("subject", "an MPC subject: enrolment commitments and co-signed decisions", cmd_subject)
    p.add_argument("subject", help="subject id (0x-prefixed bytes32) or the subject's name")


def _add_deployment_options(p: argparse.ArgumentParser) -> None:
    where = p.add_mutually_exclusive_group()
    where.add_argument("--deployment", default=None, metavar="FILE",
                       help="the operator's deployment record (deployments/<chain id>.json) instead of ours")
    where.add_argument("--registry", default=None, metavar="ADDRESS",
                       help="only the ModelRegistry's address: the rest is found from on-chain logs")


def _open(args: argparse.Namespace, config: Config):
    chain = open_chain(args, config)
    if chain.url is None:  # the chain lives inside this process
        chain.close()
        raise ConfigError("the embedded chain lives inside one process, so there is nothing to audit from here; "
                          "audit a chain that outlives commands (--chain anvil or a URL), or see the audit "
                          "that `splitseal demo` prints")
    try:
        if getattr(args, "registry", None):
            from splitseal.chain import discover_deployment

            return chain, discover_deployment(chain, args.registry)
        if getattr(args, "deployment", None):
            from splitseal.chain import load_deployment

            return chain, load_deployment(chain, config.path(""), path=Path(args.deployment))
        return chain, open_deployment(chain, config)
    except BaseException:
        chain.close()  # `--chain anvil` may have started a private node: stop it
        raise


def cmd_enclave(args: argparse.Namespace, config: Config) -> int:
    from orchestrator.audit import Auditor
    from splitseal.enclave_client import EnclaveClient

    issued = None
    if args.socket:
        with EnclaveClient(Path(args.socket)) as client:
            status = client.status()
        if status.enclave.lower() != args.enclave.lower():
            raise InvalidInputError(f"the enclave at {args.socket} is {status.enclave}, not {args.enclave}")
        issued = status.sequence
    chain, deployment = _open(args, config)
    with chain:
        answers = Auditor(chain, deployment).enclave_answers(args.enclave, issued=issued)
    check = answers.check()
    emit(args, {**answers.to_json(), "ok": check.ok}, f"[{'ok' if check.ok else 'FAIL'}] {check.name}: {check.detail}")
    return 0 if check.ok else 1


def cmd_request(args: argparse.Namespace, config: Config) -> int:
    from orchestrator.audit import Auditor, render_request

    chain, deployment = _open(args, config)
    with chain:
        blobs = args.blobs or config.path(config.node.blob_dir)
        audit = Auditor(chain, deployment, blob_dir=blobs).request(args.request_id)
    emit(args, audit.to_json(), render_request(audit))
    return 0 if audit.verified else 1


def cmd_model(args: argparse.Namespace, config: Config) -> int:
    from orchestrator.audit import Auditor, render_html, render_model

    from .enclave import parse_model_id

    chain, deployment = _open(args, config)
    with chain:
        audit = Auditor(chain, deployment).model(parse_model_id(args.model))
    emit(args, audit.to_json(), render_model(audit))
    if args.html:
        html_path = Path(args.html)
        try:
            html_path.parent.mkdir(parents=True, exist_ok=True)
            html_path.write_text(render_html(audit))
        except OSError as exc:
            raise InvalidInputError(f"cannot write the HTML report to {html_path} ({exc.strerror}); "
                                    "give a writable path with --html") from None
        # with --json, stdout carries the JSON document alone
        print(f"HTML report: {html_path}", file=sys.stderr if args.json else sys.stdout)
    return 0 if audit.verified else 1


def cmd_subject(args: argparse.Namespace, config: Config) -> int:
    from dataclasses import asdict

    from mpc.client.audit import subject_history

    chain, deployment = _open(args, config)
    subject = args.subject
    if subject.startswith("0x") and len(subject) == 66:
        try:
            subject = bytes.fromhex(subject[2:])
        except ValueError:
            chain.close()
            raise InvalidInputError(f"subject {args.subject!r} looks like a bytes32 id but is not hex; give "
                                    "0x + 64 hex digits, or the subject's name") from None
    with chain:
        history = subject_history(chain, deployment.feature_share_registry, subject, from_block=deployment.block)
    doc = {"subjectId": "0x" + history.subject_id.hex(), "verified": history.verified,
           "nodeSets": history.node_sets, "enrolments": [asdict(e) for e in history.enrolments],
           "revocations": history.revocations, "decisions": [asdict(d) for d in history.decisions]}
    emit(args, doc, render_subject(history))
    recorded = bool(history.enrolments or history.decisions or history.revocations)
    return 0 if history.verified and recorded else 1


def render_subject(history) -> str:
    if not (history.enrolments or history.decisions or history.revocations):
        return (f"subject 0x{history.subject_id.hex()}: nothing recorded on this deployment "
                "(no enrolment, decision or revocation)")
    lines = [f"subject 0x{history.subject_id.hex()}: {'VERIFIED' if history.verified else 'NOT VERIFIED'}"]
    for e in history.enrolments:
        lines.append(f"  enrolled in set {e.set_id} at block {e.block} tx {e.tx[:18]}…: "
                     f"{len(e.commitments)} share commitments, node signatures "
                     f"{'ok' if e.signers_ok else 'BAD: ' + '; '.join(e.problems)}")
    for r in history.revocations:
        lines.append(f"  revoked in set {r['set_id']} at block {r['block']} by {r['by']}")
    for d in history.decisions:
        lines.append(f"  {d.kind} at block {d.block}: {'accepted' if d.accepted else 'rejected'}, "
                     f"co-signed by all nodes: {'ok' if d.signers_ok else 'BAD: ' + '; '.join(d.problems)}")
    return "\n".join(lines)
