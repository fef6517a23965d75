"""Platform root secret, key derivation by policy, identity and measurement."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest

from enclave import identity as ident
from enclave.keys import KeyDerivationError, KeyDeriver, KeyPolicy
from enclave.platform import SimulatedPlatform
from splitseal.errors import EnclaveError

KID = b"\x07" * 32


def _identity(**kw):
    base = dict(mr_enclave=b"\x01" * 32, mr_signer=b"\x02" * 32, product_id=1, security_version=2, debug=False)
    base.update(kw)
    return ident.EnclaveIdentity(**base)


def test_root_secret_file_is_private_and_stable(tmp_path):
    p1 = SimulatedPlatform(tmp_path / "platform")
    secret_file = tmp_path / "platform" / "root_secret"
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "platform").stat().st_mode) == 0o700
    assert SimulatedPlatform(tmp_path / "platform").root_secret() == p1.root_secret()
    assert SimulatedPlatform(tmp_path / "other").root_secret() != p1.root_secret()
    assert p1.quoting_address().startswith("0x") and len(p1.quoting_address()) == 42


def test_root_secret_readable_by_others_is_refused(tmp_path):
    SimulatedPlatform(tmp_path / "platform")
    os.chmod(tmp_path / "platform" / "root_secret", 0o644)
    with pytest.raises(EnclaveError, match="chmod 600"):
        SimulatedPlatform(tmp_path / "platform")


def test_derivation_binds_name_policy_identity_svn_and_key_id():
    root = os.urandom(32)
    kd = KeyDeriver(root, _identity())
    base = kd.derive("seal", KeyPolicy.MEASUREMENT, 2, KID)
    assert len(base) == 32
    assert kd.derive("seal", KeyPolicy.MEASUREMENT, 2, KID) == base
    variants = {
        kd.derive("other", KeyPolicy.MEASUREMENT, 2, KID),
        kd.derive("seal", KeyPolicy.SIGNER, 2, KID),
        kd.derive("seal", KeyPolicy.MEASUREMENT, 1, KID),
        kd.derive("seal", KeyPolicy.MEASUREMENT, 2, b"\x08" * 32),
        KeyDeriver(os.urandom(32), _identity()).derive("seal", KeyPolicy.MEASUREMENT, 2, KID),
        KeyDeriver(root, _identity(mr_enclave=b"\x03" * 32)).derive("seal", KeyPolicy.MEASUREMENT, 2, KID),
        KeyDeriver(root, _identity(debug=True)).derive("seal", KeyPolicy.MEASUREMENT, 2, KID),
    }
    assert base not in variants and len(variants) == 7


def test_signer_policy_survives_a_new_measurement_but_not_a_new_signer():
    root = os.urandom(32)
    a = KeyDeriver(root, _identity()).derive("seal", KeyPolicy.SIGNER, 1, KID)
    assert KeyDeriver(root, _identity(mr_enclave=b"\x09" * 32)).derive("seal", KeyPolicy.SIGNER, 1, KID) == a
    assert KeyDeriver(root, _identity(mr_signer=b"\x09" * 32)).derive("seal", KeyPolicy.SIGNER, 1, KID) != a
    assert KeyDeriver(root, _identity(product_id=2)).derive("seal", KeyPolicy.SIGNER, 1, KID) != a


def test_higher_security_version_is_refused():
    kd = KeyDeriver(os.urandom(32), _identity(security_version=2))
    kd.derive("seal", KeyPolicy.MEASUREMENT, 1, KID)  # lower: allowed (migration)
    with pytest.raises(KeyDerivationError, match="security version 3"):
        kd.derive("seal", KeyPolicy.MEASUREMENT, 3, KID)
    with pytest.raises(KeyDerivationError):
        kd.derive("seal", KeyPolicy.MEASUREMENT, 1, b"short")
    assert "root" not in repr(kd)


def _copy_tree(tmp_path: Path) -> Path:
    root = tmp_path / "copy"
    for rel in ident.code_files() + ident.interpreter_files():
        src = ident.PROJECT_DIR / rel
        if src.exists():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, root / rel)
    return root


def test_measurement_is_deterministic_and_covers_code_interpreter_config(tmp_path):
    root = _copy_tree(tmp_path)
    libs = {"numpy": "1"}
    m = ident.compute_measurement(root=root, libraries=libs)
    assert m == ident.compute_measurement(root=root, libraries=libs)
    assert m == ident.compute_measurement(root=ident.PROJECT_DIR, libraries=libs)
    assert ident.compute_measurement(ident.MeasuredConfig(max_frame_bytes=1024), root=root, libraries=libs) != m
    assert ident.compute_measurement(root=root, libraries={"numpy": "2"}) != m
    kernel_object = ident.interpreter_files()[-1]
    assert kernel_object.startswith(".venv/native/") and (root / kernel_object).is_file()
    for rel in ("splitseal/protocol/crypto.py", "enclave/interpreter.py", "splitseal/errors.py",
                "enclave/csrc/cflags", "enclave/csrc/buffers.h", "enclave/csrc/trees.c", kernel_object):
        path = root / rel
        if not path.exists():
            continue
        original = path.read_bytes()
        path.write_bytes(original + b"\n# changed\n")
        assert ident.compute_measurement(root=root, libraries=libs) != m, rel
        path.write_bytes(original)
    assert ident.compute_measurement(root=root, libraries=libs) == m
    (root / "enclave" / "extra.py").write_text("x = 1\n")
    assert ident.compute_measurement(root=root, libraries=libs) != m


def test_identity_and_signer():
    idt = ident.load_identity(product_id=3, security_version=4, debug=True)
    assert idt.mr_signer == ident.compute_signer_id()
    assert ident.compute_signer_id(b"\x05" * 32) != idt.mr_signer
    assert (idt.product_id, idt.security_version, idt.debug) == (3, 4, True)
    with pytest.raises(Exception):
        ident.EnclaveIdentity(b"x", b"\x00" * 32, 1, 1, False)


def test_a_privilege_drop_is_refused_without_root(monkeypatch):
    from enclave import hardening
    from splitseal.errors import EnclaveError

    monkeypatch.setattr(hardening.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(hardening, "_lock_memory", lambda libc, state: None)
    monkeypatch.setattr(hardening.resource, "setrlimit", lambda *a: None)
    with pytest.raises(EnclaveError, match="needs the enclave to start as root"):
        hardening.harden(run_as="nobody")
