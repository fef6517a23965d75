"""The HTML report of a model's audit, for an auditor to read and sign off.

One self-contained file: a header (chain id, contract addresses, block range, when and by which
tool version it was made, the verdict), the registered model versions and their hashes, the
enclave registrations and revocations, one row per request (status in colour, failure reason,
requester, node, gas, readable UTC times, every check with its detail), the latency and gas
distributions with axes and percentiles (drawn by matplotlib as inline SVG), and the raw JSON of
the audit embedded (``<script type="application/json" id="audit-json">``) so that a reader can
re-check any figure.

Latency is what the chain can vouch for: from the block that carries the request to the block
that ends it, in seconds of block time (timestamps have one-second resolution) and in blocks.
"""

from __future__ import annotations

import html
import io
import json
from datetime import datetime, timezone
from typing import Any, Sequence

from orchestrator import version

from .checks import AuditEvent, ModelAudit, RequestAudit

_STATUS_CLASS = {"COMPLETED": "completed", "FAILED": "failed", "TIMED_OUT": "failed"}


def _utc(ts: int | float) -> str:
    return datetime.fromtimestamp(int(ts), tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _e(value: Any) -> str:
    return html.escape(str(value))


def _event(r: RequestAudit, name: str) -> AuditEvent | None:
    return next((e for e in r.events if e.name == name), None)


def _latency(r: RequestAudit) -> tuple[int, int] | None:
    """(seconds, blocks) from the request to its end, or None while it is open."""
    start = _event(r, "InferenceRequested")
    end = next((e for e in r.events if e.name in ("ResultSubmitted", "RequestFailed", "RequestTimedOut")), None)
    if start is None or end is None:
        return None
    return end.timestamp - start.timestamp, end.block - start.block


def _percentiles(values: Sequence[float]) -> dict[str, float]:
    import numpy as np

    if not values:
        return {}
    return {f"p{q}": float(np.percentile(values, q)) for q in (50, 95, 99)}


def _histogram(values: Sequence[float], *, title: str, xlabel: str, color: str) -> str:
    """An SVG histogram with axes, counts and the 50th/95th/99th percentiles marked."""
    if not values:
        return f"<p>{_e(title)}: no data</p>"
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 2.8), dpi=100)
    ax = fig.add_subplot()
    bins = min(40, max(5, len(set(values))))
    ax.hist(values, bins=bins, color=color, edgecolor="white")
    for (name, value), style in zip(_percentiles(values).items(), ("-", "--", ":")):
        ax.axvline(value, color="#222", linestyle=style, linewidth=1, label=f"{name} {value:,.1f}")
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("requests")
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    out = io.StringIO()
    fig.savefig(out, format="svg")
    svg = out.getvalue()
    return svg[svg.index("<svg"):]


def _check_list(checks: Sequence[Any]) -> str:
    return "".join(f"<li class='{'ok' if c.ok else 'bad'}'><b>{'ok' if c.ok else 'FAIL'}</b> {_e(c.name)}: "
                   f"{_e(c.detail)}</li>" for c in checks)


def _request_row(r: RequestAudit) -> str:
    req, backbone, failed = _event(r, "InferenceRequested"), _event(r, "BackboneExecuted"), _event(r, "RequestFailed")
    status_class = _STATUS_CLASS.get(r.status, "open")
    reason = f"code {failed.args.get('code')}: {failed.args.get('reason')}" if failed else \
        ("deadline passed" if r.status == "TIMED_OUT" else "")
    node = r.node or ((backbone or failed).args.get("node", "") if (backbone or failed) else "")
    latency = _latency(r)
    failed_checks = [c for c in r.checks if not c.ok]
    return (f"<tr class='{status_class}'><td>{r.request_id}</td><td class='status'>{_e(r.status)}</td>"
            f"<td class='{'ok' if r.verified else 'bad'}'>{'yes' if r.verified else 'NO'}</td>"
            f"<td>{_e(reason)}</td><td><code>{_e(req.args.get('requester', '') if req else '')}</code></td>"
            f"<td><code>{_e(node)}</code></td><td>{r.gas_total:,}</td>"
            f"<td>{_utc(req.timestamp) if req else ''}</td>"
            f"<td>{'' if latency is None else f'{latency[0]} s / {latency[1]} blocks'}</td>"
            f"<td><details{' open' if failed_checks else ''}><summary>{len(r.checks)} checks, "
            f"{len(failed_checks)} failed</summary><ul>{_check_list(r.checks)}</ul></details></td></tr>")


