"""Sealing: measurement policy, AAD binding, rollback refusal, tamper refusal, nonce uniqueness."""

from __future__ import annotations

import os

import pytest

from enclave.identity import EnclaveIdentity
from enclave.keys import KeyDeriver, KeyPolicy
from enclave.sealing import Sealer, parse_header
from splitseal.errors import SealingError

ROOT = os.urandom(32)
AAD = b"model-id-and-version"
SECRET = b"canary-head-parameters" * 4


def _sealer(measurement=b"\x01" * 32, svn=2, root=ROOT, signer=b"\x02" * 32):
    return Sealer(KeyDeriver(root, EnclaveIdentity(measurement, signer, 1, svn, False)))


def test_round_trip_and_ciphertext_hides_plaintext():
    s = _sealer()
    blob = s.seal(SECRET, aad=AAD, label="model", state_version=5)
    assert SECRET not in blob and b"canary" not in blob
    assert s.unseal(blob, aad=AAD, label="model") == (SECRET, 5)
    # a restarted enclave (new Sealer, same platform and measurement) reloads it
    assert _sealer().unseal(blob, aad=AAD, label="model", min_state_version=5) == (SECRET, 5)


def test_other_measurement_or_platform_cannot_unseal():
    blob = _sealer().seal(SECRET, aad=AAD, label="model", state_version=1)
    for other in (_sealer(measurement=b"\x09" * 32), _sealer(root=os.urandom(32))):
        with pytest.raises(SealingError, match="another enclave measurement") as info:
            other.unseal(blob, aad=AAD, label="model")
        assert "canary" not in str(info.value)


def test_signer_policy_opens_across_measurements_of_one_signer():
    blob = _sealer().seal(SECRET, aad=AAD, label="x", policy=KeyPolicy.SIGNER)
    assert _sealer(measurement=b"\x09" * 32).unseal(blob, aad=AAD, label="x")[0] == SECRET
    with pytest.raises(SealingError):
        _sealer(signer=b"\x08" * 32).unseal(blob, aad=AAD, label="x")


def test_rollback_is_refused():
    s = _sealer()
    old = s.seal(b"v1", aad=AAD, label="model", state_version=1)
    s.seal(b"v2", aad=AAD, label="model", state_version=2)
    with pytest.raises(SealingError, match="rollback"):
        s.unseal(old, aad=AAD, label="model", min_state_version=2)


def test_newer_security_version_blob_is_refused_by_older_enclave():
    blob = _sealer(svn=3).seal(SECRET, aad=AAD, label="model")
    with pytest.raises(SealingError, match="security version"):
        _sealer(svn=2).unseal(blob, aad=AAD, label="model")
    # and the reverse (upgrade) works under the signer policy
    older = _sealer(svn=1).seal(SECRET, aad=AAD, label="m", policy=KeyPolicy.SIGNER)
    assert _sealer(svn=2, measurement=b"\x05" * 32).unseal(older, aad=AAD, label="m")[0] == SECRET


def test_every_bit_flip_and_other_aad_or_label_is_refused():
    s = _sealer()
    blob = s.seal(SECRET, aad=AAD, label="model", state_version=3)
    for i in range(len(blob)):
        tampered = bytearray(blob)
        tampered[i] ^= 0x04
        with pytest.raises(SealingError) as info:
            s.unseal(bytes(tampered), aad=AAD, label="model")
        assert "canary" not in str(info.value)
    with pytest.raises(SealingError):
        s.unseal(blob, aad=b"other model", label="model")
    with pytest.raises(SealingError):
        s.unseal(blob, aad=AAD, label="identity")
    with pytest.raises(SealingError):
        s.unseal(blob[:40], aad=AAD, label="model")


def test_no_nonce_repeats_under_one_key_over_100000_seals():
    s = _sealer()
    nonces, key_ids = set(), set()
    for i in range(100_000):
        header, _ = parse_header(s.seal(b"r", aad=b"", label="s", state_version=i))
        nonces.add(header.nonce)
        key_ids.add(header.key_id)
    assert len(key_ids) == 1           # one sealing key ...
    assert len(nonces) == 100_000      # ... and no nonce used twice under it
    assert len({parse_header(_sealer().seal(b"r", aad=b"", label="s"))[0].key_id for _ in range(3)}) == 3
