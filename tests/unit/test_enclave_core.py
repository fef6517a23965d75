"""EnclaveCore in-process (no socket): output policies, result format, state restore."""

from __future__ import annotations

import json

import numpy as np
import pytest

from enclave.core import EnclaveCore, EntryCallError, encode_result
from enclave.identity import load_identity
from enclave.platform import SimulatedPlatform
from splitseal.errors import InvalidInputError, SealingError
from splitseal.protocol import FailureCode, crypto
from splitseal.protocol.result import decode_result, open_result

MODEL = b"\x42" * 32
REGISTRY = "0x" + "11" * 20
TRANSFER = "0x" + "22" * 20
PINDEX = "0x" + "33" * 20


def test_result_policies():
    scores = np.array([[0.1, 0.7, 0.2], [0.6, 0.3, 0.1]], np.float32)
    label = json.loads(encode_result(scores, "label"))
    assert label["labels"] == [1, 0] and "scores" not in label and len(label["salt"]) == 32
    both = decode_result(encode_result(scores, "label_scores"))
    assert both.labels == (1, 0) and np.allclose(both.scores, scores)
    feats = decode_result(encode_result(scores, "features"))
    assert feats.labels == () and np.allclose(feats.features, scores)
    with pytest.raises(InvalidInputError):
        feats.label
    with pytest.raises(EntryCallError):
        encode_result(scores, "everything")
    with pytest.raises(EntryCallError):
        encode_result(np.array([[np.nan, 1.0]], np.float32), "label")
    assert encode_result(scores, "label") != encode_result(scores, "label")  # salted
    with pytest.raises(InvalidInputError):
        decode_result(b"{}")


def test_only_the_public_label_policy_releases_a_plaintext_label():
    from enclave.core import release_result

    one = np.array([[0.1, 0.2, 0.7]], np.float32)
    document, label = release_result(one, "public_label")
    assert decode_result(document).labels == (2,) and label == (2).to_bytes(32, "big")
    for policy in ("label", "label_scores", "features"):
        assert release_result(one, policy)[1] is None
    # one request, one public answer: a batch under public_label is refused as a shape problem
    with pytest.raises(EntryCallError) as err:
        release_result(np.array([[0.1, 0.9], [0.8, 0.2]], np.float32), "public_label")
    assert err.value.reason is FailureCode.SHAPE_MISMATCH and "one example per request" in str(err.value)


def _split(policy: str):
    from orchestrator.models import load_model
    from orchestrator.models.rule import parse_rule
    from orchestrator.models.split import split_model
    from tests.support import enclave_support as es

    rule = es.RULE.replace(b'"label_scores"', f'"{policy}"'.encode())
    return es, split_model(load_model(es.canary_model().SerializeToString()), parse_rule(rule))


def _provision(core: EnclaveCore, res, anchored: int = 0) -> None:
    package, index = res.package.encode(), res.index.encode()
    pph, iph = crypto.keccak256(package), crypto.keccak256(index)
    pct = crypto.ecies_encrypt(core.encryption_key, package, crypto.head_aad(MODEL, 1, pph))
    ict = crypto.ecies_encrypt(core.encryption_key, index, crypto.index_aad(MODEL, 1, iph))
    core.call("provision_head", dict(model_id=MODEL, version=1, chain_id=1337, registry=REGISTRY, transfer=TRANSFER,
                                     package_ciphertext=pct, package_plain_hash=pph,
                                     head_graph_hash=res.package.graph_hash, head_params_hash=res.package.params_hash,
                                     package_hash=crypto.keccak256(pct), anchored_state_version=anchored))
    core.call("provision_index", dict(model_id=MODEL, version=1, chain_id=1337, parameter_index=PINDEX,
                                      index_ciphertext=ict, index_plain_hash=iph,
                                      encrypted_index_hash=crypto.keccak256(ict),
                                      merkle_root=res.index.merkle_root(), entry_count=res.index.entry_count))


def _answer(core, features, request_id, requester, input_commitment=b"\x01" * 32):
    ct, shape, dtype = crypto.encrypt_transfer(core.encryption_key, core.address, request_id, MODEL, 1, features)
    return core.call("infer", dict(request_id=request_id, model_id=MODEL, version=1, input_commitment=input_commitment,
                                   transfer_ciphertext=ct, shape=list(shape), dtype=dtype,
                                   requester_key=requester.public, requester="0x" + "ab" * 20))


