"""One chain interface over web3 v8 for the embedded chain, anvil and any JSON-RPC URL.

:class:`Chain` holds what every backend shares: accounts, contracts, sending (through the
:class:`~.sender.TransactionSender`), calls with decoded reverts, reads (blocks, receipts, code,
transactions) and the one chunked ``eth_getLogs``. The backends differ in how a request reaches
the chain and what the chain offers besides:

- :class:`~.embedded.EmbeddedChain`: eth-tester and py-evm inside this process; every request
  under one lock, logs pushed in-process after each send, cheats through eth-tester.
- :class:`~.rpc.RpcChain`: anvil or any http(s) node; receipts in the send's round trip where the
  node answers ``eth_sendRawTransactionSync``, logs pushed over WebSocket where it offers them.

Callers never ask which backend they have: what differs is stated as a capability (:attr:`url`,
:meth:`subscribe`, :meth:`wait_for_block`) or implemented by both (the test cheats).
"""

from __future__ import annotations

import contextlib
import logging
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Callable, ContextManager, Iterable, Sequence

from eth_abi import encode as abi_encode
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import event_abi_to_log_topic, keccak, to_checksum_address
from web3 import Web3
from web3.contract import Contract
from web3.contract.contract import ContractFunction
from web3.types import TxReceipt

from splitseal.config import ChainConfig
from splitseal.errors import ChainError, ConfigError, ContractRevertError

from .artifacts import all_artifacts, load_artifact
from .codec import event_decoder
from .revert import ErrorDecoder
from .sender import PendingTx, TransactionSender

log = logging.getLogger(__name__)

#: The well-known development mnemonic: anvil funds these accounts, and so does the embedded
#: chain, so that keys and addresses are the same on both.
DEV_MNEMONIC = "test test test test test test test test test test test junk"
DEV_ACCOUNTS = 10
DEFAULT_TX_GAS = 3_000_000
DEPLOY_GAS = 8_000_000
ZERO_ADDRESS = "0x" + "00" * 20

Account.enable_unaudited_hdwallet_features()


def dev_accounts(count: int = DEV_ACCOUNTS) -> list[LocalAccount]:
    """The funded development accounts (same on the embedded chain and anvil)."""
    return [Account.from_mnemonic(DEV_MNEMONIC, account_path=f"m/44'/60'/0'/0/{i}") for i in range(count)]


class Subscription:
    """A push subscription to logs (what :meth:`Chain.subscribe` returns): ``event`` is set on
    every pushed log (unless ``on_log`` returned False for it), ``connected`` once logs flow,
    ``stop()`` ends it. Pushed logs reach ``on_log`` in web3's form (checksum address,
    ``HexBytes`` topics, int block numbers)."""

    event: Any
    connected: Any

    def stop(self) -> None:  # pragma: no cover - interface
        raise NotImplementedError


