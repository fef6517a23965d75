"""Contract calldata and event logs encoded and decoded with eth_abi directly, from tables built
once per ABI.

Hand-written for performance, on the node's and the requester's critical path: web3's
``decode_function_input`` hashes every function signature of the ABI on each call (~40
keccaks for BackboneExecution), ``build_transaction`` runs its recursive ABI normalisers over
every argument, and ``process_log`` rebuilds the event's types on each log (0.4 ms a log); a
millisecond or so per call, several times per request, and each of n nodes decodes every log.
Here each function's selector, argument types and names are computed once per ABI; encoding is
``selector + eth_abi.encode(types, args)``, decoding the reverse, with addresses in checksum
form and structs as tuples, as web3 gives them (tests/unit/test_chain_codec.py checks them
against web3 for the contracts' functions and events).

Calldata whose arguments are words, static structs of words, ``bytes`` and ``string`` (the
request and the delivery, which the node and the requester read on every request) is decoded
by :class:`_WordDecoder`, by hand: eth_abi's decoder (streams, a decoder object per value, its
checks) took 191 us for a delivery's calldata and 46 us for a request's, against 27 and 13 us
here (interleaved loops, load 2.9; eth_abi 0.6-1.1 ms for the delivery while tests ran). It
decodes only what it finds well formed, and leaves everything else (padding that is not zero, a
pointer out of place, other types) to eth_abi, which then decodes or refuses it as before.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_utils import function_signature_to_4byte_selector, keccak, to_checksum_address
from web3.datastructures import AttributeDict

from .revert import _abi_type


class _NotPlain(Exception):
    """Calldata :class:`_WordDecoder` leaves to eth_abi."""


class _WordDecoder:
    """Decodes a function's arguments when each is a word type (``uintN``, ``bool``,
    ``address``, ``bytesN``), a struct of those, ``bytes`` or ``string``, exactly as eth_abi
    would (ints, bools, lower-case hex addresses, bytes, str; structs as tuples) and only when
    every word is canonical (zero padding, pointers in order and in range); else
    :class:`_NotPlain`. :meth:`of` returns None for argument types it does not take."""

    def __init__(self, readers: list[tuple[str, Any]]) -> None:
        self._readers = readers  # per argument: ("word", reader) | ("tuple", [readers]) | ("bytes"/"string", None)

    @classmethod
    def of(cls, types: Sequence[str]) -> "_WordDecoder | None":
        readers: list[tuple[str, Any]] = []
        for t in types:
            if t in ("bytes", "string"):
                readers.append((t, None))
            elif t.startswith("(") and t.endswith(")"):
                inner = [_word_reader(x) for x in _split_tuple(t[1:-1])]
                if not inner or any(r is None for r in inner):
                    return None
                readers.append(("tuple", inner))
            else:
                reader = _word_reader(t)
                if reader is None:
                    return None
                readers.append(("word", reader))
        return cls(readers)

    def decode(self, data: bytes) -> tuple[Any, ...]:
        out: list[Any] = []
        at = 0  # the head's position
        tail = sum(32 * (len(r) if kind == "tuple" else 1) for kind, r in self._readers)  # where the tails start
        for kind, reader in self._readers:
            if kind == "word":
                out.append(reader(data[at:at + 32]))
                at += 32
            elif kind == "tuple":
                out.append(tuple(read(data[at + 32 * i:at + 32 * i + 32]) for i, read in enumerate(reader)))
                at += 32 * len(reader)
            else:
                offset = _uint(data[at:at + 32], 256)
                at += 32
                if offset != tail or offset + 32 > len(data):  # tails in order, each where the last ended
                    raise _NotPlain
                length = _uint(data[offset:offset + 32], 256)
                end = offset + 32 + length
                padded = offset + 32 + -(-length // 32) * 32
                if padded > len(data) or any(data[end:padded]):
                    raise _NotPlain
                value = bytes(data[offset + 32:end])
                out.append(value if kind == "bytes" else _utf8(value))
                tail = padded
        if len(data) != tail:  # short, or more than the arguments: eth_abi decides
            raise _NotPlain
        return tuple(out)


def _split_tuple(inner: str) -> list[str]:
    """The member types of a struct's type string (no nesting: a nested struct is not plain)."""
    return [] if "(" in inner or ")" in inner or not inner else inner.split(",")


def _uint(word: bytes, bits: int) -> int:
    if len(word) != 32:
        raise _NotPlain
    value = int.from_bytes(word, "big")
    if value >> bits:
        raise _NotPlain
    return value


def _utf8(value: bytes) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise _NotPlain from None


def _word_reader(abi_type: str) -> Callable[[bytes], Any] | None:
    if abi_type.startswith("uint") and abi_type[4:].isdigit():
        bits = int(abi_type[4:])
        return lambda word: _uint(word, bits)
    if abi_type == "bool":
        def read_bool(word: bytes) -> bool:
            value = _uint(word, 1)
            return value == 1
        return read_bool
    if abi_type == "address":
        return lambda word: "0x" + _uint(word, 160).to_bytes(20, "big").hex()
    if abi_type.startswith("bytes") and abi_type[5:].isdigit() and 1 <= int(abi_type[5:]) <= 32:
        size = int(abi_type[5:])

        def read_fixed(word: bytes) -> bytes:
            if len(word) != 32 or any(word[size:]):
                raise _NotPlain
            return bytes(word[:size])
        return read_fixed
    return None


