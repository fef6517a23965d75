"""ParameterIndex: publication by the model owner, once per version, and enclave confirmations.
Every event and custom error with its arguments."""

from __future__ import annotations

import pytest

from splitseal.protocol import eip712
from tests.support.contract_kit import ZERO32, ZERO_ADDRESS, EnclaveKey, Kit, make_kit_fixture, rand32, reverts

kit = make_kit_fixture("chain", "deployment")


def _sign(kit: Kit, e: EnclaveKey, model_id: bytes, version: int, enc_hash: bytes, root: bytes, count: int,
          signing_key: bytes | None = None) -> bytes:
    digest = eip712.index_verified_digest(kit.chain.chain_id, kit.index.address, model_id=model_id,
                                          model_version=version, enclave=e.address, encrypted_index_hash=enc_hash,
                                          merkle_root=root, entry_count=count)
    return eip712.sign(signing_key or e.private_key, digest)


@pytest.fixture
def published(kit: Kit):
    model_id, version = kit.register_model()
    enc_hash, root, count = rand32(), rand32(), 12
    receipt = kit.tx(kit.index.functions.publishIndex(model_id, version, enc_hash, root, count), kit.owner,
                     label="ParameterIndex.publishIndex")
    return model_id, version, enc_hash, root, count, receipt


def test_publish_once_per_version(kit: Kit, published) -> None:
    model_id, version, enc_hash, root, count, receipt = published
    ev = kit.one_event(receipt, kit.index, "IndexPublished")
    assert dict(ev) == {"modelId": model_id, "version": version, "encryptedIndexHash": enc_hash, "merkleRoot": root,
                        "entryCount": count}
    record = kit.call(kit.index.functions.index(model_id, version))
    block_time = int(kit.chain.get_block(receipt["blockNumber"])["timestamp"])
    assert tuple(record) == (enc_hash, root, count, block_time)
    with reverts("ParameterIndexAlreadyPublished", modelId=model_id, version=version):
        kit.tx(kit.index.functions.publishIndex(model_id, version, rand32(), rand32(), 3), kit.owner)
    # A new model version gets its own index.
    kit.register_model(model_id)
    kit.tx(kit.index.functions.publishIndex(model_id, version + 1, rand32(), rand32(), 3), kit.owner)
    assert kit.call(kit.index.functions.modelRegistry()) == kit.registry.address


def test_publish_checks(kit: Kit) -> None:
    model_id, version = kit.register_model()
    fn = kit.index.functions.publishIndex
    with reverts("ParameterIndexNotModelOwner", modelId=model_id, caller=kit.stranger.address, owner=kit.owner.address):
        kit.tx(fn(model_id, version, rand32(), rand32(), 1), kit.stranger)
    with reverts("ParameterIndexUnknownModelVersion", modelId=model_id, version=version + 1):
        kit.tx(fn(model_id, version + 1, rand32(), rand32(), 1), kit.owner)
    for args in ((ZERO32, rand32(), 1), (rand32(), ZERO32, 1), (rand32(), rand32(), 0)):
        with reverts("ParameterIndexEmptyIndex", modelId=model_id, version=version):
            kit.tx(fn(model_id, version, *args), kit.owner)


def test_confirm_index(kit: Kit, published) -> None:
    model_id, version, enc_hash, root, count, _ = published
    e = EnclaveKey.new()
    kit.register_enclave(e)
    fn = kit.index.functions.confirmIndex
    sig = _sign(kit, e, model_id, version, enc_hash, root, count)
    with reverts("ParameterIndexEnclaveNotAuthorized", modelId=model_id, enclave=e.address):  # wrong measurement
        kit.tx(fn(model_id, version, e.address, sig), kit.stranger)
    kit.tx(kit.registry.functions.allowMeasurement(model_id, e.measurement), kit.owner)

    wrong_root = _sign(kit, e, model_id, version, enc_hash, rand32(), count)
    with reverts("ParameterIndexBadSignature", enclave=e.address) as r:
        kit.tx(fn(model_id, version, e.address, wrong_root), kit.stranger)
    assert r.error.error_args["recovered"] not in (e.address, ZERO_ADDRESS)
    forger = rand32()
    with reverts("ParameterIndexBadSignature", enclave=e.address, recovered=eip712.address_of(forger)):
        kit.tx(fn(model_id, version, e.address, _sign(kit, e, model_id, version, enc_hash, root, count, forger)),
               kit.stranger)
    with reverts("ParameterIndexBadSignature", enclave=e.address, recovered=ZERO_ADDRESS):
        kit.tx(fn(model_id, version, e.address, b""), kit.stranger)

    receipt = kit.tx(fn(model_id, version, e.address, sig), kit.stranger, label="ParameterIndex.confirmIndex")
    ev = kit.one_event(receipt, kit.index, "IndexVerified")
    assert dict(ev) == {"modelId": model_id, "version": version, "enclave": e.address, "merkleRoot": root}
    assert kit.call(kit.index.functions.isIndexVerified(model_id, version, e.address))
    with reverts("ParameterIndexAlreadyVerified", modelId=model_id, version=version, enclave=e.address):
        kit.tx(fn(model_id, version, e.address, sig), kit.stranger)


def test_confirm_needs_a_published_index_and_a_live_enclave(kit: Kit, published) -> None:
    model_id, version, enc_hash, root, count, _ = published
    e = EnclaveKey.new()
    kit.register_enclave(e)
    kit.tx(kit.registry.functions.allowMeasurement(model_id, e.measurement), kit.owner)
    with reverts("ParameterIndexNotPublished", modelId=model_id, version=version + 1):
        kit.tx(kit.index.functions.confirmIndex(model_id, version + 1, e.address, b""), kit.stranger)
    kit.tx(kit.registry.functions.revokeEnclave(e.address), kit.admin)
    with reverts("ParameterIndexEnclaveNotAuthorized", modelId=model_id, enclave=e.address):
        kit.tx(kit.index.functions.confirmIndex(
            model_id, version, e.address, _sign(kit, e, model_id, version, enc_hash, root, count)), kit.stranger)
