"""The auditor's view: rebuild a request's or a model's history from events alone, and verify it.

Nothing here trusts the node, the enclave or the requester: the inputs are the contracts' logs,
the blocks and receipts that carry them, and the EIP-712 definitions. For a completed request the
checks are, in order:

1. the request, the backbone output, the transfer and the result are all on-chain, in that order,
   and the result came before the deadline;
2. the hash chain holds: the inline input hashes to the input commitment; the signed struct uses
   that input commitment, the transfer hash recorded at transfer, and keccak256 of the encrypted
   result carried in the event;
3. the EIP-712 signature recovers to the enclave named in the transfer and in the result;
4. at the result's block that enclave was registered (quote by the pinned key), not revoked and
   not expired, and its measurement was allowed for the model;
5. that enclave confirmed loading exactly the registered head (graph and parameter hashes) of that
   model version, and the parameter index it verified is the published one;
6. a hybrid request (its inline input a manifest): the nodes it names are its node set's, each
   contributed one share and signed it, and the output commitment is theirs (orchestrator/audit/hybrid.py).

Whatever does not verify is reported as a failed check with the reason, never dropped.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from splitseal.chain import Chain, Deployment
from splitseal.errors import InvalidInputError
from splitseal.protocol import eip712
from splitseal.protocol.crypto import keccak256
from splitseal.protocol.hybrid import is_manifest
from splitseal.protocol.result import ResultClaim

from .hybrid import HybridAudit, audit_hybrid


@dataclass
class AuditEvent:
    name: str
    contract: str
    block: int
    tx: str
    log_index: int
    timestamp: int
    gas_used: int
    args: dict[str, Any]


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


@dataclass
class RequestAudit:
    request_id: int
    status: str
    events: list[AuditEvent] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    #: The node that delivered the result (the delivery's sender; "" until delivered).
    node: str = ""
    #: a hybrid request's node set and contributions (None for other requests)
    hybrid: HybridAudit | None = None

    @property
    def verified(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    @property
    def gas_total(self) -> int:
        return sum({e.tx: e.gas_used for e in self.events}.values())

    def to_json(self) -> dict[str, Any]:
        return {"requestId": self.request_id, "status": self.status, "verified": self.verified,
                "gasTotal": self.gas_total, "node": self.node, "events": [asdict(e) for e in self.events],
                "checks": [asdict(c) for c in self.checks],
                **({"hybrid": self.hybrid.to_json()} if self.hybrid is not None else {})}


@dataclass
class ModelAudit:
    model_id: str
    events: list[AuditEvent] = field(default_factory=list)
    requests: list[RequestAudit] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    #: where and when: what a report header states
    chain_id: int = 0
    contracts: dict[str, str] = field(default_factory=dict)
    from_block: int = 0
    to_block: int = 0

    @property
    def verified(self) -> bool:
        return all(c.ok for c in self.checks) and all(r.verified for r in self.requests if r.status == "COMPLETED")

    def to_json(self) -> dict[str, Any]:
        return {"modelId": self.model_id, "verified": self.verified, "chainId": self.chain_id,
                "contracts": self.contracts, "fromBlock": self.from_block, "toBlock": self.to_block,
                "events": [asdict(e) for e in self.events], "checks": [asdict(c) for c in self.checks],
                "requests": [r.to_json() for r in self.requests]}


@dataclass
class EnclaveAnswers:
    """An enclave's answers as the chain records them: every signed result carries the enclave's
    answer number, so numbers missing between 1 and the highest known are answers given off the
    record (or never delivered)."""

    enclave: str
    delivered: list[int]
    #: the enclave's own count of answers issued, when it was asked (``status``)
    issued: int | None = None

    @property
    def last_delivered(self) -> int:
        return max(self.delivered, default=0)

    @property
    def gaps(self) -> list[int]:
        top = max(self.last_delivered, self.issued or 0)
        return sorted(set(range(1, top + 1)) - set(self.delivered))

    def check(self) -> Check:
        issued = "not asked" if self.issued is None else str(self.issued)
        shown = self.gaps[:20]
        more = f" (+{len(self.gaps) - 20} more)" if len(self.gaps) > 20 else ""
        return Check(f"every answer of enclave {self.enclave} is on the record", not self.gaps,
                     f"{len(self.delivered)} delivered, highest {self.last_delivered}, issued {issued}; "
                     f"answers given but not delivered: {shown}{more}")

    def to_json(self) -> dict[str, Any]:
        return {"enclave": self.enclave, "delivered": len(self.delivered), "lastDelivered": self.last_delivered,
                "issued": self.issued, "gaps": self.gaps}


class Auditor:
    """Reads events of one deployment; caches blocks and receipts it has fetched."""

    def __init__(self, chain: Chain, deployment: Deployment, *, blob_dir: str | Path | None = None) -> None:
        self.chain = chain
        self.d = deployment
        #: where off-chain records are (a hybrid request's contributions record)
        self.blob_dir = Path(blob_dir) if blob_dir is not None else None
        self._blocks: dict[int, int] = {}
        self._gas: dict[str, int] = {}
        self._cache: dict[tuple[Any, ...], list[AuditEvent]] = {}
        self._now: int | None = None
        self._code_checks: list[Check] | None = None

    # --- fetching --------------------------------------------------------------------------

    def _history(self, contract_names: tuple[str, ...], first_topic: bytes | int | str) -> list[AuditEvent]:
        """Every event of these contracts whose first indexed argument is ``first_topic`` (one
        eth_getLogs), oldest first; cached."""
        from splitseal.chain import LogDecoder, logs_with_first_topic

        key = (contract_names, first_topic if not isinstance(first_topic, str) else first_topic.lower())
        if key not in self._cache:
            contracts = self.d.contracts()
            decoder = LogDecoder([(name, contracts[name]) for name in contract_names])
            self._cache[key] = [self._event(name, entry["event"], entry) for name, entry in
                                logs_with_first_topic(self.chain, decoder, first_topic, self.d.block)]
        return self._cache[key]

    def _logs(self, contract_name: str, event: str, first: bytes | int | str) -> list[AuditEvent]:
        return [e for e in self._history(_GROUPS[contract_name], first)
                if e.contract == contract_name and e.name == event]

    def _event(self, contract_name: str, event: str, entry: Any) -> AuditEvent:
        block = int(entry["blockNumber"])
        if block not in self._blocks:
            self._blocks[block] = int(self.chain.get_block(block)["timestamp"])
        tx = entry["transactionHash"].to_0x_hex()
        if tx not in self._gas:
            self._gas[tx] = int(self.chain.receipt(entry["transactionHash"])["gasUsed"])
        return AuditEvent(event, contract_name, block, tx, int(entry["logIndex"]), self._blocks[block],
                          self._gas[tx], {k: _plain(v) for k, v in entry["args"].items()})

    def _chain_time(self) -> int:
        if self._now is None:
            self._now = int(self.chain.get_block("latest")["timestamp"])
        return self._now

    # --- contracts -------------------------------------------------------------------------

    def contract_checks(self) -> list[Check]:
        """Each contract's runtime code equals its build artifact (immutables masked): an audit
        trusts the deployment record only as far as the code at its addresses is ours."""
        from splitseal.chain import ZERO_ADDRESS, runtime_code_matches

        if self._code_checks is None:
            checks = []
            for name, contract in self.d.contracts().items():
                if contract.address.lower() == ZERO_ADDRESS:
                    checks.append(Check(f"{name} code is the build artifact's", True, "not part of this audit"))
                    continue
                ok, detail = runtime_code_matches(self.chain, name, contract.address)
                checks.append(Check(f"{name} code is the build artifact's", ok, detail))
            self._code_checks = checks
        return list(self._code_checks)

    # --- requests --------------------------------------------------------------------------

    def request(self, request_id: int) -> RequestAudit:
        from splitseal.protocol import RequestStatus

        if request_id <= 0:
            raise InvalidInputError(f"request id must be positive, got {request_id}")
        events = list(self._history(_GROUPS["BackboneExecution"], request_id))
        req = [e for e in events if e.name == "InferenceRequested"]
        if not req:
            raise InvalidInputError(f"request {request_id} does not exist on this deployment "
                                    f"(BackboneExecution {self.d.backbone_execution.address})")
        status = RequestStatus(self.chain.call(self.d.backbone_execution.functions.status(request_id)))
        audit = RequestAudit(request_id, status.name)
        audit.events = events
        audit.checks.extend(self.contract_checks())
        self._check_request(audit)
        return audit

    def _backbone_and_transfer(self, request_id: int, by: dict[str, AuditEvent]
                               ) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """What BackboneExecuted and TransferRecorded say, from those events (two-step path) or
        from the delivery's calldata (the one-transaction path emits ResultSubmitted alone)."""
        from splitseal.chain import CalldataNotFound, delivered_result

        if "BackboneExecuted" in by and "TransferRecorded" in by:
            return by["BackboneExecuted"].args, by["TransferRecorded"].args
        if "ResultSubmitted" not in by:
            return None, None
        try:
            d = delivered_result(self.chain, self.d, by["ResultSubmitted"].tx, request_id)
        except CalldataNotFound:
            return None, None
        return ({"outputCommitment": d.output_commitment, "node": d.sender},
                {"enclave": str(d.claim[5]), "transferHash": bytes(d.claim[6])})

    def _check_request(self, audit: RequestAudit) -> None:
        by = {e.name: e for e in audit.events}
        add = audit.checks.append
        request = by["InferenceRequested"]
        ended = [n for n in ("ResultSubmitted", "RequestFailed", "RequestTimedOut") if n in by]
        add(Check("ended exactly once", len(ended) <= 1,
                  f"ending events: {ended or 'none yet'}"))
        from splitseal.chain import CalldataNotFound, delivered_result, request_inline_input

        commitment = _bytes(request.args["inputCommitment"])
        inline = b""
        if not request.args.get("inputPointer"):
            # the event does not repeat an inline input: it is the request transaction's calldata
            try:
                inline = request_inline_input(self.chain, self.d, request.tx)
                add(Check("inline input matches its commitment", keccak256(inline) == commitment,
                          f"keccak256(inlineInput of tx {request.tx[:18]}…) == inputCommitment ({len(inline)} bytes)"))
            except CalldataNotFound as exc:
                add(Check("inline input matches its commitment", False, str(exc)))
        if is_manifest(inline):
            backbone, transfer = self._backbone_and_transfer(audit.request_id, by)
            audit.hybrid, findings = audit_hybrid(
                self.chain, self.d, request_id=audit.request_id, request={**request.args, "inlineInput": inline},
                backbone=backbone, transfer=transfer, blob_dir=self.blob_dir)
            for name, ok, detail in findings:
                add(Check(name, ok, detail))
        if audit.status != "COMPLETED":
            if "RequestFailed" in by:
                f = by["RequestFailed"]
                add(Check("failure recorded on-chain", True,
                          f"code {f.args.get('code')} reason {f.args.get('reason')!r} by {f.args.get('node')}"))
            elif "RequestTimedOut" in by:
                add(Check("timeout recorded on-chain", True, f"block {by['RequestTimedOut'].block}"))
            else:
                # still open: a finding once its deadline has passed and nobody ended it
                deadline, now = int(request.args["deadline"]), self._chain_time()
                add(Check("open only until its deadline", now <= deadline,
                          f"{audit.status} at chain time {now}, deadline {deadline}"
                          + ("" if now <= deadline else f": overdue by {now - deadline} s; nobody called timeout()")))
            return
        result = by.get("ResultSubmitted")
        if result is None:
            add(Check("every stage on-chain", False, "missing events: ['ResultSubmitted']"))
            return
        try:  # the ciphertext, pointer and signature are the delivery's calldata, not in its event
            delivered = delivered_result(self.chain, self.d, result.tx, audit.request_id)
        except CalldataNotFound as exc:
            add(Check("result found in its delivery's calldata", False, str(exc)))
            return
        audit.node = delivered.sender
        claim_enclave, claim_transfer = str(delivered.claim[5]), _bytes(delivered.claim[6])
        if delivered.function == "submitResult":
            # two-step path: the backbone stage and the transfer were their own transaction
            missing = [n for n in ("BackboneExecuted", "TransferRecorded") if n not in by]
            if missing:
                add(Check("every stage on-chain", False, f"missing events: {missing}"))
                return
            backbone, transfer = by["BackboneExecuted"], by["TransferRecorded"]
            stages = [request, backbone, transfer, result]
            transfer_enclave, transfer_hash = str(transfer.args["enclave"]), _bytes(transfer.args["transferHash"])
        else:
            # one transaction (deliverResult / deliverResults): backbone output, enclave and
            # transfer hash are its arguments, the node its sender
            stages = [request, result]
            transfer_enclave, transfer_hash = claim_enclave, claim_transfer
        add(Check("stages in order", all((a.block, a.log_index) < (b.block, b.log_index)
                                         for a, b in zip(stages, stages[1:])),
                  " -> ".join(f"{e.name}@{e.block}" for e in stages) + f" ({delivered.function})"))
        add(Check("result before deadline", result.timestamp <= int(request.args["deadline"]),
                  f"result at {result.timestamp}, deadline {request.args['deadline']}"))
        enclave = str(result.args["enclave"])
        add(Check("result from the enclave named at transfer",
                  enclave.lower() == transfer_enclave.lower() == claim_enclave.lower(), enclave))
        encrypted, pointer = delivered.encrypted_result, delivered.result_pointer
        if encrypted or not pointer:
            result_commitment = keccak256(encrypted)
            add(Check("result commitment is the hash of the encrypted result",
                      _bytes(result.args["resultCommitment"]) == result_commitment, "0x" + result_commitment.hex()))
        else:  # stored off-chain: the signature covers the commitment, which the requester checks
            result_commitment = _bytes(result.args["resultCommitment"])
            add(Check("result stored off-chain under its commitment", len(result_commitment) == 32 and
                      any(result_commitment), f"{pointer} 0x{result_commitment.hex()}"))
        model_id, version = _bytes(request.args["modelId"]), int(request.args["version"])
        # the claim as the request states it: a result signed for any other requester or key does
        # not recover to the enclave here
        claim = ResultClaim(request_id=audit.request_id, model_id=model_id, input_commitment=commitment,
                            requester=str(request.args["requester"]),
                            requester_key=_bytes(request.args["requesterKey"]), enclave=enclave,
                            transfer_hash=transfer_hash,
                            sequence=int(result.args["sequence"]),
                            label=_bytes(delivered.claim[11]) if delivered.claim[10] else None)
        digest = claim.digest(self.chain.chain_id, self.d.enclave_transfer.address, model_version=version,
                              result_commitment=result_commitment)
        try:
            signer = eip712.recover(digest, delivered.signature)
        except Exception as exc:  # noqa: BLE001 - a malformed signature is a finding, not a crash
            signer = f"unrecoverable ({exc})"
        add(Check("enclave signature (EIP-712 InferenceResult) recovers to the enclave",
                  signer.lower() == enclave.lower(),
                  f"recovered {signer}, signed for the request's requester {claim.requester} and result key "
                  f"0x{claim.requester_key.hex()[:16]}…, answer {claim.sequence}"))
        if claim.label is not None:
            # the label is inside the signature checked above; the version must also allow it
            allowed = bool(self.chain.call(self.d.model_registry.functions.allowsPublicLabel(model_id, version)))
            add(Check("public label signed by the enclave and allowed by the model version",
                      allowed and signer.lower() == enclave.lower(),
                      f"label {int.from_bytes(claim.label, 'big')}, version {version} "
                      f"{'registered' if allowed else 'NOT registered'} with the public_label policy"))
        consumer = str(request.args.get("consumer") or "0x0")
        if int(consumer, 16):
            called = by.get("ConsumerCalled")
            add(Check("consumer called back in the delivery", called is not None and called.tx == result.tx,
                      f"{consumer}: " + (f"succeeded={called.args.get('succeeded')} gasUsed={called.args.get('gasUsed')}"
                                         if called else "no ConsumerCalled event")))
        for check in self.enclave_checks(model_id, version, enclave, at_block=result.block,
                                         at_time=result.timestamp):
            add(check)

    # --- enclaves and models ---------------------------------------------------------------

    def enclave_answers(self, enclave: str, *, issued: int | None = None) -> EnclaveAnswers:
        """The answer numbers ``enclave`` delivered on this deployment (one log query), compared
        with its own count when ``issued`` is given."""
        from splitseal.chain.logs import LogDecoder, logs_with_topic0

        decoder = LogDecoder([("EnclaveTransfer", self.d.enclave_transfer)])
        delivered = [int(entry["args"]["sequence"]) for _, entry in
                     logs_with_topic0(self.chain, decoder, ("ResultSubmitted",), self.d.block, self.chain.block_number())
                     if str(entry["args"]["enclave"]).lower() == enclave.lower()]
        return EnclaveAnswers(enclave, sorted(delivered), issued)

    def enclave_checks(self, model_id: bytes, version: int, enclave: str, *, at_block: int,
                       at_time: int) -> list[Check]:
        checks = []
        regs = [e for e in self._logs("ModelRegistry", "EnclaveRegistered", enclave) if e.block <= at_block]
        revoked = [e for e in self._logs("ModelRegistry", "EnclaveRevoked", enclave) if e.block <= at_block]
        if not regs:
            return [Check("enclave registered before the result", False, f"no EnclaveRegistered for {enclave}")]
        reg = regs[-1]
        checks.append(Check("enclave registered before the result", True,
                            f"block {reg.block}, measurement {reg.args['measurement']}"))
        checks.append(Check("enclave not revoked at the result", not any(r.block >= reg.block for r in revoked),
                            f"{len(revoked)} revocation(s) before block {at_block}"))
        checks.append(Check("enclave registration unexpired at the result", at_time < int(reg.args["expiresAt"]),
                            f"expires {reg.args['expiresAt']}, result at {at_time}"))
        measurement = reg.args["measurement"]
        allowed = self._logs("ModelRegistry", "MeasurementAllowed", model_id)
        revoked_m = self._logs("ModelRegistry", "MeasurementRevoked", model_id)
        last_allow = max((e.block for e in allowed if e.args["measurement"] == measurement and e.block <= at_block),
                         default=None)
        last_revoke = max((e.block for e in revoked_m if e.args["measurement"] == measurement
                           and e.block <= at_block), default=-1)
        checks.append(Check("measurement allowed for the model at the result",
                            last_allow is not None and last_allow > last_revoke,
                            f"measurement {measurement}"))
        def of_enclave(name: str) -> list[AuditEvent]:
            return [e for e in self._logs("ModelRegistry", name, model_id) if int(e.args["version"]) == version
                    and e.block <= at_block and str(e.args["enclave"]).lower() == enclave.lower()]

        registered = [e for e in self._logs("ModelRegistry", "ModelRegistered", model_id)
                      if int(e.args["version"]) == version and e.block <= at_block]
        provisioned, loaded = of_enclave("HeadProvisioned"), of_enclave("HeadLoaded")
        # ModelRegistry accepts HeadLoaded only with the enclave's signature over the registered
        # graph and parameter hashes; here: the confirmed package is the provisioned one.
        ok = bool(registered and provisioned and loaded) and \
            loaded[-1].args["packageHash"] == provisioned[-1].args["packageHash"]
        checks.append(Check("enclave loaded the registered head", ok,
                            f"registered: {bool(registered)}, provisioned: {bool(provisioned)}, "
                            f"confirmed: {bool(loaded)}"
                            + (f", package {loaded[-1].args['packageHash']}" if loaded else "")))
        published = [e for e in self._logs("ParameterIndex", "IndexPublished", model_id)
                     if int(e.args["version"]) == version]
        verified = [e for e in self._logs("ParameterIndex", "IndexVerified", model_id)
                    if int(e.args["version"]) == version and e.block <= at_block
                    and str(e.args["enclave"]).lower() == enclave.lower()]
        checks.append(Check("enclave verified the published parameter index",
                            bool(published) and bool(verified)
                            and verified[-1].args["merkleRoot"] == published[0].args["merkleRoot"],
                            f"published: {bool(published)}, verified: {bool(verified)}"))
        return checks

    def model(self, model_id: bytes, *, max_requests: int = 1000) -> ModelAudit:
        audit = ModelAudit("0x" + model_id.hex(), chain_id=self.chain.chain_id,
                           contracts={name: c.address for name, c in self.d.contracts().items()},
                           from_block=self.d.block, to_block=self.chain.block_number())
        events = list(self._history(_GROUPS["ModelRegistry"], model_id))
        if not any(e.name == "ModelRegistered" for e in events):
            raise InvalidInputError(f"model 0x{model_id.hex()} is not registered on this deployment")
        enclaves = {str(e.args["enclave"]) for e in events if "enclave" in e.args}
        for enclave in sorted(enclaves):
            events += [e for e in self._history(_GROUPS["ModelRegistry"], enclave)
                       if e.name in ("EnclaveRegistered", "EnclaveRevoked")]
        audit.events = sorted(events, key=lambda e: (e.block, e.log_index))
        # every request's lifecycle in one log query, grouped by request id (one query per
        # request would re-read the whole range each time)
        from splitseal.chain import LogDecoder, logs_with_topic0

        contracts = self.d.contracts()
        group = _GROUPS["BackboneExecution"]
        decoder = LogDecoder([(name, contracts[name]) for name in group])
        by_request: dict[int, list[AuditEvent]] = {}
        for name, entry in logs_with_topic0(self.chain, decoder, _LIFECYCLE_EVENTS, self.d.block,
                                            self.chain.block_number()):
            by_request.setdefault(int(entry["args"]["requestId"]), []).append(
                self._event(name, entry["event"], entry))
        ours = []
        for request_id, history in sorted(by_request.items()):
            history.sort(key=lambda e: (e.block, e.log_index))
            self._cache[(group, request_id)] = history
            if any(e.name == "InferenceRequested" and e.args["modelId"] == audit.model_id for e in history):
                ours.append(request_id)
        audit.requests = [self.request(request_id) for request_id in ours[:max_requests]]
        audit.checks.extend(self.contract_checks())
        overdue = [r.request_id for r in audit.requests
                   if any(c.name == "open only until its deadline" and not c.ok for c in r.checks)]
        audit.checks.append(Check("no request left open past its deadline", not overdue,
                                  f"overdue: {overdue[:20]}" if overdue else "none"))
        # every enclave's delivered answers are in the lifecycle events read above, all models included
        delivered: dict[str, list[int]] = {}
        for history in by_request.values():
            for e in history:
                if e.name == "ResultSubmitted":
                    delivered.setdefault(str(e.args["enclave"]).lower(), []).append(int(e.args["sequence"]))
        results = {str(e.args["enclave"]) for r in audit.requests for e in r.events if e.name == "ResultSubmitted"}
        for enclave in sorted(results):
            audit.checks.append(EnclaveAnswers(enclave, sorted(delivered.get(enclave.lower(), []))).check())
        audit.checks.append(Check("every completed request verifies",
                                  all(r.verified for r in audit.requests if r.status == "COMPLETED"),
                                  f"{sum(r.status == 'COMPLETED' for r in audit.requests)} completed, "
                                  f"{sum(r.status == 'FAILED' for r in audit.requests)} failed, "
                                  f"{sum(r.status == 'TIMED_OUT' for r in audit.requests)} timed out"))
        return audit


