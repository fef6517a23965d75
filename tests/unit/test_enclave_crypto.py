"""ECIES, AES-GCM and the AAD builders of splitseal.protocol.crypto (docs/PROTOCOL.md)."""

from __future__ import annotations

import numpy as np
import pytest

from splitseal.errors import InvalidInputError
from splitseal.protocol import crypto

MODEL = bytes(range(32))


def test_ecies_round_trip_and_layout():
    kp = crypto.X25519KeyPair.generate()
    aad = crypto.result_aad(7, MODEL, 1)
    ct = crypto.ecies_encrypt(kp.public, b"secret label", aad)
    assert ct[0] == 0x01
    assert len(ct) == len(b"secret label") + crypto.ECIES_OVERHEAD
    assert b"secret label" not in ct
    assert crypto.ecies_decrypt(kp, ct, aad) == b"secret label"


def test_ecies_matches_the_documented_derivation():
    """Rebuild the key by hand from the spec: HKDF(shared, salt = eph || recipient, info)."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
    kp = crypto.X25519KeyPair.generate()
    ct = crypto.ecies_encrypt(kp.public, b"x" * 40, b"aad")
    eph, nonce = crypto.ecies_ephemeral_and_nonce(ct)
    shared = X25519PrivateKey.from_private_bytes(kp.private).exchange(X25519PublicKey.from_public_bytes(eph))
    key = crypto.hkdf_sha256(shared, salt=eph + kp.public, info=b"splitseal.ecies.v1")
    assert crypto.aead_decrypt(key, nonce, ct[45:], b"aad") == b"x" * 40


@pytest.mark.parametrize("position", [0, 1, 20, 40, 50, -1, -10])
def test_ecies_rejects_every_bit_flip(position):
    kp = crypto.X25519KeyPair.generate()
    ct = bytearray(crypto.ecies_encrypt(kp.public, b"plaintext-canary", b"aad"))
    ct[position] ^= 0x01
    with pytest.raises(crypto.DecryptionError) as info:
        crypto.ecies_decrypt(kp, bytes(ct), b"aad")
    assert "plaintext-canary" not in str(info.value)


def test_ecies_rejects_other_aad_and_other_key():
    kp, other = crypto.X25519KeyPair.generate(), crypto.X25519KeyPair.generate()
    ct = crypto.ecies_encrypt(kp.public, b"p", crypto.result_aad(1, MODEL, 1))
    for aad in (crypto.result_aad(2, MODEL, 1), crypto.result_aad(1, MODEL, 2),
                crypto.result_aad(1, bytes(32), 1)):
        with pytest.raises(crypto.DecryptionError):
            crypto.ecies_decrypt(kp, ct, aad)
    with pytest.raises(crypto.DecryptionError):
        crypto.ecies_decrypt(other, ct, crypto.result_aad(1, MODEL, 1))


def test_ecies_rejects_bad_keys_and_short_ciphertext():
    with pytest.raises(InvalidInputError):
        crypto.ecies_encrypt(b"\x01" * 31, b"p", b"")
    with pytest.raises(InvalidInputError):
        crypto.ecies_encrypt(bytes(32), b"p", b"")  # low-order point
    with pytest.raises(crypto.DecryptionError):
        crypto.ecies_decrypt(crypto.X25519KeyPair.generate(), b"\x01" * 10, b"")


def test_key_pair_repr_hides_private_half():
    kp = crypto.X25519KeyPair.generate()
    assert kp.private.hex() not in repr(kp)
    assert crypto.X25519KeyPair.from_private(kp.private).public == kp.public


def test_aad_builders_are_distinct_and_fixed_layout():
    enclave = "0x" + "11" * 20
    header = crypto.tensor_header((1, 64), "<f4")
    assert header == b"\x03<f4\x02" + (1).to_bytes(4, "big") + (64).to_bytes(4, "big")
    t = crypto.transfer_aad(5, MODEL, 3, enclave, header)
    assert t == b"splitseal.transfer.v1" + (5).to_bytes(32, "big") + MODEL + (3).to_bytes(4, "big") \
        + b"\x11" * 20 + header
    assert crypto.head_aad(MODEL, 1, b"\x02" * 32).startswith(b"splitseal.head.v1" + MODEL)
    assert crypto.index_aad(MODEL, 1, b"\x02" * 32).startswith(b"splitseal.index.v1" + MODEL)
    rk = crypto.request_key_hash(MODEL, 1, b"\x09" * 32)
    assert crypto.input_aad(rk) == b"splitseal.input.v1" + rk
    assert crypto.transfer_aad(5, MODEL, 3, enclave, crypto.tensor_header((1, 63), "<f4")) != t
    with pytest.raises(InvalidInputError):
        crypto.tensor_header((1, 2), "float32")
    with pytest.raises(InvalidInputError):
        crypto.result_aad(-1, MODEL, 1)


def test_the_tensor_header_is_the_documented_layout_for_random_shapes_and_refuses_the_rest():
    """``uint8 len(dtype) || dtype || uint8 ndim || ndim x uint32 big-endian``, built field by field
    here for 20,000 random shapes (seed 16) against the packed builder, and the same refusals: a
    dimension below zero or beyond uint32, more than eight dimensions, an unknown dtype."""
    import random

    rng = random.Random(16)
    for _ in range(20_000):
        shape = [rng.choice([0, 1, 7, 2**32 - 1, rng.randrange(2**32), np.int64(5)])
                 for _ in range(rng.randint(0, crypto.MAX_TENSOR_DIMS))]
        dtype = rng.choice(crypto.TENSOR_DTYPES)
        expected = bytes([len(dtype)]) + dtype.encode() + bytes([len(shape)]) \
            + b"".join(int(d).to_bytes(4, "big") for d in shape)
        assert crypto.tensor_header(shape, dtype) == expected
    for shape, dtype in [((1, -1), "<f4"), ((2**32,), "<f4"), ((1,) * 9, "<f4"), ((1,), ">f4"), ((1,), b"<f4"),
                         ((1,), "<f2")]:
        with pytest.raises(InvalidInputError):
            crypto.tensor_header(shape, dtype)


def test_encrypt_transfer_round_trip():
    kp = crypto.X25519KeyPair.generate()
    arr = np.arange(12, dtype=np.float32).reshape(3, 4)
    enclave = "0x" + "22" * 20
    ct, shape, dtype = crypto.encrypt_transfer(kp.public, enclave, 9, MODEL, 2, arr)
    assert shape == (3, 4) and dtype == "<f4"
    aad = crypto.transfer_aad(9, MODEL, 2, enclave, crypto.tensor_header(shape, dtype))
    back = np.frombuffer(crypto.ecies_decrypt(kp, ct, aad), dtype=dtype).reshape(shape)
    np.testing.assert_array_equal(back, arr)
    assert crypto.tensor_nbytes(shape, dtype) == arr.nbytes


def test_keccak_is_ethereum_keccak():
    assert crypto.keccak256(b"").hex() == "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470"


@pytest.mark.slow
def test_no_aes_gcm_key_nonce_pair_repeats_over_100000_results():
    """Each result is encrypted under a key derived from a fresh ephemeral X25519 key, so over
    100,000 results to one requester no (key, nonce) pair repeats: the ephemeral keys are all
    distinct (and so are the random nonces)."""
    kp = crypto.X25519KeyPair.generate()
    aad = crypto.result_aad(1, MODEL, 1)
    seen_eph, seen_nonce = set(), set()
    for _ in range(100_000):
        eph, nonce = crypto.ecies_ephemeral_and_nonce(crypto.ecies_encrypt(kp.public, b"r", aad))
        seen_eph.add(eph)
        seen_nonce.add(nonce)
    assert len(seen_eph) == 100_000 and len(seen_nonce) == 100_000


def test_an_ephemeral_key_reserve_hands_out_each_key_pair_once():
    """The enclave draws the next result's ephemeral key pair after a reply (off the request's
    path): a refilled reserve hands out that key pair once and then draws on the spot, and a
    ciphertext made with it carries its public key and opens as any other."""
    reserve = crypto.EphemeralKeys()
    assert not reserve.ready
    reserve.refill()
    assert reserve.ready
    drawn = reserve._next
    reserve.refill()  # a second refill keeps the waiting key pair: nothing is drawn twice
    first = reserve.take()
    assert first is drawn and not reserve.ready
    taken = [first] + [reserve.take() for _ in range(20)]  # empty reserve: a fresh draw each time
    reserve.refill()
    taken.append(reserve.take())
    assert len({k.public for k in taken}) == len(taken) == 22
    recipient = crypto.X25519KeyPair.generate()
    aad = crypto.result_aad(3, MODEL, 1)
    ct = crypto.ecies_encrypt(recipient.public, b"scores", aad, ephemeral=first)
    assert crypto.ecies_ephemeral_and_nonce(ct)[0] == first.public
    assert crypto.ecies_decrypt(recipient, ct, aad) == b"scores"
    with pytest.raises(crypto.DecryptionError):
        crypto.ecies_decrypt(recipient, ct, crypto.result_aad(4, MODEL, 1))


def test_an_ephemeral_key_reserve_shared_by_threads_never_hands_a_key_pair_out_twice():
    import threading

    reserve, taken, lock = crypto.EphemeralKeys(), [], threading.Lock()

    def worker() -> None:
        for _ in range(200):
            reserve.refill()
            key = reserve.take()
            with lock:
                taken.append(key.public)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(taken) == len(set(taken)) == 800


def test_a_transfer_session_reuses_its_ephemeral_for_a_bounded_run_and_each_message_opens_alone():
    """A node's session: ECIES v1 ciphertexts under one ephemeral key (each its own nonce and
    AAD), each opening with plain ecies_decrypt as with the recipient's session keys; a new key
    pair after max_messages, after max_seconds and for another recipient."""
    now = [0.0]
    session = crypto.TransferSession(max_messages=3, max_seconds=60, clock=lambda: now[0])
    enclave, other = crypto.X25519KeyPair.generate(), crypto.X25519KeyPair.generate()
    keys = crypto.SessionKeys(enclave)
    aads = [crypto.transfer_aad(i, MODEL, 1, "0x" + "22" * 20, crypto.tensor_header((2,), "<f4")) for i in range(8)]
    cts = [session.encrypt(enclave.public, f"features {i}".encode(), aads[i]) for i in range(4)]
    ephs = [crypto.ecies_ephemeral_and_nonce(ct)[0] for ct in cts]
    assert ephs[0] == ephs[1] == ephs[2] != ephs[3] and session.sessions == 2
    assert len({crypto.ecies_ephemeral_and_nonce(ct)[1] for ct in cts}) == 4  # a nonce per message
    for i, ct in enumerate(cts):
        assert ct[0] == crypto.ECIES_VERSION and len(ct) == len(f"features {i}") + crypto.ECIES_OVERHEAD
        assert crypto.ecies_decrypt(enclave, ct, aads[i]) == keys.open(ct, aads[i]) == f"features {i}".encode()
    assert len(keys) == 2  # one AES key per session, derived once
    with pytest.raises(crypto.DecryptionError):  # the AAD still binds each message to its request
        keys.open(cts[1], aads[0])
    now[0] = 61.0  # the session's time is up
    late = session.encrypt(enclave.public, b"x", aads[4])
    assert crypto.ecies_ephemeral_and_nonce(late)[0] not in ephs and session.sessions == 3
    moved = session.encrypt(other.public, b"y", aads[5])  # another enclave: a session of its own
    assert session.sessions == 4 and crypto.ecies_decrypt(other, moved, aads[5]) == b"y"
    with pytest.raises(crypto.DecryptionError):
        keys.open(moved, aads[5])
    with pytest.raises(InvalidInputError):
        crypto.TransferSession(max_messages=0)
    with pytest.raises(InvalidInputError):
        session.encrypt(b"short", b"x", aads[6])


def test_recipient_sessions_keep_a_session_per_recipient_bounded_in_number_and_time():
    """The enclave's result sessions: one ephemeral per recipient key for a bounded run (messages
    and seconds), key pairs taken from the reserve, the oldest recipient evicted past capacity, a
    low-order key refused and not kept; every ciphertext is ECIES v1 and opens alone."""
    now = [0.0]
    reserve = crypto.EphemeralKeys()
    reserve.refill()
    drawn = reserve._next
    sessions = crypto.RecipientSessions(capacity=2, max_messages=3, max_seconds=60, clock=lambda: now[0],
                                        keys=reserve)
    a, b, c = (crypto.X25519KeyPair.generate() for _ in range(3))
    aads = [crypto.result_aad(i, MODEL, 1) for i in range(12)]

    def eph(ct: bytes) -> bytes:
        return crypto.ecies_ephemeral_and_nonce(ct)[0]

    to_a = [sessions.encrypt(a.public, bytes([i]), aads[i]) for i in range(4)]
    assert eph(to_a[0]) == drawn.public == eph(to_a[2]) != eph(to_a[3])  # a new key pair after 3 messages
    assert [crypto.ecies_decrypt(a, ct, aads[i]) for i, ct in enumerate(to_a)] == [bytes([i]) for i in range(4)]
    to_b = sessions.encrypt(b.public, b"b", aads[4])
    assert eph(to_b) not in {eph(ct) for ct in to_a} and len(sessions) == 2
    now[0] = 61.0  # a's session's time is up
    assert eph(sessions.encrypt(a.public, b"late", aads[5])) != eph(to_a[3])
    sessions.encrypt(c.public, b"c", aads[6])  # a third recipient: the least recent (b) goes
    assert len(sessions) == 2 and eph(sessions.encrypt(b.public, b"b again", aads[7])) != eph(to_b)
    low_order = bytes(32)
    with pytest.raises(InvalidInputError):
        sessions.encrypt(low_order, b"x", aads[8])
    assert low_order not in sessions._sessions and len(sessions) == 2
    assert sessions.expire() == 0  # c's and b's sessions started at 61 s: their time is not up
    now[0] = 121.5
    assert sessions.expire() == 2 and len(sessions) == 0  # no session key outlives its window
    assert crypto.ecies_decrypt(c, sessions.encrypt(c.public, b"c later", aads[9]), aads[9]) == b"c later"
    with pytest.raises(InvalidInputError):
        sessions.encrypt(b"short", b"x", aads[8])
    with pytest.raises(InvalidInputError):
        crypto.RecipientSessions(capacity=0)
    with pytest.raises(InvalidInputError):
        crypto.RecipientSessions(max_seconds=0)


def test_session_keys_keep_only_keys_that_opened_and_stay_bounded():
    enclave = crypto.X25519KeyPair.generate()
    keys = crypto.SessionKeys(enclave, capacity=4)
    aad = crypto.result_aad(1, MODEL, 1)
    good = crypto.ecies_encrypt(enclave.public, b"ok", aad)
    forged = bytearray(good)
    forged[-1] ^= 1
    for bad in (bytes(forged), good[:20], b"\x02" + good[1:]):
        with pytest.raises(crypto.DecryptionError):
            keys.open(bad, aad)
    assert len(keys) == 0  # garbage leaves nothing behind
    with pytest.raises(crypto.DecryptionError):  # the right ciphertext under the wrong AAD
        keys.open(good, crypto.result_aad(2, MODEL, 1))
    assert len(keys) == 0 and keys.open(good, aad) == b"ok" and len(keys) == 1
    sessions = [crypto.TransferSession() for _ in range(6)]
    for i, s in enumerate(sessions):
        assert keys.open(s.encrypt(enclave.public, bytes([i]), aad), aad) == bytes([i])
    assert len(keys) == 4  # the oldest evicted; an evicted session's messages still open
    assert keys.open(sessions[0].encrypt(enclave.public, b"again", aad), aad) == b"again"