@dataclass(frozen=True)
class _Function:
    name: str
    selector: bytes
    types: tuple[str, ...]
    inputs: tuple[dict[str, Any], ...]
    plain: "_WordDecoder | None" = None


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
            fn = _Function(item["name"], selector, types, tuple(item.get("inputs", [])), _WordDecoder.of(types))
            self._by_selector[selector] = fn
            self._by_name.setdefault(item["name"], fn)

    def decode(self, data: bytes) -> tuple[str, dict[str, Any]]:
        """``(function name, {argument name: value})`` of calldata; ValueError when the selector
        is not one of the ABI's functions or the arguments do not decode."""
        fn = self._by_selector.get(bytes(data[:4]))
        if fn is None:
            raise ValueError(f"selector 0x{bytes(data[:4]).hex()} is not a function of this ABI")
        try:
            values = fn.plain.decode(bytes(data[4:])) if fn.plain is not None else None
        except _NotPlain:
            values = None
        try:
            if values is None:
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


def _hex(topic: Any) -> str:
    return (topic if isinstance(topic, str) else "0x" + bytes(topic).hex()).lower()


def _checksum(item: dict[str, Any], value: Any) -> Any:
    """Addresses (also inside structs and arrays) in checksum form, as web3 decodes them."""
    kind = item["type"]
    if kind.endswith("]"):
        inner = {**item, "type": kind[:kind.rindex("[")]}
        return tuple(_checksum(inner, v) for v in value)
    if kind == "tuple":
        return tuple(_checksum(c, v) for c, v in zip(item["components"], value))
    if kind == "address":
        return checksum_address(value)
    return value


@functools.lru_cache(maxsize=4096)
def checksum_address(address: str) -> str:
    """Checksum form (a keccak each; the same few addresses recur in every log)."""
    return to_checksum_address(address)


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


class EventCodec:
    """Decodes the logs of one event as web3's ``process_log`` does (the same ``EventData``:
    indexed arguments first, then the data's, addresses checksummed, an indexed string or
    bytes as its hash), with the types computed once; events with struct or array arguments
    are left to web3 (:func:`event_decoder`)."""

    def __init__(self, item: dict[str, Any]) -> None:
        self.name = item["name"]
        inputs = item.get("inputs", [])
        self.topic = "0x" + keccak(text=f"{self.name}({','.join(_abi_type(i) for i in inputs)})").hex()
        self._indexed = [(i["name"], "bytes32" if i["type"] in ("string", "bytes") else i["type"], i)
                         for i in inputs if i.get("indexed")]
        self._data = [i for i in inputs if not i.get("indexed")]
        self._data_types = [i["type"] for i in self._data]

    @staticmethod
    def handles(item: dict[str, Any]) -> bool:
        return not item.get("anonymous") and all(
            not i["type"].startswith("tuple") and not i["type"].endswith("]") for i in item.get("inputs", []))

    def decode(self, raw: Any) -> Any:
        topics = raw["topics"]
        if not topics or _hex(topics[0]) != self.topic:
            raise ValueError(f"log is not a {self.name} event")
        if len(topics) - 1 != len(self._indexed):
            raise ValueError(f"{self.name}: expected {len(self._indexed)} indexed topics, got {len(topics) - 1}")
        args: dict[str, Any] = {}
        for (name, kind, item), topic in zip(self._indexed, topics[1:]):
            word = bytes(topic) if not isinstance(topic, str) else bytes.fromhex(topic[2:])
            if kind == "uint256":
                args[name] = int.from_bytes(word, "big")
            elif kind == "bytes32":
                args[name] = word
            elif kind == "address" and len(word) == 32 and not any(word[:12]):
                args[name] = checksum_address("0x" + word[12:].hex())
            else:
                args[name] = _checksum({**item, "type": kind}, abi_decode([kind], word)[0])
        data = raw["data"]
        data = bytes.fromhex(data[2:]) if isinstance(data, str) else bytes(data)
        for item, value in zip(self._data, abi_decode(self._data_types, data)):
            args[item["name"]] = _checksum(item, value)
        event = {"args": args, "event": self.name, "logIndex": raw["logIndex"],
                 "transactionIndex": raw["transactionIndex"], "transactionHash": raw["transactionHash"],
                 "address": raw["address"], "blockHash": raw["blockHash"], "blockNumber": raw["blockNumber"]}
        return AttributeDict.recursive(event) if isinstance(raw, AttributeDict) else event


_events: dict[tuple[str, int, str], tuple[Any, Any]] = {}


def event_decoder(contract: Any, event: str) -> Callable[[Any], Any]:
    """``decode(raw log) -> EventData`` of ``contract``'s ``event``, as ``process_log`` returns
    it; built once per (address, ABI, event)."""
    key = (str(contract.address).lower(), id(contract.abi), event)
    with _codecs_lock:
        found = _events.get(key)
    if found is None:
        item = next((i for i in contract.abi if i.get("type") == "event" and i.get("name") == event), None)
        if item is not None and EventCodec.handles(item):
            decode = EventCodec(item).decode
        else:
            decode = getattr(contract.events, event)().process_log
        with _codecs_lock:
            if len(_events) >= 1024:
                _events.clear()
            found = _events[key] = (contract.abi, decode)
    return found[1]
