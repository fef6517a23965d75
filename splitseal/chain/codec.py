"""Contract calldata encoded and decoded with eth_abi directly, from a table built once per ABI.

Hand-written for performance, on the node's and the requester's critical path: web3's
``decode_function_input`` hashes every function signature of the ABI on each call (~40
keccaks for BackboneExecution) and ``build_transaction`` runs its recursive ABI normalisers over
every argument; together about a millisecond per call of each, several times per request.
Here each function's selector, argument types and names are computed once per ABI; encoding is
``selector + eth_abi.encode(types, args)``, decoding the reverse, with addresses in checksum
form and structs as tuples, as web3 gives them (tests/unit/test_chain_codec.py checks both
against web3 for the contracts' functions).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Sequence

from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_utils import function_signature_to_4byte_selector, to_checksum_address

from .revert import _abi_type


@dataclass(frozen=True)
class _Function:
    name: str
    selector: bytes
    types: tuple[str, ...]
    inputs: tuple[dict[str, Any], ...]


class FunctionCodec:
    """The functions of one ABI by selector and by name (overloads: the first by name)."""

    def __init__(self, abi: Sequence[dict[str, Any]]) -> None:
        self._by_selector: dict[bytes, _Function] = {}
        self._by_name: dict[str, _Function] = {}
        for item in abi:
            if item.get("type") != "function":
                continue
            types = tuple(_abi_type(i) for i in item.get("inputs", []))
            selector = function_signature_to_4byte_selector(f"{item['name']}({','.join(types)})")
            fn = _Function(item["name"], selector, types, tuple(item.get("inputs", [])))
            self._by_selector[selector] = fn
            self._by_name.setdefault(item["name"], fn)

    def decode(self, data: bytes) -> tuple[str, dict[str, Any]]:
        """``(function name, {argument name: value})`` of calldata; ValueError when the selector
        is not one of the ABI's functions or the arguments do not decode."""
        fn = self._by_selector.get(bytes(data[:4]))
        if fn is None:
            raise ValueError(f"selector 0x{bytes(data[:4]).hex()} is not a function of this ABI")
        try:
            values = abi_decode(list(fn.types), bytes(data[4:]))
        except Exception as exc:  # noqa: BLE001 - eth_abi's decoding errors
            raise ValueError(f"{fn.name}: arguments do not decode: {exc}") from None
        return fn.name, {i["name"]: _checksum(i, v) for i, v in zip(fn.inputs, values)}

    def encode(self, name: str, args: Sequence[Any]) -> bytes:
        """Calldata of ``name(*args)``; raises what eth_abi raises for arguments of the wrong
        form (the caller falls back to web3)."""
        fn = self._by_name[name]
        if len(args) != len(fn.types):
            raise TypeError(f"{name} takes {len(fn.types)} arguments, got {len(args)}")
        return fn.selector + abi_encode(list(fn.types), list(args))

    def overloaded(self, name: str) -> bool:
        return sum(1 for f in self._by_selector.values() if f.name == name) > 1


def _checksum(item: dict[str, Any], value: Any) -> Any:
    """Addresses (also inside structs and arrays) in checksum form, as web3 decodes them."""
    kind = item["type"]
    if kind.endswith("]"):
        inner = {**item, "type": kind[:kind.rindex("[")]}
        return tuple(_checksum(inner, v) for v in value)
    if kind == "tuple":
        return tuple(_checksum(c, v) for c, v in zip(item["components"], value))
    if kind == "address":
        return to_checksum_address(value)
    return value


_codecs: dict[tuple[str, int], tuple[Sequence[dict[str, Any]], FunctionCodec]] = {}
_codecs_lock = threading.Lock()


def codec_of(address: str, abi: Sequence[dict[str, Any]]) -> FunctionCodec:
    """The codec of a contract's ABI, built once (keyed by address and ABI object, which the
    cache keeps alive, so a key is never reused for another ABI)."""
    key = (str(address).lower(), id(abi))
    with _codecs_lock:
        found = _codecs.get(key)
        if found is None:
            if len(_codecs) >= 256:
                _codecs.clear()
            found = _codecs[key] = (abi, FunctionCodec(abi))
    return found[1]
