"""CrypTen 0.4.1 side of scripts/bench_crypten_sface; runs in .venv/crypten (scripts/setup_crypten).

Reads the network our engine runs (the layers mpc.client.owner.load_onnx lowered from the float32
SFace ONNX: BatchNorm folded, the input Sub/Mul as a depthwise 1x1 conv), rebuilds it in torch
(Conv2d with groups, PReLU, Flatten, Linear), checks it in plaintext against onnxruntime on the
original ONNX file, then runs it with CrypTen: 2 parties (crypten.mpc.run_multiprocess, gloo over
loopback), batch 1, input shared by party 1, weights either shared by party 0 (``shared``) or
public to both (``public``: convolutions and linear layers local, PReLU via CrypTen's ReLU).
Prints one JSON object on stdout. Imports nothing from the project: this venv has only torch,
crypten, onnxruntime and numpy.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import numpy as np


def load_layers(path: str) -> list[dict]:
    data = np.load(path, allow_pickle=False)
    specs = json.loads(str(data["specs"]))
    for i, spec in enumerate(specs):
        for key in ("weight", "bias"):
            if f"{key}{i}" in data:
                spec[key] = data[f"{key}{i}"]
    return specs


def torch_model(specs: list[dict]):
    import torch

    mods = []
    for s in specs:
        p = s["params"]
        if p.get("inputs") not in (None, [len(mods) - 1]):
            raise SystemExit(f"layer {len(mods)} reads {p['inputs']}: only a chain of layers is supported here")
        if s["op"] == "conv":
            w = torch.tensor(s["weight"], dtype=torch.float32)
            pads = p.get("pads", [0, 0, 0, 0])
            if pads[0] != pads[2] or pads[1] != pads[3] or p.get("dilations", [1, 1]) != [1, 1]:
                raise SystemExit(f"conv {len(mods)}: asymmetric pads or dilation are not supported here")
            groups = int(p.get("group", 1))
            m = torch.nn.Conv2d(w.shape[1] * groups, w.shape[0], tuple(w.shape[2:]), stride=tuple(p["strides"]),
                                padding=(pads[0], pads[1]), groups=groups)
            m.weight.data.copy_(w)
            m.bias.data.copy_(torch.tensor(s["bias"], dtype=torch.float32))
        elif s["op"] == "act" and p["kind"] == "prelu":
            slope = torch.tensor(p["slope"], dtype=torch.float32).reshape(-1)
            m = torch.nn.PReLU(slope.numel())
            m.weight.data.copy_(slope)
        elif s["op"] == "act" and p["kind"] == "relu":
            m = torch.nn.ReLU()
        elif s["op"] == "flatten":
            m = torch.nn.Flatten()
        elif s["op"] == "linear":
            w = torch.tensor(s["weight"], dtype=torch.float32)
            m = torch.nn.Linear(w.shape[1], w.shape[0])
            m.weight.data.copy_(w)
            m.bias.data.copy_(torch.tensor(s["bias"], dtype=torch.float32))
        else:
            raise SystemExit(f"layer {len(mods)}: {s['op']} {p.get('kind', '')} is not supported here")
        mods.append(m)
    return torch.nn.Sequential(*mods).eval()


def check_plain(tm, onnx_path: str, x: np.ndarray) -> dict:
    """Plaintext torch vs onnxruntime (float32, the same file our engine loads)."""
    import onnxruntime as ort
    import torch

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(onnx_path, opts, providers=["CPUExecutionProvider"])
    ref = sess.run(None, {sess.get_inputs()[0].name: x.astype(np.float32)})[0]
    with torch.no_grad():
        out = tm(torch.tensor(x, dtype=torch.float32)).numpy()
    return {"torch_vs_ort_max_abs_diff": float(np.abs(out - ref).max()), "ort_abs_max": float(np.abs(ref).max()),
            "ort": ref}


def secure_forward(tm, xe, weights: dict | None):
    """The network on a shared input; ``weights`` holds the shared parameters (None: public ones)."""
    import torch

    for i, m in enumerate(tm):
        if isinstance(m, torch.nn.Conv2d):
            w, b = (weights[f"w{i}"], weights[f"b{i}"]) if weights else (m.weight.data, m.bias.data)
            xe = xe.conv2d(w, stride=m.stride, padding=m.padding, groups=m.groups) + b.view(1, -1, 1, 1)
        elif isinstance(m, torch.nn.PReLU):
            # prelu(x) = relu(x) + a * (x - relu(x)); with a shared slope that is a Beaver product
            a = weights[f"w{i}"] if weights else m.weight.data
            r = xe.relu()
            xe = r + (xe - r) * a.view(1, -1, 1, 1)
        elif isinstance(m, torch.nn.ReLU):
            xe = xe.relu()
        elif isinstance(m, torch.nn.Flatten):
            xe = xe.flatten(start_dim=1)
        elif isinstance(m, torch.nn.Linear):
            w, b = (weights[f"w{i}"], weights[f"b{i}"]) if weights else (m.weight.data, m.bias.data)
            xe = xe.matmul(w.t()) + b
    return xe


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", required=True, help="npz written by scripts/bench_crypten_sface")
    ap.add_argument("--onnx", required=True, help="the float32 ONNX the layers came from")
    ap.add_argument("--input", required=True, help=".npy, shape (1, 3, 112, 112)")
    ap.add_argument("--weights", choices=("shared", "public"), default="shared")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--check-only", action="store_true", help="plaintext torch vs onnxruntime only")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    tm = torch_model(load_layers(args.layers))
    x = np.load(args.input)
    check = check_plain(tm, args.onnx, x)
    ref = check.pop("ort")
    if args.check_only:
        print(json.dumps(check))
        return 0

    import crypten
    import crypten.communicator as comm
    import crypten.mpc as mpc

    @mpc.run_multiprocess(world_size=2)
    def run():
        crypten.cfg.communicator.verbose = True  # byte and round counting
        torch.set_num_threads(1)  # 2 parties on 2 cores
        rank = comm.get().get_rank()
        xt = torch.tensor(x, dtype=torch.float32)
        weights = None
        if args.weights == "shared":  # model owner = party 0
            weights = {}
            for i, m in enumerate(tm):
                if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
                    weights[f"w{i}"] = crypten.cryptensor(m.weight.data, src=0)
                    weights[f"b{i}"] = crypten.cryptensor(m.bias.data, src=0)
                elif isinstance(m, torch.nn.PReLU):
                    weights[f"w{i}"] = crypten.cryptensor(m.weight.data, src=0)
        walls, stats, out = [], None, None
        for r in range(args.reps + 1):  # the first is a warm-up
            comm.get().barrier()
            t0 = time.perf_counter()
            xe = crypten.cryptensor(xt if rank == 1 else torch.empty_like(xt), src=1)  # face owner = party 1
            comm.get().reset_communication_stats()
            with crypten.no_grad():
                ye = secure_forward(tm, xe, weights)
            st = comm.get().get_communication_stats()
            comm.get().barrier()
            wall = time.perf_counter() - t0
            out = ye.get_plain_text().numpy()
            if r:
                walls.append(wall)
                stats = st
        return {"rank": rank, "walls": walls, "rounds": stats["rounds"], "bytes": stats["bytes"], "out": out.tolist()}

    res = run()
    if not res or any(r is None for r in res):
        print(json.dumps({"error": "a CrypTen party failed (its traceback is above)"}))
        return 1
    a, b = sorted(res, key=lambda r: r["rank"])
    out = np.asarray(a["out"])
    row = {"weights": args.weights, "reps": args.reps, "latency_ms": statistics.median(a["walls"]) * 1e3,
           "latencies_ms": [w * 1e3 for w in a["walls"]], "rounds": a["rounds"],
           # CrypTen counts what each party sends and receives: the sum over parties / 2 is on the wire
           "bytes": (a["bytes"] + b["bytes"]) / 2, "max_abs_error_vs_ort": float(np.abs(out - ref).max()), **check}
    print(json.dumps(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