def render_html(audit: ModelAudit, *, generated_at: float | None = None) -> str:
    """The report (see the module doc) as one HTML document."""
    now = generated_at if generated_at is not None else datetime.now(timezone.utc).timestamp()
    reqs = [r for r in audit.requests if r.events]
    verdict = "VERIFIED" if audit.verified else "NOT VERIFIED"
    completed = [r for r in reqs if r.status == "COMPLETED"]
    latencies = [lat[0] for lat in map(_latency, completed) if lat is not None]
    blocks = [lat[1] for lat in map(_latency, completed) if lat is not None]
    gas = [r.gas_total for r in completed]
    versions = [e for e in audit.events if e.name == "ModelRegistered"]
    enclaves = [e for e in audit.events if e.name in ("EnclaveRegistered", "EnclaveRevoked")]
    counts = {s: sum(r.status == s for r in reqs) for s in ("COMPLETED", "FAILED", "TIMED_OUT", "REQUESTED",
                                                            "TRANSFERRED")}
    raw = json.dumps(audit.to_json(), default=str).replace("</", "<\\/")
    contracts = "".join(f"<tr><td>{_e(n)}</td><td><code>{_e(a)}</code></td></tr>" for n, a in audit.contracts.items())
    version_rows = "".join(
        f"<tr><td>{_e(e.args.get('version'))}</td><td>{_utc(e.timestamp)}</td>"
        + "".join(f"<td><code>{_e(e.args.get(k, ''))}</code></td>"
                  for k in ("backboneHash", "headGraphHash", "headParamsHash", "protectionRuleHash"))
        + "</tr>" for e in versions)
    enclave_rows = "".join(
        f"<tr class='{'failed' if e.name == 'EnclaveRevoked' else ''}'><td>{_e(e.name)}</td><td>{_utc(e.timestamp)}</td>"
        f"<td><code>{_e(e.args.get('enclave', ''))}</code></td><td><code>{_e(e.args.get('measurement', ''))}</code></td>"
        f"<td>{_e(e.args.get('expiresAt', ''))}</td></tr>" for e in enclaves)
    stats = " · ".join(f"{k.lower().replace('_', ' ')} {v}" for k, v in counts.items() if v)
    pct = lambda d: ", ".join(f"{k} {v:,.1f}" for k, v in d.items()) or "n/a"  # noqa: E731
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>splitseal audit of model {_e(audit.model_id)}</title>
<style>
body{{font-family:system-ui,sans-serif;margin:2em;max-width:1250px;color:#111}}
table{{border-collapse:collapse;margin:.5em 0}} td,th{{border:1px solid #ccc;padding:3px 6px;font-size:12px;vertical-align:top}}
th{{background:#f3f3f3}} code{{font-size:11px;word-break:break-all}} td{{max-width:420px}} .ok{{color:#060}} .bad{{color:#b00;font-weight:bold}}
tr.completed td.status{{background:#dff3df;color:#060}} tr.failed td.status{{background:#f8d7d7;color:#900}}
tr.open td.status{{background:#fff1c6;color:#850}} .verdict{{font-size:1.3em;padding:2px 8px}}
.verdict.ok{{background:#dff3df}} .verdict.bad{{background:#f8d7d7}} details ul{{margin:.3em 0;padding-left:1.2em}}
</style></head><body>
<h1>Audit of model <code>{_e(audit.model_id)}</code></h1>
<table id="header">
<tr><th>verdict</th><td><span class="verdict {'ok' if audit.verified else 'bad'}" id="verdict">{verdict}</span></td></tr>
<tr><th>chain id</th><td>{audit.chain_id}</td></tr>
<tr><th>blocks</th><td>{audit.from_block} to {audit.to_block}</td></tr>
<tr><th>report made</th><td>{_utc(now)} by splitseal {_e(version())}</td></tr>
<tr><th>requests</th><td>{len(reqs)}: {_e(stats)}</td></tr>
</table>
<h2>Contracts</h2><table><tr><th>contract</th><th>address</th></tr>{contracts}</table>
<h2>Checks</h2><ul>{_check_list(audit.checks)}</ul>
<h2>Registered versions</h2>
<table><tr><th>version</th><th>registered</th><th>backbone hash</th><th>head graph hash</th><th>head params hash</th>
<th>rule hash</th></tr>{version_rows}</table>
<h2>Enclave registrations and revocations</h2>
<table><tr><th>event</th><th>time</th><th>enclave</th><th>measurement</th><th>expires at</th></tr>{enclave_rows}</table>
<h2>Latency of completed requests</h2>
<p>From the block carrying the request to the block carrying its result (block time, 1 s resolution):
{pct(_percentiles(latencies))} s; in blocks: {pct(_percentiles(blocks))}.</p>
{_histogram(latencies, title="request to result (block time)", xlabel="seconds", color="#4a7")}
<h2>Gas of completed requests (whole lifecycle)</h2><p>{pct(_percentiles(gas))} gas.</p>
{_histogram(gas, title="gas per request", xlabel="gas", color="#47a")}
<h2>Requests</h2>
<table id="requests"><tr><th>id</th><th>status</th><th>verified</th><th>failure reason</th><th>requester</th>
<th>node</th><th>gas</th><th>requested</th><th>latency</th><th>checks</th></tr>{''.join(map(_request_row, reqs))}</table>
<h2>Raw data</h2><p>The whole audit as JSON is embedded in this file (<code>#audit-json</code>).</p>
<script type="application/json" id="audit-json">{raw}</script>
</body></html>
"""