_LIFECYCLE_EVENTS = ("InferenceRequested", "BackboneExecuted", "TransferRecorded", "ResultSubmitted",
                     "ConsumerCalled", "RequestFailed", "RequestTimedOut")

#: Contracts whose events share a first indexed argument: requests (requestId) and models
#: (modelId, or the enclave address for enclave registrations).
_GROUPS = {"BackboneExecution": ("BackboneExecution", "EnclaveTransfer"),
           "EnclaveTransfer": ("BackboneExecution", "EnclaveTransfer"),
           "ModelRegistry": ("ModelRegistry", "ParameterIndex"),
           "ParameterIndex": ("ModelRegistry", "ParameterIndex")}


# --- rendering -----------------------------------------------------------------------------

def render_request(audit: RequestAudit) -> str:
    lines = [f"request {audit.request_id}: {audit.status}, "
             f"{'VERIFIED' if audit.verified else 'NOT VERIFIED'}, {audit.gas_total} gas in total", "", "history:"]
    for e in audit.events:
        lines.append(f"  block {e.block:>6} t={e.timestamp} {e.contract}.{e.name} tx={e.tx[:18]}… gas={e.gas_used}")
        for k, v in e.args.items():
            if k in ("returnHead",) and isinstance(v, str) and len(v) > 42:
                v = f"{v[:42]}… ({(len(v) - 2) // 2} bytes)"
            lines.append(f"      {k}: {v}")
    if audit.hybrid is not None:
        h = audit.hybrid
        lines += ["", f"hybrid: node set {h.set_id}, {len(h.nodes)} nodes, no single one holds the image"]
        for party, node in enumerate(h.nodes):
            signed = next((c for c in h.contributions if c["party"] == party), None)
            state = "no share on record" if signed is None else \
                f"share {signed['shareHash'][:18]}… {'signed' if signed['signatureRecovers'] else 'SIGNATURE FAILS'}"
            lines.append(f"  party {party} {node}: input commitment {h.input_commitments[party][:18]}…, {state}")
    lines += ["", "checks:"]
    lines += [f"  [{'ok' if c.ok else 'FAIL'}] {c.name}: {c.detail}" for c in audit.checks]
    return "\n".join(lines)


def render_model(audit: ModelAudit) -> str:
    lines = [f"model {audit.model_id}: {'VERIFIED' if audit.verified else 'NOT VERIFIED'}", "", "history:"]
    for e in audit.events:
        detail = ", ".join(f"{k}={v}" for k, v in e.args.items() if k not in ("modelId",))
        lines.append(f"  block {e.block:>6} {e.contract}.{e.name} {detail}")
    lines += ["", f"requests: {len(audit.requests)}"]
    for r in audit.requests:
        lines.append(f"  {r.request_id:>6} {r.status:<10} {'verified' if r.verified else 'NOT verified'} gas={r.gas_total}")
    lines += ["", "checks:"] + [f"  [{'ok' if c.ok else 'FAIL'}] {c.name}: {c.detail}" for c in audit.checks]
    return "\n".join(lines)


def _plain(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray)):
        return "0x" + bytes(value).hex()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _bytes(value: Any) -> bytes:
    if isinstance(value, str):
        return bytes.fromhex(value[2:] if value.startswith("0x") else value)
    return bytes(value)

