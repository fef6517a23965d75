"""Revert data into the custom error that caused it.

Reverts are decoded from the ABIs of every committed artifact into the custom error's name and
arguments (:class:`ContractRevertError`); selectors are never hard-coded. The raw revert bytes
come from each backend structurally (a node's JSON-RPC ``error.data``, eth-tester's exception
cause); nothing here parses exception text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from eth_abi import decode as abi_decode
from eth_utils import function_signature_to_4byte_selector, to_checksum_address
from web3.exceptions import ContractLogicError

from splitseal.errors import ContractRevertError

ERROR_STRING = bytes.fromhex("08c379a0")  # Error(string)
PANIC = bytes.fromhex("4e487b71")  # Panic(uint256)


@dataclass(frozen=True)
class DecodedError:
    name: str
    args: dict[str, Any]


class ErrorDecoder:
    """Maps 4-byte selectors of every custom error in the known ABIs to their definitions."""

    def __init__(self, abis: Iterable[Sequence[dict[str, Any]]]) -> None:
        self._errors: dict[bytes, dict[str, Any]] = {}
        for abi in abis:
            self.add(abi)

    def add(self, abi: Sequence[dict[str, Any]]) -> None:
        for item in abi:
            if item.get("type") != "error":
                continue
            types = ",".join(_abi_type(i) for i in item["inputs"])
            self._errors[function_signature_to_4byte_selector(f"{item['name']}({types})")] = item

    def decode(self, data: bytes) -> DecodedError:
        if len(data) < 4:
            return DecodedError("EmptyRevert", {})
        selector, body = data[:4], data[4:]
        if selector == ERROR_STRING:
            return DecodedError("Error", {"message": abi_decode(["string"], body)[0]})
        if selector == PANIC:
            return DecodedError("Panic", {"code": abi_decode(["uint256"], body)[0]})
        item = self._errors.get(selector)
        if item is None:
            return DecodedError("UnknownError", {"selector": selector, "data": body})
        values = abi_decode([_abi_type(i) for i in item["inputs"]], body)
        return DecodedError(item["name"], {
            i["name"]: to_checksum_address(v) if i["type"] == "address" else v
            for i, v in zip(item["inputs"], values)})

    def error(self, data: bytes, label: str) -> ContractRevertError:
        """The :class:`ContractRevertError` for revert ``data`` of the function ``label``."""
        decoded = self.decode(data)
        return ContractRevertError(decoded.name, decoded.args, function=label, raw=data)


def _abi_type(item: dict[str, Any]) -> str:
    if item["type"].startswith("tuple"):
        inner = ",".join(_abi_type(c) for c in item["components"])
        return f"({inner}){item['type'][5:]}"
    return item["type"]


def node_revert_data(exc: BaseException) -> bytes | None:
    """Revert data of a JSON-RPC node's refusal (web3's :class:`ContractLogicError`, whose
    ``data`` is the node's ``error.data``); None for any other failure."""
    if not isinstance(exc, ContractLogicError):
        return None
    data = exc.data
    if isinstance(data, str) and data.startswith("0x"):
        return bytes.fromhex(data[2:])
    if isinstance(data, (bytes, bytearray)):
        return bytes(data)
    return b""