class Chain(ABC):
    """A connection to one chain, with funded accounts, local signing and decoded reverts."""

    def __init__(self, w3: Web3, *, name: str, accounts: Sequence[LocalAccount],
                 config: ChainConfig | None = None, on_close: Callable[[], None] | None = None) -> None:
        # Every transaction carries chainId, gas and fees we set, and no ENS names: web3's validation,
        # ENS and gas middlewares would only add round trips (eth_chainId, eth_getBlock) per call.
        for middleware in ("validation", "ens_name_to_address", "gas_price_strategy", "gas_estimate"):
            try:
                w3.middleware_onion.remove(middleware)
            except ValueError:
                pass
        self._w3 = w3
        self.name = name
        self.config = config or ChainConfig()
        self.accounts = list(accounts)
        self.chain_id: int = w3.eth.chain_id
        self.errors = ErrorDecoder(a["abi"] for a in all_artifacts().values())
        self._sender = TransactionSender(self)
        self._on_close = on_close

    # --- what differs between backends -------------------------------------------------------

    @property
    @abstractmethod
    def url(self) -> str | None:
        """The JSON-RPC URL other processes (CLI commands, nodes) reach this chain at; None for a
        chain that lives inside this process."""

    def _guard(self) -> ContextManager[Any]:
        """Held around every request: a real node takes concurrent requests."""
        return contextlib.nullcontext()

    @abstractmethod
    def _send_raw(self, raw: bytes) -> tuple[bytes, Any]:
        """Send a signed transaction: its hash and, where the backend has it at once, its receipt."""

    @abstractmethod
    def _wait_receipt(self, tx_hash: bytes, label: str) -> TxReceipt:
        """The receipt of a sent transaction, waiting for it to be mined."""

    @abstractmethod
    def _revert_data(self, exc: BaseException) -> bytes | None:
        """Revert data carried by a failed send, call or replay; None when ``exc`` is no revert."""

    @abstractmethod
    def _replay(self, tx: dict[str, Any], block: int | str) -> bytes | None:
        """Run ``tx`` as a call at ``block``: its revert data, or None when it succeeds. Other
        failures raise."""

    @abstractmethod
    def wait_for_block(self, after: int, timeout: float) -> int:
        """Wait until the head is past ``after`` (or ``timeout`` passes); returns the head."""

    @abstractmethod
    def subscribe(self, addresses: str | Sequence[str], *, on_log: Callable[[Any], None] | None = None,
                  topic0: str | Sequence[str] | None = None) -> Subscription | None:
        """Push the logs of ``addresses`` (and ``topic0``, or any of several) as they are mined; None where the chain
        pushes nothing (poll instead)."""

    def pending_calls(self, addresses: str | Sequence[str]) -> Any:
        """The calldata of pending transactions to ``addresses`` as the node pushes them, kept by
        hash (:class:`splitseal.chain.rpc.PendingCalls`: ``take(tx_hash)``, ``stop()``), for
        readers that would fetch a transaction's calldata once its log arrives; None where the
        chain pushes no pending transactions (read them by hash)."""
        return None

    def wake_waiters(self) -> None:
        """Release every :meth:`wait_for_block` now (a service that is stopping)."""

    # test cheats (dev chains only)

    @abstractmethod
    def snapshot(self) -> Any:
        """Remember the chain state; :meth:`revert` returns to it."""

    @abstractmethod
    def revert(self, snapshot_id: Any) -> None:
        """Return to a :meth:`snapshot` (nonces are read again afterwards)."""

    @abstractmethod
    def increase_time(self, seconds: int) -> None:
        """Move the chain clock forward and mine a block at the new time."""

    @abstractmethod
    def mine(self, blocks: int = 1) -> None:
        """Mine ``blocks`` empty blocks."""

    @abstractmethod
    def set_next_block_timestamp(self, timestamp: int) -> None:
        """Stamp the next block with ``timestamp`` (not earlier than the head's)."""

    # --- accounts and lifecycle ------------------------------------------------------------

    def account(self, role: int) -> LocalAccount:
        """The account for role ``role`` (0 admin, 1 model owner, 2 node, 3 requester, ...): the
        development accounts on dev chains; on a chain reached with one configured key, that key
        plays every role."""
        return self.accounts[role] if role < len(self.accounts) else self.accounts[0]

    def close(self) -> None:
        if self._on_close:
            self._on_close()
            self._on_close = None

    def __enter__(self) -> "Chain":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- contracts and transactions ----------------------------------------------------------

    def contract(self, name: str, address: str) -> Contract:
        """A handle on a deployed contract by artifact name."""
        return self._w3.eth.contract(address=to_checksum_address(address), abi=load_artifact(name)["abi"])

    def deploy(self, name: str, *args: Any, sender: LocalAccount, gas: int = DEPLOY_GAS) -> Contract:
        """Deploy the committed artifact ``name`` with constructor ``args``."""
        return self.deploy_with_receipt(name, *args, sender=sender, gas=gas)[0]

    def deploy_with_receipt(self, name: str, *args: Any, sender: LocalAccount,
                            gas: int = DEPLOY_GAS) -> tuple[Contract, TxReceipt]:
        artifact = load_artifact(name)
        factory = self._w3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"])
        pending = self._sender.submit(factory.constructor(*args), sender, gas, value=0,
                                      label=f"{name}.constructor")
        receipt = self._sender.confirm(pending)
        return self.contract(name, receipt["contractAddress"]), receipt

    def transact(self, fn: ContractFunction, *, sender: LocalAccount, gas: int | None = None,
                 value: int = 0) -> TxReceipt:
        """Sign and send ``fn`` from ``sender``; wait for and return the receipt.

        Raises :class:`ContractRevertError` with the decoded custom error when it reverts.
        """
        return self.confirm(self.send(fn, sender=sender, gas=gas, value=value))

    def send(self, fn: ContractFunction, *, sender: LocalAccount, gas: int | None = None,
             value: int = 0) -> PendingTx:
        """Sign and send without waiting: several transactions of one account can be in flight
        (nonces are handed out in order); :meth:`confirm` waits for each."""
        return self._sender.submit(fn, sender, gas or DEFAULT_TX_GAS, value=value, label=fn.fn_name)

    def confirm(self, pending: PendingTx) -> TxReceipt:
        """Wait for a sent transaction; raises :class:`ContractRevertError` when it reverted."""
        return self._sender.confirm(pending)

    def estimate_gas(self, fn: ContractFunction, *, sender: str, block: int | str = "latest") -> int:
        """Gas ``fn`` would use if sent now by ``sender``; a revert raises the decoded
        :class:`ContractRevertError` (without spending anything)."""
        tx = _call_tx(fn, sender)
        tx.pop("gas", None)
        try:
            with self._guard():
                return int(self._w3.eth.estimate_gas(tx, block))
        except ChainError:
            raise
        except Exception as exc:  # noqa: BLE001 - web3, transport and backend errors
            # nodes answer eth_estimateGas for a revert with a bare message more often than with data
            error = self._failure(exc, fn, sender, block, "estimating its gas failed",
                                  replay_on_message="revert" in str(exc).lower())
            raise error from (None if isinstance(error, ContractRevertError) else exc)

    def call(self, fn: ContractFunction, *, sender: str | None = None, block: int | str = "latest") -> Any:
        """Call a view (or simulate a transaction); reverts are decoded."""
        params = {"from": sender} if sender else {}
        try:
            with self._guard():
                return fn.call(params, block_identifier=block)
        except ChainError:
            raise
        except Exception as exc:  # noqa: BLE001 - web3, transport and backend errors
            error = self._failure(exc, fn, sender, block, "the call failed")
            raise error from (None if isinstance(error, ContractRevertError) else exc)

    def _failure(self, exc: Exception, fn: ContractFunction, sender: str | None, block: int | str, what: str, *,
                 replay_on_message: bool = False) -> ChainError:
        """The error a failed call or estimate raises: the decoded revert (replaying the call when
        the failure says it reverted without the data), else a :class:`ChainError` saying ``what``."""
        data = self._revert_data(exc)
        if data is None and (self._reverted(exc) or replay_on_message):
            data = self._replay(_call_tx(fn, sender), block)
        if data is None:
            return ChainError(f"{fn.fn_name}: {what}: {exc}")
        return self.errors.error(data, fn.fn_name)

    def _reverted(self, exc: BaseException) -> bool:
        """``exc`` says the call reverted, without its data (replay to learn it)."""
        return False

    def events(self, receipt: TxReceipt, contract: Contract, event: str) -> list[Any]:
        """The ``event`` logs in ``receipt`` decoded with ``contract``'s ABI (args only; as web3's
        ``process_receipt`` with DISCARD: logs of other events, or that do not decode, are left out)."""
        decode = event_decoder(contract, event)
        out = []
        for raw in receipt["logs"]:
            try:
                out.append(decode(raw)["args"])
            except Exception:  # noqa: BLE001 - another event's log (web3's MismatchedABI, or ours)
                continue
        return out

    # --- reads -------------------------------------------------------------------------------

    def block_number(self) -> int:
        return self._request("eth_blockNumber", lambda: self._w3.eth.block_number)

    def get_block(self, ident: int | str = "latest", *, full_transactions: bool = False) -> Any:
        return self._request(f"eth_getBlock({ident})",
                             lambda: self._w3.eth.get_block(ident, full_transactions=full_transactions))

    def receipt(self, tx_hash: bytes | str) -> TxReceipt:
        """The receipt of a mined transaction."""
        return self._request("eth_getTransactionReceipt", lambda: self._w3.eth.get_transaction_receipt(tx_hash))

    def transaction(self, tx_hash: bytes | str) -> Any:
        """A transaction as sent (``input`` is its call data)."""
        return self._request("eth_getTransactionByHash", lambda: self._w3.eth.get_transaction(tx_hash))

    def transaction_call(self, tx_hash: bytes | str) -> dict[str, Any]:
        """What a transaction called: ``hash``, ``from``, ``to`` (checksum; None for a creation)
        and ``input`` (bytes), for readers of calldata (splitseal.chain.calldata). Backends
        may answer it more cheaply than :meth:`transaction`."""
        tx = self.transaction(tx_hash)
        return {"hash": tx.get("hash"), "from": tx["from"], "to": tx.get("to"), "input": bytes(tx["input"])}

    def code(self, address: str) -> bytes:
        """The code at ``address`` (empty for an account without code)."""
        return bytes(self._request("eth_getCode", lambda: self._w3.eth.get_code(to_checksum_address(address))))

    def transaction_count(self, address: str, block: int | str = "pending") -> int:
        """The next nonce of ``address`` as the node sees it."""
        return self._request("eth_getTransactionCount",
                             lambda: self._w3.eth.get_transaction_count(address, block))

    def gas_price(self) -> int:
        return self._request("eth_gasPrice", lambda: self._w3.eth.gas_price)

    def logs(self, addresses: str | Sequence[str] | None, topics: Sequence[Any], from_block: int,
             to_block: int | None = None) -> list[Any]:
        """Raw logs (web3's form) of ``addresses`` (None: of any contract) matching ``topics`` in a
        block range, clamped to the head and asked ``config.max_log_range`` blocks at a time. Any
        failure of the node or the transport is a :class:`ChainError`."""
        head = self.block_number()
        to_block = head if to_block is None else min(to_block, head)
        criteria: dict[str, Any] = {"topics": list(topics)}
        if addresses is not None:
            criteria["address"] = [addresses] if isinstance(addresses, str) else list(addresses)
        out: list[Any] = []
        start = max(0, from_block)
        while start <= to_block:
            end = min(to_block, start + self.config.max_log_range - 1)
            query = {**criteria, "fromBlock": start, "toBlock": end}
            out.extend(self._request(f"eth_getLogs({start}..{end})", lambda: self._get_logs(query), wrap_all=True))
            start = end + 1
        return out

    def _get_logs(self, query: dict[str, Any]) -> list[Any]:
        """One ``eth_getLogs`` (a backend may answer it more cheaply than web3)."""
        return list(self._w3.eth.get_logs(query))

    def get_logs(self, contract: Contract, event: str, from_block: int, to_block: int | None = None,
                 argument_filters: dict[str, Any] | None = None) -> list[Any]:
        """Decoded logs of ``event`` in a block range (through :meth:`logs`); indexed arguments in
        ``argument_filters`` are asked of the node, others are matched after decoding."""
        handle = getattr(contract.events, event)()
        abi = handle.abi
        filters = dict(argument_filters or {})
        topics: list[Any] = ["0x" + event_abi_to_log_topic(abi).hex()]
        for item in (i for i in abi["inputs"] if i["indexed"]):
            topics.append(_topic(item["type"], filters.pop(item["name"])) if item["name"] in filters else None)
        while topics and topics[-1] is None:
            topics.pop()
        decode = event_decoder(contract, event)
        decoded = [decode(raw) for raw in self.logs(contract.address, topics, from_block, to_block)]
        return [entry for entry in decoded if all(entry["args"][k] == v for k, v in filters.items())]

    def _request(self, label: str, request: Callable[[], Any], *, wrap_all: bool = False) -> Any:
        """Run one request; transport and node errors become :class:`ChainError` (the retry path
        of every service), with what was asked. Programming errors (``ValueError``,
        ``TypeError``) pass unless ``wrap_all``."""
        with self._guard():
            try:
                return request()
            except ChainError:
                raise
            except Exception as exc:  # noqa: BLE001 - web3, requests and node errors
                if isinstance(exc, (ValueError, TypeError)) and not wrap_all:
                    raise
                raise ChainError(f"{label}: {type(exc).__name__}: {exc}") from exc