def _infer(core, features, request_id, requester):
    r = _answer(core, features, request_id, requester)
    return open_result(requester, r["encrypted_result"], request_id, MODEL, 1)


def test_label_policy_releases_only_the_label_and_state_survives_restart(tmp_path):
    es, res = _split("label")
    platform = SimulatedPlatform(tmp_path / "platform")
    core = EnclaveCore(platform, load_identity(), tmp_path)
    _provision(core, res)
    x = es.sample_inputs(2, seed=5)
    feats = res.backbone_model and __import__("onnxruntime").InferenceSession(
        res.backbone_bytes, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    requester = crypto.X25519KeyPair.generate()
    out = _infer(core, feats, 1, requester)
    want = __import__("onnxruntime").InferenceSession(
        es.canary_model().SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert out.policy == "label" and out.scores is None and list(out.labels) == want.argmax(axis=1).tolist()
    first = _answer(core, feats, 1, requester)  # asked again (a node that lost the answer): the same answer
    assert first["repeated"] and first["sequence"] == 1 and core.sequence == 1
    with pytest.raises(EntryCallError, match="replay"):  # for another input: refused
        _answer(core, feats, 1, requester, input_commitment=b"\x02" * 32)
    sv = core.state_version

    again = EnclaveCore(SimulatedPlatform(tmp_path / "platform"), load_identity(), tmp_path)
    assert again.address == core.address and again.call("status", {})["models"] == []
    with pytest.raises(SealingError, match="rollback"):
        again.call("seal_state", {"action": "restore", "anchored_state_version": sv + 1})
    assert again.call("seal_state", {"action": "restore", "anchored_state_version": sv})["models"] == 1
    # answered ids and recent answers are part of the sealed state: the same answer after a restart
    repeated = _answer(again, feats, 1, requester)
    assert repeated["repeated"] and {k: repeated[k] for k in ("encrypted_result", "signature", "sequence")} == \
        {k: first[k] for k in ("encrypted_result", "signature", "sequence")}
    with pytest.raises(EntryCallError, match="replay"):
        _answer(again, feats, 1, requester, input_commitment=b"\x02" * 32)
    assert _infer(again, feats, 2, requester).labels == out.labels


def test_results_go_out_in_a_session_per_requester_key_whose_key_pair_was_drawn_after_a_reply(tmp_path):
    """A result session per requester key (docs/PROTOCOL.md, "Result sessions"): its ephemeral
    X25519 key pair is the one drawn when a previous reply was out (``answer_sent``), not on the
    request's path; the key's later results reuse it, each with its own nonce and opening alone;
    another requester key gets a session and key pair of its own; a repeated request gets the very
    same ciphertext back rather than a new encryption."""
    es, res = _split("label_scores")
    now = [0.0]
    core = EnclaveCore(SimulatedPlatform(tmp_path / "platform"), load_identity(), tmp_path, clock=lambda: now[0])
    _provision(core, res)
    feats = __import__("onnxruntime").InferenceSession(res.backbone_bytes, providers=["CPUExecutionProvider"]).run(
        None, {"x": es.sample_inputs(1, seed=3)})[0]
    alice, bob = crypto.X25519KeyPair.generate(), crypto.X25519KeyPair.generate()
    alice_keys = crypto.SessionKeys(alice)
    waiting = core._result_keys._next
    first = _answer(core, feats, 1, alice)
    ephemeral, nonce = crypto.ecies_ephemeral_and_nonce(first["encrypted_result"])
    assert ephemeral == waiting.public and not core._result_keys.ready  # taken by alice's session
    core.answer_sent()  # as the server does once the reply is sent
    assert core._result_keys.ready
    nonces = {nonce}
    for rid in range(2, 7):
        answer = _answer(core, feats, rid, alice)
        eph, nonce = crypto.ecies_ephemeral_and_nonce(answer["encrypted_result"])
        assert eph == ephemeral and nonce not in nonces and core._result_keys.ready  # no new key pair drawn
        nonces.add(nonce)
        assert open_result(alice, answer["encrypted_result"], rid, MODEL, 1).labels  # opens alone
        assert open_result(alice_keys, answer["encrypted_result"], rid, MODEL, 1).labels
        with pytest.raises(crypto.DecryptionError):  # bound to its own request still
            open_result(alice_keys, answer["encrypted_result"], rid + 1, MODEL, 1)
    refilled = core._result_keys._next
    other = _answer(core, feats, 7, bob)
    assert crypto.ecies_ephemeral_and_nonce(other["encrypted_result"])[0] == refilled.public != ephemeral
    with pytest.raises(crypto.DecryptionError):
        open_result(alice, other["encrypted_result"], 7, MODEL, 1)
    assert open_result(bob, other["encrypted_result"], 7, MODEL, 1).labels
    assert len(alice_keys) == 1  # one exchange for all of alice's results
    assert len(core._result_sessions) == 2
    core.answer_sent()
    assert len(core._result_sessions) == 2
    now[0] = crypto.RESULT_SESSION_SECONDS  # past the sessions' window: the next call's answer_sent drops them
    core.answer_sent()
    assert len(core._result_sessions) == 0
    again = _answer(core, feats, 1, alice)
    assert again["repeated"] and again["encrypted_result"] == first["encrypted_result"]
    core.close()


def test_unknown_calls_and_bad_arguments_are_refused(tmp_path):
    core = EnclaveCore(SimulatedPlatform(tmp_path / "p"), load_identity(), tmp_path)
    with pytest.raises(InvalidInputError, match="unknown entry call"):
        core.call("dump_keys", {})
    with pytest.raises(InvalidInputError, match="nonce"):
        core.call("attest", {"nonce": b"short", "chain_id": 1, "registry": REGISTRY})
    with pytest.raises(InvalidInputError, match="registry"):
        core.call("attest", {"nonce": b"\x00" * 32, "chain_id": 1, "registry": "nope"})
    with pytest.raises(InvalidInputError, match="request_id"):
        core.call("infer", {"request_id": -1})
    with pytest.raises(InvalidInputError):
        core.call("status", [1])


def test_a_package_that_does_not_fit_the_index_leaves_the_serving_head_untouched(tmp_path):
    from orchestrator.models import load_model
    from orchestrator.models.rule import parse_rule
    from orchestrator.models.split import split_model
    from tests.support.models_fixtures import small_cnn

    es, res = _split("label_scores")
    core = EnclaveCore(SimulatedPlatform(tmp_path / "p"), load_identity(), tmp_path)
    _provision(core, res)
    other = split_model(load_model(small_cnn().SerializeToString()), parse_rule(
        b'version=1\n[split]\nat_node="head"\n[protect]\nparameters=["head.*"]\n[output]\npolicy="label"\n'))
    package = other.package.encode()
    pph = crypto.keccak256(package)
    pct = crypto.ecies_encrypt(core.encryption_key, package, crypto.head_aad(MODEL, 1, pph))
    before = core.state_version
    with pytest.raises(EntryCallError, match="do not load together"):
        core.call("provision_head", dict(model_id=MODEL, version=1, chain_id=1337, registry=REGISTRY,
                                         transfer=TRANSFER, package_ciphertext=pct, package_plain_hash=pph,
                                         head_graph_hash=other.package.graph_hash,
                                         head_params_hash=other.package.params_hash,
                                         package_hash=crypto.keccak256(pct)))
    assert core.state_version == before
    import onnxruntime
    x = es.sample_inputs(1, seed=9)
    feats = onnxruntime.InferenceSession(res.backbone_bytes, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    out = _infer(core, feats, 7, crypto.X25519KeyPair.generate())
    assert out.policy == "label_scores" and out.scores is not None


def test_answered_ids_watermark_and_round_trip():
    from enclave.core import AnsweredIds

    ids = AnsweredIds()
    scope = (1337, TRANSFER)
    for rid in (1, 2, 5, 3, 9):
        ids.add((*scope, rid))
    assert all((*scope, r) in ids for r in (1, 2, 3, 5, 9))
    assert all((*scope, r) not in ids for r in (4, 6, 10, 0 + 11))
    assert (1, TRANSFER, 1) not in ids and (1337, PINDEX, 1) not in ids
    assert ids.to_wire() == [[1337, TRANSFER, 3, [5, 9]]]
    again = AnsweredIds.from_wire(ids.to_wire())
    assert again.to_wire() == ids.to_wire() and again.count == ids.count == 5
    for rid in range(4, 2000):
        ids.add((*scope, rid))
    assert ids.to_wire() == [[1337, TRANSFER, 1999, []]]


def test_every_answer_is_numbered_and_a_rolled_back_manifest_is_refused(tmp_path):
    """The attack: copy the sealed state (manifest and journal), let the enclave answer, put the
    old copy back, restart. The chain anchors the highest answer number delivered, so the old
    copy is refused."""
    import shutil

    es, res = _split("label")
    core = EnclaveCore(SimulatedPlatform(tmp_path / "platform"), load_identity(), tmp_path)
    _provision(core, res)
    x = es.sample_inputs(1, seed=6)
    feats = __import__("onnxruntime").InferenceSession(
        res.backbone_bytes, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    requester = crypto.X25519KeyPair.generate()
    _infer(core, feats, 1, requester)
    assert core.call("status", {})["sequence"] == 1
    sealed = tmp_path / "sealed"
    shutil.copytree(sealed, tmp_path / "old-sealed")
    _infer(core, feats, 2, requester)
    assert core.sequence == 2
    sv = core.state_version
    shutil.rmtree(sealed)
    shutil.copytree(tmp_path / "old-sealed", sealed)  # the rollback

    again = EnclaveCore(SimulatedPlatform(tmp_path / "platform"), load_identity(), tmp_path)
    with pytest.raises(SealingError, match="rolled back"):
        again.call("seal_state", {"action": "restore", "anchored_state_version": sv, "anchored_sequence": 2})
    # without the chain's anchor the stand-in cannot tell (why the anchor is on-chain)
    assert again.call("seal_state", {"action": "restore", "anchored_state_version": sv,
                                     "anchored_sequence": 1})["models"] == 1


def test_the_owners_rate_limit_caps_answers_per_requester(tmp_path):
    """The rule's [output].max_answers_per_requester travels in the head graph (hash on-chain)
    and the enclave refuses the excess per requester, per window, on its clock."""
    from orchestrator.models import load_model
    from orchestrator.models.rule import parse_rule
    from orchestrator.models.split import split_model
    from tests.support import enclave_support as es

    rule = es.RULE.replace(b'policy="label_scores"', b'policy="label"\nmax_answers_per_requester=2\nwindow_seconds=60')
    res = split_model(load_model(es.canary_model().SerializeToString()), parse_rule(rule))
    assert res.head_graph.meta["rate_limit"] == {"answers": 2, "window_seconds": 60}
    now = [1000.0]
    core = EnclaveCore(SimulatedPlatform(tmp_path / "platform"), load_identity(), tmp_path, clock=lambda: now[0])
    _provision(core, res)
    x = es.sample_inputs(1, seed=8)
    feats = __import__("onnxruntime").InferenceSession(
        res.backbone_bytes, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    requester = crypto.X25519KeyPair.generate()
    _infer(core, feats, 1, requester)
    _infer(core, feats, 2, requester)
    with pytest.raises(EntryCallError, match="limit of 2 answers per 60"):
        _infer(core, feats, 3, requester)
    now[0] += 61
    _infer(core, feats, 3, requester)  # a new window


def test_answers_are_journalled_in_constant_cost_and_survive_compaction_and_a_torn_tail(tmp_path, monkeypatch):
    """An answer appends one record to the journal; the manifest is not rewritten until the
    journal is compacted; a restart replays manifest + journal, dropping a torn last record."""
    import enclave.core as core_mod

    monkeypatch.setattr(core_mod, "JOURNAL_COMPACT", 4)
    monkeypatch.setattr(core_mod, "RECENT_ANSWERS", 6)
    es, res = _split("label")
    core = EnclaveCore(SimulatedPlatform(tmp_path / "platform"), load_identity(), tmp_path)
    _provision(core, res)
    feats = __import__("onnxruntime").InferenceSession(
        res.backbone_bytes, providers=["CPUExecutionProvider"]).run(None, {"x": es.sample_inputs(1, seed=8)})[0]
    requester = crypto.X25519KeyPair.generate()
    manifest = tmp_path / "sealed" / "manifest.sealed"
    answers, sizes = {}, []
    before = manifest.read_bytes()
    for rid in range(1, 4):
        answers[rid] = _answer(core, feats, rid, requester)
        journal = sorted((tmp_path / "sealed").glob("journal-*.sealed"))
        sizes.append(journal[0].stat().st_size)
    assert manifest.read_bytes() == before  # no manifest rewrite per answer
    assert sizes[1] - sizes[0] == sizes[2] - sizes[1]  # each answer adds one record of the same size
    for rid in range(4, 11):  # past the compaction interval: manifest re-sealed, old journal gone
        answers[rid] = _answer(core, feats, rid, requester)
    assert manifest.read_bytes() != before and len(list((tmp_path / "sealed").glob("journal-*.sealed"))) <= 1
    sv = core.state_version
    journal = next((tmp_path / "sealed").glob("journal-*.sealed"), None)
    if journal is not None:
        with open(journal, "ab") as f:
            f.write(b"\x00\x00\x10\x00partial")  # a record torn by a crash
    again = EnclaveCore(SimulatedPlatform(tmp_path / "platform"), load_identity(), tmp_path)
    assert again.call("seal_state", {"action": "restore", "anchored_state_version": sv,
                                     "anchored_sequence": 10})["sequence"] == 10
    repeated = _answer(again, feats, 10, requester)
    assert repeated["repeated"] and repeated["signature"] == answers[10]["signature"]
    with pytest.raises(EntryCallError, match="no longer among"):  # beyond the bound of kept answers
        _answer(again, feats, 2, requester)
    assert _answer(again, feats, 11, requester)["sequence"] == 11


def test_answers_restored_from_a_manifest_are_sealed_again_unchanged_by_the_next_compaction(tmp_path, monkeypatch):
    """The manifest splices each kept answer's encoding made once (for its journal record, or at
    restore); a restored enclave that compacts again must seal the very answers it restored."""
    import enclave.core as core_mod

    monkeypatch.setattr(core_mod, "JOURNAL_COMPACT", 4)
    monkeypatch.setattr(core_mod, "RECENT_ANSWERS", 12)
    es, res = _split("label")
    feats = __import__("onnxruntime").InferenceSession(
        res.backbone_bytes, providers=["CPUExecutionProvider"]).run(None, {"x": es.sample_inputs(1, seed=4)})[0]
    requester = crypto.X25519KeyPair.generate()

    def restarted(anchored_sequence: int) -> EnclaveCore:
        core = EnclaveCore(SimulatedPlatform(tmp_path / "platform"), load_identity(), tmp_path)
        core.call("seal_state", {"action": "restore", "anchored_state_version": 0,
                                 "anchored_sequence": anchored_sequence})
        return core

    first = EnclaveCore(SimulatedPlatform(tmp_path / "platform"), load_identity(), tmp_path)
    _provision(first, res)
    answers = {rid: _answer(first, feats, rid, requester) for rid in range(1, 10)}  # 1-5 compacted, 6-9 journalled
    first.close()
    second = restarted(9)
    for rid in range(10, 15):  # compacted again at 10: answers 1-5 as the restore decoded them, 6-9 as replayed
        answers[rid] = _answer(second, feats, rid, requester)
    second.close()
    third = restarted(14)
    for rid in (3, 8, 10, 14):  # kept: the twelve latest; 3 went through two manifests, 8 a manifest
        again = _answer(third, feats, rid, requester)
        assert again["repeated"], rid
        assert {k: v for k, v in again.items() if k != "repeated"} == \
            {k: v for k, v in answers[rid].items() if k != "repeated"}, rid


def _durability_run(tmp_path, monkeypatch, mode: str):
    """A core in ``mode`` answering request 1, the fsyncs it made (descriptors' files) counted."""
    import enclave.journal as journal_mod

    synced: list[int] = []
    real_fsync = journal_mod.os.fsync
    monkeypatch.setattr(journal_mod.os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    es, res = _split("label")
    feats = __import__("onnxruntime").InferenceSession(
        res.backbone_bytes, providers=["CPUExecutionProvider"]).run(None, {"x": es.sample_inputs(1, seed=9)})[0]
    requester = crypto.X25519KeyPair.generate()
    core = EnclaveCore(SimulatedPlatform(tmp_path / mode / "platform"), load_identity(), tmp_path / mode,
                       answer_durability=mode)
    _provision(core, res)
    synced.clear()
    answer = _answer(core, feats, 1, requester)
    return core, answer, synced, feats, requester


@pytest.mark.parametrize("mode", ["fsync", "background", "write"])
def test_every_durability_mode_journals_the_answer_before_it_leaves(tmp_path, monkeypatch, mode):
    """Whatever the mode, the journal record is written before the answer leaves, so a killed and
    restarted enclave repeats the very same signed answer; the modes differ only in when the
    record is fsynced: before the answer (fsync), by the flusher right after (background), by the
    OS (write; close still flushes)."""
    import time

    core, first, synced, feats, requester = _durability_run(tmp_path, monkeypatch, mode)
    journal = core._journal_path(core._epoch)
    assert journal.stat().st_size > 0  # on the OS's side of the process before the answer came back
    if mode == "fsync":
        assert len(synced) == 1 and core._journal.outstanding == 0
    elif mode == "background":
        deadline = time.monotonic() + 10
        while core._journal.outstanding and time.monotonic() < deadline:
            time.sleep(0.01)
        assert core._journal.outstanding == 0 and len(synced) == 1  # the flusher's
    else:
        assert synced == [] and core._journal.outstanding == 1
    sv = core.state_version
    # a kill: the open journal is left as it is; a second core restores from the files
    again = EnclaveCore(SimulatedPlatform(tmp_path / mode / "platform"), load_identity(), tmp_path / mode,
                        answer_durability=mode)
    assert again.call("seal_state", {"action": "restore", "anchored_state_version": sv,
                                     "anchored_sequence": 1})["sequence"] == 1
    repeated = _answer(again, feats, 1, requester)
    assert repeated["repeated"] and repeated["signature"] == first["signature"]
    core.close()
    again.close()


def test_the_server_kick_flushes_a_background_record_without_waiting_for_the_interval(tmp_path, monkeypatch):
    """In background mode the flusher starts when the server says the reply is out
    (``answer_sent``); its own interval is only the fallback (set to an hour here, so only the
    kick can flush the second answer within the test's deadline)."""
    import time

    import enclave.journal as journal_mod

    monkeypatch.setattr(journal_mod, "FLUSH_INTERVAL", 3600.0)
    core, _, synced, feats, requester = _durability_run(tmp_path, monkeypatch, "background")

    def flushed() -> bool:
        deadline = time.monotonic() + 10
        while core._journal.outstanding and time.monotonic() < deadline:
            time.sleep(0.01)
        return core._journal.outstanding == 0

    assert flushed()  # the flusher's first round, as it starts
    _answer(core, feats, 2, requester)
    core.answer_sent()
    assert flushed() and len(synced) == 2
    core.close()


def test_closing_flushes_what_the_write_mode_left_to_the_os(tmp_path, monkeypatch):
    core, _, synced, _, _ = _durability_run(tmp_path, monkeypatch, "write")
    assert core._journal.outstanding == 1 and synced == []
    core.close()  # the server's stop: nothing is left to the OS's write-back
    assert len(synced) == 1 and core._journal.outstanding == 0


def test_a_torn_journal_tail_is_cut_so_later_answers_survive_the_next_restore(tmp_path, monkeypatch):
    """A record whose write did not finish (the process died mid-write) is dropped at restore and
    cut off the file: otherwise the next answers, appended after the torn bytes, would be read
    as part of it at the following restore and lost, and that state refused as rolled back."""
    core, _, _, feats, requester = _durability_run(tmp_path, monkeypatch, "fsync")
    sv = core.state_version
    journal = core._journal_path(core._epoch)
    core.close()
    whole = journal.stat().st_size
    with open(journal, "ab") as f:
        f.write((5000).to_bytes(4, "big") + b"torn")  # a header promising more than was written
    restarted = EnclaveCore(SimulatedPlatform(tmp_path / "fsync" / "platform"), load_identity(), tmp_path / "fsync",
                            answer_durability="fsync")
    assert restarted.call("seal_state", {"action": "restore", "anchored_state_version": sv,
                                         "anchored_sequence": 1})["sequence"] == 1
    assert journal.stat().st_size == whole
    assert _answer(restarted, feats, 2, requester)["sequence"] == 2
    restarted.close()
    third = EnclaveCore(SimulatedPlatform(tmp_path / "fsync" / "platform"), load_identity(), tmp_path / "fsync",
                        answer_durability="fsync")
    assert third.call("seal_state", {"action": "restore", "anchored_state_version": sv,
                                     "anchored_sequence": 2})["sequence"] == 2


def test_answer_durability_is_checked_in_the_config():
    from splitseal.config import load_config
    from splitseal.errors import ConfigError

    assert load_config(environ={}).enclave.answer_durability == "background"
    for mode in ("fsync", "background", "write"):
        assert load_config(environ={"SPLITSEAL_ENCLAVE_ANSWER_DURABILITY": mode}).enclave.answer_durability == mode
    with pytest.raises(ConfigError, match="answer_durability"):
        load_config(environ={"SPLITSEAL_ENCLAVE_ANSWER_DURABILITY": "sometimes"})
