"""Process protection of the enclave stand-in, as far as Linux lets a process protect itself.

A real TEE keeps the host out of the enclave's memory in hardware. The stand-in is an ordinary
process, so it does what the kernel offers, in this order, before any key is derived:

1. no core files: ``RLIMIT_CORE`` = 0 (a crash must not write the head's parameters to disk);
2. not dumpable: ``prctl(PR_SET_DUMPABLE, 0)``; the kernel then refuses ``ptrace`` attach and
   ``/proc/<pid>/mem``, ``/proc/<pid>/environ`` and ``process_vm_readv`` to every process
   without ``CAP_SYS_PTRACE``, including processes of the same user;
3. memory locked: ``mlockall(MCL_CURRENT | MCL_FUTURE)`` so keys and plaintext parameters are
   never swapped out; allowed with ``CAP_IPC_LOCK`` (root, and the dropped user keeps that one
   capability) or when ``RLIMIT_MEMLOCK`` is unlimited, skipped (and reported) otherwise,
   because a process locked beyond its limit fails later allocations;
4. its own user: started as root with ``run_as``, the process creates that system user if it is
   missing, hands it the platform directory (root secret, quoting key) and the sealed state,
   then drops to it for good (supplementary groups, gid, uid), keeping ``CAP_IPC_LOCK`` only.
   The node's user can then neither read the enclave's memory nor unseal its state. Dropping
   privileges resets the dumpable flag, so step 2 is repeated after it.

What stays out of reach: root on the machine (``CAP_SYS_PTRACE``, reading any file) and side
channels; ``docs/ENCLAVE.md`` says what a real TEE adds. ctypes is used for ``prctl`` and
``mlockall`` because the standard library has no binding for them.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import grp
import logging
import os
import pwd
import resource
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from splitseal.errors import EnclaveError

log = logging.getLogger(__name__)

PR_SET_DUMPABLE = 4
PR_GET_DUMPABLE = 3
PR_SET_KEEPCAPS = 8
MCL_CURRENT = 1
MCL_FUTURE = 2
CAP_IPC_LOCK = 14
_CAPABILITY_VERSION_3 = 0x20080522


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


@dataclass
class Hardening:
    """What the process achieved (reported by the ``status`` entry call and logged)."""

    core_files: bool = True
    dumpable: bool = True
    memory_locked: bool = False
    user: str = ""
    notes: list[str] = field(default_factory=list)

    def as_wire(self) -> dict[str, object]:
        return {"core_files": self.core_files, "dumpable": self.dumpable, "memory_locked": self.memory_locked,
                "user": self.user, "notes": list(self.notes)}


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _set_not_dumpable(libc: ctypes.CDLL) -> bool:
    if libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        return True
    return libc.prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) != 0


def _lock_memory(libc: ctypes.CDLL, state: Hardening) -> None:
    soft, _ = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    if os.geteuid() != 0 and soft != resource.RLIM_INFINITY:
        state.notes.append(f"memory not locked: RLIMIT_MEMLOCK is {soft} bytes (start as root, or raise it "
                           "to unlimited, to lock keys in memory)")
        return
    if libc.mlockall(MCL_CURRENT | MCL_FUTURE) == 0:
        state.memory_locked = True
    else:
        state.notes.append(f"memory not locked: mlockall failed ({os.strerror(ctypes.get_errno())})")


def _keep_only_ipc_lock(libc: ctypes.CDLL) -> bool:
    """After a setuid under PR_SET_KEEPCAPS: permitted and effective = {CAP_IPC_LOCK}."""
    header = _CapHeader(_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    data[0].effective = data[0].permitted = 1 << CAP_IPC_LOCK
    return libc.capset(ctypes.byref(header), data) == 0


def ensure_user(name: str) -> pwd.struct_passwd:
    """The system user ``name``, created (no home, no login shell) when missing; root only."""
    try:
        return pwd.getpwnam(name)
    except KeyError:
        pass
    try:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
                       check=True, capture_output=True, text=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", "") or str(exc)
        raise EnclaveError(f"cannot create the enclave user {name!r}: {detail.strip()}; create it yourself "
                           f"(useradd --system {name}) or start the enclave without --user") from None
    return pwd.getpwnam(name)


def _hand_over(paths: Iterable[Path], uid: int, gid: int) -> None:
    """Give the enclave user its directories: files 0600, directories 0700, the top ones 0711
    (others may reach a socket by its name inside, never list or read)."""
    for top in paths:
        top.mkdir(parents=True, exist_ok=True, mode=0o700)
        for dirpath, dirnames, filenames in os.walk(top):
            os.chown(dirpath, uid, gid)
            os.chmod(dirpath, 0o711 if Path(dirpath) == top else 0o700)
            for name in filenames:
                path = os.path.join(dirpath, name)
                os.chown(path, uid, gid, follow_symlinks=False)
                os.chmod(path, 0o600)


def harden(*, run_as: str | None = None, owned_paths: Iterable[Path] = (),
           keep_group: int | None = None) -> Hardening:
    """Apply the protections of the module doc to this process; returns what took effect.

    ``run_as`` needs root; ``owned_paths`` (platform and state directories) are given to that
    user before the drop; ``keep_group`` stays a supplementary group (the socket's group, so
    the dropped process may hand its socket to it). Raises :class:`EnclaveError` when a
    requested drop cannot be done.
    """
    state = Hardening()
    libc = _libc()
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    state.core_files = resource.getrlimit(resource.RLIMIT_CORE) != (0, 0)
    _lock_memory(libc, state)
    if run_as:
        if os.geteuid() != 0:
            raise EnclaveError(f"--user {run_as} needs the enclave to start as root (it drops to that user)")
        user = ensure_user(run_as)
        _hand_over([Path(p) for p in owned_paths], user.pw_uid, user.pw_gid)
        os.setgroups([keep_group] if keep_group is not None else [])
        os.setgid(user.pw_gid)
        libc.prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0)
        os.setuid(user.pw_uid)
        if os.getuid() != user.pw_uid or os.geteuid() != user.pw_uid:
            raise EnclaveError(f"privilege drop to {run_as} did not take effect")
        kept = _keep_only_ipc_lock(libc)
        libc.prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0)
        if not kept and state.memory_locked:
            # without CAP_IPC_LOCK, locked future allocations count against RLIMIT_MEMLOCK and fail
            libc.munlockall()
            state.memory_locked = False
            state.notes.append("memory unlocked after the drop: CAP_IPC_LOCK could not be kept")
    state.dumpable = _set_not_dumpable(libc)
    state.user = pwd.getpwuid(os.geteuid()).pw_name
    if state.dumpable:
        state.notes.append("process is still dumpable: prctl(PR_SET_DUMPABLE) failed")
    log.info("hardening user=%s dumpable=%s core_files=%s memory_locked=%s%s", state.user, state.dumpable,
             state.core_files, state.memory_locked, "".join(f" note={n!r}" for n in state.notes))
    return state


def socket_group(name: str) -> int:
    """gid of the group allowed to connect to the enclave's socket (the node's group)."""
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        raise EnclaveError(f"unknown group {name!r} for the enclave socket; create it or give another") from None
