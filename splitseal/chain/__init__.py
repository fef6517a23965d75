"""The chain client: one interface (:class:`Chain`) over the embedded chain (eth-tester, in this
process) and JSON-RPC nodes (anvil, any http(s) URL); :func:`connect` picks the backend.

Names load on first use, so that importing ``splitseal.chain.artifacts`` (the compiler, the
artifact checks) does not load web3.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Chain": "client", "Subscription": "client", "connect": "client", "dev_accounts": "client",
    "DEV_ACCOUNTS": "client", "DEV_MNEMONIC": "client", "DEFAULT_TX_GAS": "client", "DEPLOY_GAS": "client",
    "ZERO_ADDRESS": "deployment",
    "PendingTx": "sender", "TransactionSender": "sender", "ContractCall": "sender",
    "ErrorDecoder": "revert", "DecodedError": "revert",
    "EmbeddedChain": "embedded", "RpcChain": "rpc", "PushWakeup": "rpc",
    "LogDecoder": "logs", "logs_with_first_topic": "logs", "logs_with_topic0": "logs", "hex_topic": "logs",
    "event_topic": "logs", "event_decoder": "codec", "FunctionCodec": "codec", "codec_of": "codec",
    "Deployment": "deployment", "load_deployment": "deployment", "deployment_path": "deployment",
    "discover_deployment": "deployment", "runtime_code_matches": "deployment",
    "AnvilNode": "anvil", "running_node": "anvil", "state_file": "anvil", "anvil_binary": "anvil",
    "free_port": "anvil",
    "CalldataNotFound": "calldata", "checked_read": "calldata", "DeliveredResult": "calldata", "request_inline_input": "calldata",
    "delivered_result": "calldata", "last_delivered_sequence": "calldata", "PrefetchedCall": "calldata",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
