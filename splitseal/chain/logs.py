"""Fetch the logs of several contracts that share an indexed first argument in one request.

Every event of a request's lifecycle has ``requestId`` as its first indexed argument, and every
event of a model's history has ``modelId`` (or ``enclave``) there. One ``eth_getLogs`` with
``topics = [None, value]`` over the contracts' addresses therefore returns a whole history,
which is then decoded against each contract's ABI: one round trip instead of one per event.
Both queries go through :meth:`Chain.logs` (clamped to the head, chunked, errors as ChainError).
"""

from __future__ import annotations

from typing import Any, Iterable

from eth_utils import event_abi_to_log_topic
from web3.contract import Contract

from .client import Chain
from .codec import event_decoder


class LogDecoder:
    """Decodes raw logs of known contracts by (address, topic0)."""

    def __init__(self, contracts: Iterable[tuple[str, Contract]]) -> None:
        self._events: dict[tuple[str, bytes], tuple[str, Any]] = {}
        self.addresses: list[str] = []
        for name, contract in contracts:
            self.addresses.append(contract.address)
            for item in contract.abi:
                if item.get("type") == "event":
                    self._events[(contract.address.lower(), event_abi_to_log_topic(item))] = \
                        (name, item["name"], event_decoder(contract, item["name"]))

    def topics(self, event_names: Iterable[str]) -> list[str]:
        """topic0 of the named events of the decoder's contracts."""
        names = set(event_names)
        return sorted({"0x" + topic.hex() for (_, topic), (_, event, _) in self._events.items() if event in names})

    def decode(self, raw: Any) -> tuple[str, Any] | None:
        """``(contract name, decoded log)`` or None for a log of an unknown event."""
        topics = raw["topics"]
        if not topics:
            return None
        found = self._events.get((str(raw["address"]).lower(), bytes(topics[0])))
        if found is None:
            return None
        name, _, decode = found
        return name, decode(raw)


def logs_with_first_topic(chain: Chain, decoder: LogDecoder, value: bytes | int | str, from_block: int,
                          to_block: int | None = None) -> list[tuple[str, Any]]:
    """Decoded logs of the decoder's contracts whose first indexed argument equals ``value``,
    oldest first."""
    raw = chain.logs(decoder.addresses, [None, "0x" + _word(value).hex()], from_block, to_block)
    out = [d for d in (decoder.decode(entry) for entry in raw) if d is not None]
    out.sort(key=lambda item: (item[1]["blockNumber"], item[1]["logIndex"]))
    return out


def logs_with_topic0(chain: Chain, decoder: LogDecoder, event_names: Iterable[str], from_block: int,
                     to_block: int | None = None) -> list[tuple[str, Any]]:
    """Decoded logs of the named events of the decoder's contracts in a block range."""
    raw = chain.logs(decoder.addresses, [decoder.topics(event_names)], from_block, to_block)
    return [d for d in (decoder.decode(entry) for entry in raw) if d is not None]


def _word(value: bytes | int | str) -> bytes:
    if isinstance(value, int):
        return value.to_bytes(32, "big")
    if isinstance(value, str):  # an address
        return bytes(12) + bytes.fromhex(value[2:] if value.startswith("0x") else value)
    value = bytes(value)
    return value if len(value) == 32 else bytes(32 - len(value)) + value


def hex_topic(topic: bytes | str) -> str:
    """A log topic as lower-case 0x hex: web3 hands over bytes, a WebSocket push text."""
    return (topic if isinstance(topic, str) else "0x" + bytes(topic).hex()).lower()


def event_topic(contract: Contract, event: str) -> str:
    """topic0 of ``event`` of ``contract``, as :func:`hex_topic` writes it."""
    return hex_topic(getattr(contract.events, event)().topic)
