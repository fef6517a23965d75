"""Protocol constants shared by every party (docs/PROTOCOL.md), free of chain libraries."""

from __future__ import annotations

from enum import IntEnum

from .crypto import keccak256

#: Roles of the contracts' access control (contracts/src/lib/RequestBinding.sol, ModelRegistry).
NODE_ROLE = keccak256(b"splitseal.role.node")
ATTESTATION_ADMIN_ROLE = keccak256(b"splitseal.role.attestation-admin")
DEFAULT_ADMIN_ROLE = bytes(32)

#: Bounds of the contracts (BackboneExecution): results per ``deliverResults`` batch, and the gas
#: a consumer's callback may ask for.
MAX_DELIVERY_BATCH = 64
MIN_CALLBACK_GAS = 5_000
MAX_CALLBACK_GAS = 1_000_000

#: When the enclave's answer journal reaches the disk (``--answer-durability``, ``[enclave]
#: answer_durability``; enclave/journal.py): before the answer leaves, right after, or by the OS.
ANSWER_DURABILITY = ("fsync", "background", "write")


class RequestStatus(IntEnum):
    """``BackboneExecution`` request status, as the contract numbers it."""

    NONE = 0
    REQUESTED = 1
    TRANSFERRED = 2
    COMPLETED = 3
    FAILED = 4
    TIMED_OUT = 5

    @property
    def ended(self) -> bool:
        return self in (RequestStatus.COMPLETED, RequestStatus.FAILED, RequestStatus.TIMED_OUT)


class FailureCode(IntEnum):
    """Reason codes of ``EnclaveTransfer.reportFailure``."""

    BAD_INPUT = 1
    SHAPE_MISMATCH = 2
    INPUT_HASH_MISMATCH = 3
    INPUT_UNAVAILABLE = 4
    ENCLAVE_REFUSED = 5
    DEADLINE_PASSED = 6
    INTERNAL = 7
