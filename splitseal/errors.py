"""The one exception hierarchy of splitseal.

Shallow, by layer. Messages are built from typed fields and are meant for a person: they say
what was wrong and what to do. They never contain share values, feature vectors, keys,
parameters or plaintext predictions.
"""

from __future__ import annotations

from typing import Any


class SplitsealError(Exception):
    """Root of every error splitseal raises on purpose."""


# --- configuration and input -------------------------------------------------------------

class ConfigError(SplitsealError):
    """A configuration file, environment variable or command-line option is invalid."""


class InvalidInputError(SplitsealError, ValueError):
    """Input supplied by a user or a requester is malformed or out of range."""


# --- chain -------------------------------------------------------------------------------

class ChainError(SplitsealError):
    """The chain could not be reached or did not do what was asked."""


class ContractRevertError(ChainError):
    """A contract call reverted; carries the decoded custom error and its arguments."""

    def __init__(self, error_name: str, args: dict[str, Any] | None = None, *, contract: str = "",
                 function: str = "", raw: bytes = b"") -> None:
        self.error_name = error_name
        self.error_args = dict(args or {})
        self.contract = contract
        self.function = function
        self.raw = raw
        where = f"{contract}.{function}: " if contract else ""
        rendered = ", ".join(f"{k}={_render(v)}" for k, v in self.error_args.items())
        super().__init__(f"{where}reverted with {error_name}({rendered})")


class DeploymentError(ChainError):
    """Contracts are missing, stale or inconsistent on the selected chain."""


class CompilationError(ChainError):
    """The Solidity compiler failed or produced something unexpected."""


# --- models ------------------------------------------------------------------------------

class ModelError(SplitsealError):
    """A model file, graph or training run is invalid."""


class UnsupportedOperatorError(ModelError):
    """A graph uses an operator, attribute or opset outside the documented set."""


class ProtectionRuleError(ModelError):
    """A protection rule is invalid or cannot be satisfied by the model."""


class PackageFormatError(ModelError):
    """A head package or parameter index is corrupt, truncated or of an unknown version."""


# --- enclave -----------------------------------------------------------------------------

class EnclaveError(SplitsealError):
    """The enclave refused a call or could not be reached."""


class AttestationError(EnclaveError):
    """A quote or report does not verify."""


class SealingError(EnclaveError):
    """Sealed state cannot be opened: wrong measurement, tampered, or rolled back."""


# --- protocols ---------------------------------------------------------------------------

class ProtocolError(SplitsealError):
    """A peer broke a wire or MPC protocol, or disappeared mid-session."""


def _render(value: Any) -> str:
    if isinstance(value, (bytes, bytearray)):
        return "0x" + bytes(value).hex()
    return repr(value) if isinstance(value, str) else str(value)