def _topic(abi_type: str, value: Any) -> str:
    """The topic of an indexed event argument: the value's ABI word, or the hash of a dynamic one."""
    if abi_type in ("string", "bytes"):
        raw = value.encode() if isinstance(value, str) else bytes(value)
        return "0x" + keccak(raw).hex()
    if abi_type.endswith("]") or abi_type.startswith("("):
        raise ValueError(f"filtering on an indexed {abi_type} argument is not supported")
    return "0x" + abi_encode([abi_type], [value]).hex()


def _call_tx(fn: ContractFunction, sender: str | None) -> dict[str, Any]:
    """The call ``fn`` makes, as a transaction dict (built locally: every field is given)."""
    tx = fn.build_transaction({"from": sender or ZERO_ADDRESS, "gas": DEFAULT_TX_GAS, "nonce": 0,
                               "value": 0, "chainId": 0, "maxFeePerGas": 0, "maxPriorityFeePerGas": 0})
    return {k: tx[k] for k in ("from", "to", "data", "value", "gas")}


# --- connecting ----------------------------------------------------------------------------

def connect(target: str | ChainConfig = "embedded", *, accounts: Sequence[LocalAccount] | None = None,
            home: Path | None = None, start_anvil: bool = False) -> Chain:
    """Connect to ``"embedded"``, ``"anvil"`` or a JSON-RPC URL (http(s)://).

    ``"anvil"`` is the node ``splitseal chain up`` recorded under ``home``; when none is running,
    ``start_anvil`` starts a private one that stops with the chain (the demo and benchmarks),
    otherwise it is an error that says to start one.
    """
    config = target if isinstance(target, ChainConfig) else ChainConfig(url=target)
    url = config.url.strip()
    if url == "embedded":
        from .embedded import EmbeddedChain

        return EmbeddedChain.start(config, accounts or dev_accounts())
    if url == "anvil":
        from .anvil import AnvilNode, running_node

        node = running_node(home or Path.cwd())
        owned = node is None
        if owned and not start_anvil:
            raise ChainError("no anvil node is running; start one with `splitseal chain up` "
                             "(or give the node's URL with --chain http://127.0.0.1:PORT)")
        if owned:
            node = AnvilNode.start()
        return _connect_url(node.http_url, config, accounts, name="anvil", on_close=node.stop if owned else None)
    if url.startswith(("http://", "https://")):
        return _connect_url(url, config, accounts, name=url)
    if url.startswith(("ws://", "wss://")):
        raise ConfigError(f"chain URL {url}: give the node's http(s):// endpoint for transactions; "
                          "WebSocket endpoints are used for subscriptions alongside it")
    raise ConfigError(f"unknown chain {url!r}: use 'embedded', 'anvil' or an http(s):// JSON-RPC URL")


def _connect_url(url: str, config: ChainConfig, accounts: Iterable[LocalAccount] | None, *, name: str,
                 on_close: Callable[[], None] | None = None) -> Chain:
    from .rpc import RpcChain

    if accounts is None:
        from .keys import account_from

        admin = account_from(key=config.admin_key, keystore=config.admin_keystore,
                             password_file=config.keystore_password_file, what="[chain].admin_key / admin_keystore")
        accounts = [admin] if admin is not None else dev_accounts()
    return RpcChain.open(url, config, list(accounts), name=name, on_close=on_close)
