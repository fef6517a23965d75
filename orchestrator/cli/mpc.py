"""`splitseal mpc ...`: the MPC feature-share cluster on loopback.

IMAGE arguments: a ``.npy`` array (2-D gray, 3-D C x H x W or H x W x C; integers are divided by
their type's maximum, floats above 1 by 255), or an image Pillow reads: PNG (grey, palette, RGB(A),
8 or 16 bit), JPEG, PGM/PPM. The terminal normalises it to the model's input size and rejects blank or constant
captures before anything is shared.

With ``mpc up --chain anvil`` (or a URL), the cluster's node set is registered in
``FeatureShareRegistry`` and every enrolment and decision is recorded there; the embedded chain
lives only inside one process, so it cannot be used across CLI calls (the Python API can).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from splitseal.config import Config
from splitseal.errors import ConfigError, InvalidInputError

from .output import emit, event, progress

SFACE = "sface"


def register(sub: argparse._SubParsersAction) -> None:
    from . import group

    mpc = group(sub, "mpc", "MPC feature-share nodes: biometric enrolment and recognition on secret shares")
    up = mpc.add_parser("up", help="start the dealer and N nodes as processes on loopback")
    up.add_argument("--parties", type=int, default=None, help="number of nodes, 2..4 (default: [mpc] parties)")
    up.add_argument("--model", default=None,
                    help="ONNX embedding model, or `sface` for the SFace face model fetched by scripts/setup "
                         "(default: models/digits_embedding.onnx)")
    up.add_argument("--capture", default=None,
                    help="how the terminal prepares a capture: unit (scaled to 0..1 and resized: the digits "
                         "models) or face (YuNet detection and alignment, 0..255: SFace); default: face for "
                         "`--model sface`, else unit")
    up.add_argument("--random", choices=("small", "big"), default=None,
                    help="use a random-weight network of the benchmark instead of a trained model")
    up.add_argument("--mode", choices=("shared", "plaintext"), default="shared",
                    help="shared: weights split into shares mod 2^64 (no node holds the model); "
                         "plaintext: every node gets the same plaintext kernels (faster)")
    up.add_argument("--threshold", type=float, default=None, help="cosine acceptance threshold")
    up.add_argument("--chain", default=None, help="record results on anvil or an http(s) URL")
    up.set_defaults(func=_up)

    infer = mpc.add_parser("infer", help="hybrid inference: the nodes run the backbone on shares of the image, "
                                         "the enclave reconstructs its output, runs the head and signs on-chain")
    infer.add_argument("image", help="the capture (.npy, .png, .pgm); it never leaves this process whole")
    infer.add_argument("--model", required=True, help="model id (0x-prefixed bytes32) or model name, split by a "
                                                      "rule whose backbone the cluster runs (`mpc up --model`)")
    infer.add_argument("--version", type=int, default=None, help="model version (default: latest)")
    infer.add_argument("--socket", default=None, help="the serving enclave's socket (default: [enclave].socket_path)")
    infer.add_argument("--authorize", action="store_true",
                       help="grant the relay account NODE_ROLE with the admin key (development chains)")
    infer.add_argument("--timeout", type=float, default=120.0)
    infer.set_defaults(func=_infer)

    down = mpc.add_parser("down", help="stop the cluster's processes")
    down.set_defaults(func=_down)
    status = mpc.add_parser("status", help="show the nodes and their enrolled subjects count")
    status.set_defaults(func=_status)

    example = mpc.add_parser("example-image", help="write a held-out test digit or an ORL face as a PNG capture",
                             description="Write one held-out test digit of a class, or one ORL face, as an 8-bit "
                                         "greyscale PNG capture (digits: for the digits embedding model; faces: "
                                         "for `mpc up --model sface`). Example: splitseal mpc "
                                         "example-image --digit 3 --out alice.png; --index 1 gives another "
                                         "sample of the same digit (a probe); --face s1 --index 2 the second "
                                         "photo of ORL person s1.")
    which = example.add_mutually_exclusive_group(required=True)
    which.add_argument("--digit", type=int, help="the class, 0..9")
    which.add_argument("--face", help="an ORL person, s1..s40 (the face data of scripts/setup)")
    example.add_argument("--index", type=int, default=None,
                         help="which sample of that class (default 0) or which photo of that person, 1..10 "
                              "(default 1)")
    example.add_argument("--out", required=True, help="the .png file to write")
    example.set_defaults(func=_example_image)

    enroll = mpc.add_parser("enroll", help="enrol a subject from a capture")
    enroll.add_argument("--subject", required=True)
    enroll.add_argument("image")
    enroll.set_defaults(func=_enroll)
    verify = mpc.add_parser("verify", help="1:1 verification of a claimed subject")
    verify.add_argument("--subject", required=True)
    verify.add_argument("--threshold", type=float, default=None)
    verify.add_argument("image")
    verify.set_defaults(func=_verify)
    identify = mpc.add_parser("identify", help="1:N identification among enrolled subjects")
    identify.add_argument("--threshold", type=float, default=None)
    identify.add_argument("image")
    identify.set_defaults(func=_identify)

    audit = mpc.add_parser("audit", help="rebuild and verify a subject's enrolments and decisions from chain events")
    audit.add_argument("subject")
    audit.set_defaults(func=_audit)

    node = group(mpc, "node", "one node process")
    run = node.add_parser("run", help="run one node (or the dealer) of the cluster in the foreground")
    run.add_argument("--party", type=int, default=None)
    run.add_argument("--dealer", action="store_true")
    run.add_argument("--state-dir", default=None)
    run.set_defaults(func=_node_run)


def _state(config: Config) -> Path:
    return config.path(config.mpc.state_dir)


def _model(args: argparse.Namespace, config: Config):
    from mpc.client.owner import BIG_SPEC, SMALL_SPEC, load_onnx, random_model

    if args.random:
        spec, shape = (SMALL_SPEC, (1, 28, 28)) if args.random == "small" else (BIG_SPEC, (3, 64, 64))
        return random_model(spec, shape, seed=0), None
    if args.model == SFACE:
        from mpc.client import faces

        if not faces.available():
            raise InvalidInputError(f"the face data is missing from {faces.cache_dir()}; run scripts/setup "
                                    "(python -m mpc.client.faces fetch)")
        return load_onnx(faces.sface_path()), faces.sface_path()
    if args.model:
        path = Path(args.model)
    else:  # the committed reference model, wherever the home directory is
        from orchestrator.training import reference_model_path

        path = reference_model_path("digits_embedding")
    if not path.exists():
        raise InvalidInputError(f"embedding model {path} not found; train it (`splitseal model train`), "
                                "pass --model, or use --random small")
    return load_onnx(path), path


def _example_image(args: argparse.Namespace, config: Config) -> int:
    import numpy as np
    from PIL import Image

    if args.face is not None:
        from mpc.client import faces

        pixels, what = faces.example_capture(args.face, 1 if args.index is None else args.index)
        record = {"face": args.face, "index": 1 if args.index is None else args.index}
        what = f"ORL {what}"
    else:
        from orchestrator.training import load_split

        index = args.index or 0
        if not 0 <= args.digit <= 9:
            raise InvalidInputError(f"--digit must be 0..9, got {args.digit}")
        _, _, x_test, y_test = load_split()
        samples = x_test[y_test == args.digit]
        if not 0 <= index < len(samples):
            raise InvalidInputError(f"--index must be 0..{len(samples) - 1} for digit {args.digit}")
        pixels = np.clip(np.asarray(samples[index]).reshape(samples.shape[-2:]) * 255.0, 0, 255).astype(np.uint8)
        record = {"digit": args.digit, "index": index}
        what = f"digit {args.digit}, sample {index}"
    try:
        Image.fromarray(pixels, mode="L").save(args.out, format="PNG")
    except OSError as exc:
        raise InvalidInputError(f"cannot write {args.out} ({exc.strerror or exc}); give a writable --out") from None
    emit(args, {"file": str(args.out), **record, "width": int(pixels.shape[1]), "height": int(pixels.shape[0])},
         f"wrote {args.out}: {what}, {pixels.shape[1]}x{pixels.shape[0]} greyscale")
    return 0


def _default_threshold(args: argparse.Namespace, model_path: Path | None) -> float:
    from mpc.client.cluster import DEFAULT_THRESHOLD
    from mpc.client.owner import recorded_threshold

    if args.model == SFACE:
        from mpc.client.faces import SFACE_THRESHOLD

        return SFACE_THRESHOLD
    found = recorded_threshold(model_path) if model_path is not None else None
    return DEFAULT_THRESHOLD if found is None else found


def _up(args: argparse.Namespace, config: Config) -> int:
    from mpc.client import cluster as cl

    parties = args.parties or config.mpc.parties
    model, path = _model(args, config)
    threshold = args.threshold if args.threshold is not None else _default_threshold(args, path)
    capture = args.capture or ("face" if args.model == SFACE else "unit")
    state = _state(config)
    if args.chain == "embedded":
        raise ConfigError("the embedded chain lives inside one process; use --chain anvil or a URL")
    progress(f"starting the dealer and {parties} nodes, installing the model "
             f"({'weights as shares mod 2^64' if args.mode == 'shared' else 'plaintext kernels'})")
    info = cl.up(state, model, parties=parties, shared=args.mode == "shared", host=config.mpc.host,
                 threshold=threshold, frac_bits=config.mpc.fractional_bits, base_port=config.mpc.base_port,
                 capture=capture)
    if args.chain:
        chain, deployment, admin = _connect(args.chain, config)
        client = cl.MpcClient(info)
        progress("registering the node set in FeatureShareRegistry")
        try:
            set_id = cl.register_node_set(chain, deployment.feature_share_registry, client.addresses(), admin)
        finally:
            client.close()
        cl.record_chain(state, args.chain, deployment.feature_share_registry.address, set_id)
        registered = {"setId": set_id, "registry": deployment.feature_share_registry.address}
    else:
        registered = {"setId": None, "registry": None}
    emit(args, {"parties": parties, "host": config.mpc.host, "stateDir": str(state), "mode": args.mode,
                "capture": capture, "threshold": threshold, "model": str(path) if path else None,
                "nodePorts": list(info.node_ports), "dealerPort": info.dealer_port, **registered},
         (f"node set {registered['setId']} registered in FeatureShareRegistry {registered['registry']}\n"
          if registered["setId"] is not None else "")
         + f"MPC cluster up: {parties} nodes + dealer on {config.mpc.host}, state in {state}, "
           f"model={path.name if path else 'random ' + args.random}, mode={args.mode}, capture={capture}, "
           f"threshold={threshold:.4f}")
    return 0


def _connect(url: str, config: Config):
    from dataclasses import replace

    from orchestrator.deploy import ensure_deployed
    from splitseal.chain import connect

    chain = connect(replace(config.chain, url=url), home=config.path(""))
    admin = chain.accounts[0]
    return chain, ensure_deployed(chain, admin, home=config.path("")), admin


def _client(config: Config):
    from mpc.client import cluster as cl
    from mpc.node.node import ClusterInfo

    state = _state(config)
    info = ClusterInfo.load(state)
    binding = None
    rec = cl.chain_record(state)
    if rec:
        chain, deployment, admin = _connect(rec["url"], config)
        binding = cl.ChainBinding(chain, deployment.feature_share_registry, int(rec["set_id"]), admin)
    return cl.MpcClient(info, binding)


def _steps(client) -> str:
    """What an enrolment or a recognition does, for its progress line."""
    where = " and recording the result on-chain" if client.chain else ""
    return f"sharing the capture among {len(client.channels)} nodes, computing feature shares{where}"


def _infer(args: argparse.Namespace, config: Config) -> int:
    """One hybrid request (orchestrator.hybrid): exit 0 completed, 1 failed on-chain."""
    from chain_node.hybrid import HybridRelay
    from mpc.client import cluster as cl
    from mpc.client.terminal import read_image
    from orchestrator.hybrid import HybridRequester
    from orchestrator.node_setup import load_or_create_x25519_key, require_node_role
    from orchestrator.requester import Requester
    from splitseal.enclave_client import EnclaveClient

    from .enclave import parse_model_id
    from .node import outcome_document, render_outcome, requester_account

    image = read_image(args.image)  # input errors first, before any node is contacted
    state = _state(config)
    cluster = cl.ClusterInfo.load(state)  # says so when no cluster is up
    rec = cl.chain_record(state)
    if not rec:
        raise ConfigError("this MPC cluster reports to no chain; start it with `splitseal mpc up --chain anvil "
                          "--model var/split/node/backbone.onnx` (the backbone of a hybrid split)")
    chain, deployment, _ = _connect(rec["url"], config)
    client = cl.MpcClient(cluster)
    try:
        model_id = parse_model_id(args.model)
        version = args.version or int(chain.call(deployment.model_registry.functions.latestVersion(model_id)))
        if version == 0:
            raise InvalidInputError(f"model {args.model} is not registered on this deployment")
        relay_account = chain.accounts[4] if len(chain.accounts) > 4 else chain.accounts[0]
        if args.authorize:
            be = deployment.backbone_execution
            role = chain.call(be.functions.NODE_ROLE())
            if not chain.call(be.functions.hasRole(role, relay_account.address)):
                chain.transact(be.functions.grantRole(role, relay_account.address), sender=chain.accounts[0])
        require_node_role(chain, deployment, relay_account)
        requester = Requester(chain, deployment, requester_account(chain),
                              key=load_or_create_x25519_key(config.path("var/requester/key")),
                              blob_dir=config.path(config.node.blob_dir))
        with EnclaveClient(Path(args.socket) if args.socket else config.path(config.enclave.socket_path)) as enclave:
            relay = HybridRelay(chain, deployment, relay_account, enclave, blob_dir=config.path(config.node.blob_dir))
            hybrid = HybridRequester(requester, client, int(rec["set_id"]), relay, enclave.status().enclave)
            result = hybrid.infer(model_id, version, image, timeout=args.timeout)
        requester.close()
    finally:
        client.close()
        chain.close()
    doc = {**outcome_document(result.outcome), "hybrid": {
        "setId": result.set_id, "nodes": list(result.nodes),
        "contributed": [c.node for c in result.delivery.contributions],
        "secondsPerStage": {k: round(v, 3) for k, v in result.seconds.items()}}}
    emit(args, doc, render_outcome(doc) + f"\n  hybrid: node set {result.set_id}, shares from "
                                          f"{', '.join(doc['hybrid']['contributed']) or 'none'}")
    return 0 if result.outcome.ok else 1


def _down(args: argparse.Namespace, config: Config) -> int:
    from mpc.client.cluster import down

    stopped = down(_state(config))
    emit(args, {"stopped": stopped},
         f"stopped {len(stopped)} MPC processes" if stopped else "no MPC cluster was running")
    return 0


def _status(args: argparse.Namespace, config: Config) -> int:
    client = _client(config)
    try:
        nodes = client.status()
    finally:
        client.close()
    emit(args, {"nodes": nodes}, "\n".join(
        f"node {s['party']}: model={'yes' if s['model'] else 'no'} enrolled={s['enrolled']} "
        f"pending={s['pending']} address={s['address']}" for s in nodes))
    return 0


def _enroll(args: argparse.Namespace, config: Config) -> int:
    from mpc.client.terminal import read_image

    image = read_image(args.image)  # input errors first, before any node is contacted
    client = _client(config)
    progress(f"{_steps(client)}; enrolling {args.subject!r}")
    try:
        r = client.enroll(args.subject, image)
    finally:
        client.close()
    emit(args, {"subject": r.subject, "session": r.session, "commitments": ["0x" + c.hex() for c in r.commitments],
                "tx": r.tx},
         f"enrolled {r.subject} (session {r.session[:16]}); share commitments: "
         + ", ".join(c.hex()[:16] for c in r.commitments) + (f"; tx {r.tx}" if r.tx else ""))
    return 0


def _print_decision(args: argparse.Namespace, r) -> None:
    verdict = "ACCEPTED" if r.accepted else "REJECTED"
    who = f" subject={r.subject}" if r.subject else ""
    emit(args, {"kind": r.kind, "accepted": r.accepted, "subject": r.subject, "score": r.score,
                "session": r.session, "probeCommitment": "0x" + r.probe_commitment.hex(), "tx": r.tx},
         f"{r.kind}: {verdict}{who} score={r.score:.4f} session={r.session[:16]}" + (f" tx={r.tx}" if r.tx else ""))


def _verify(args: argparse.Namespace, config: Config) -> int:
    from mpc.client.terminal import read_image

    image = read_image(args.image)  # input errors first, before any node is contacted
    client = _client(config)
    progress(f"{_steps(client)}; comparing with {args.subject!r}")
    try:
        r = client.verify(args.subject, image, args.threshold)
    finally:
        client.close()
    _print_decision(args, r)
    return 0 if r.accepted else 1


def _identify(args: argparse.Namespace, config: Config) -> int:
    from mpc.client.terminal import read_image

    image = read_image(args.image)  # input errors first, before any node is contacted
    client = _client(config)
    progress(f"{_steps(client)}; comparing with every enrolled subject")
    try:
        r = client.identify(image, args.threshold)
    finally:
        client.close()
    _print_decision(args, r)
    return 0 if r.accepted else 1


def _audit(args: argparse.Namespace, config: Config) -> int:
    from mpc.client import cluster as cl
    from mpc.client.audit import subject_history

    rec = cl.chain_record(_state(config))
    if not rec:
        raise ConfigError("this MPC cluster reports to no chain; start it with `splitseal mpc up --chain anvil`")
    chain, deployment, _ = _connect(rec["url"], config)
    h = subject_history(chain, deployment.feature_share_registry, args.subject)
    if args.json:
        emit(args, {
            "subjectId": "0x" + h.subject_id.hex(), "verified": h.verified,
            "enrolments": [{"setId": e.set_id, "enrolment": e.enrolment, "block": e.block, "tx": e.tx,
                            "commitments": ["0x" + c.hex() for c in e.commitments], "signersOk": e.signers_ok,
                            "problems": e.problems} for e in h.enrolments],
            "revocations": h.revocations,
            "decisions": [{"setId": d.set_id, "session": "0x" + d.session.hex(), "kind": d.kind,
                           "accepted": d.accepted, "probeCommitment": "0x" + d.probe_commitment.hex(),
                           "block": d.block, "tx": d.tx, "signersOk": d.signers_ok, "problems": d.problems}
                          for d in h.decisions]})
    else:
        print(f"subject {args.subject} (0x{h.subject_id.hex()}): {'VERIFIED' if h.verified else 'PROBLEMS'}")
        for e in h.enrolments:
            print(f"  enrolment #{e.enrolment} set {e.set_id} block {e.block}: {len(e.commitments)} commitments, "
                  f"signatures {'ok' if e.signers_ok else '; '.join(e.problems)}")
        for r in h.revocations:
            print(f"  revoked in set {r['set_id']} block {r['block']} by {r['by']}")
        for d in h.decisions:
            print(f"  {d.kind} session 0x{d.session.hex()[:16]} block {d.block}: "
                  f"{'accepted' if d.accepted else 'rejected'}, signatures {'ok' if d.signers_ok else '; '.join(d.problems)}")
    return 0 if h.verified else 1


def _node_run(args: argparse.Namespace, config: Config) -> int:
    from mpc.node import run_service

    if not args.dealer and args.party is None:
        raise InvalidInputError("give --party I (or --dealer)")
    return run_service(args.state_dir or _state(config), args.party, args.dealer,
                       events=(lambda name, **fields: event(args, name, **fields)) if args.json else None)
