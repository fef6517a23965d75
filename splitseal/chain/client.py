"""One chain abstraction over web3 v8 for the embedded chain, anvil and any JSON-RPC URL.

- Transactions are signed locally with eth-account; a per-account nonce manager hands out
  nonces (never mix with node-picked nonces on the same account).
- Gas is always explicit: estimation re-runs the EVM, which doubles the cost on eth-tester.
- Receipts are fetched right after sending on the embedded chain (auto-mine) and polled with a
  short interval elsewhere (web3's default 0.1 s poll dominates a 3 ms anvil transaction).
- Reverts are decoded from the ABIs of every committed artifact into the custom error's name
  and arguments (:class:`ContractRevertError`); selectors are never hard-coded.
- eth-tester is not thread-safe: every request goes through one lock.
"""

from __future__ import annotations

import ast
import contextlib
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from eth_abi import decode as abi_decode, encode as abi_encode
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import function_signature_to_4byte_selector, to_checksum_address
from web3 import Web3
from web3.contract import Contract
from web3.contract.contract import ContractFunction
from web3.exceptions import ContractLogicError, TimeExhausted
from web3.logs import DISCARD
from web3.types import TxReceipt

from splitseal.config import ChainConfig
from splitseal.errors import ChainError, ConfigError, ContractRevertError

from .artifacts import all_artifacts, load_artifact

log = logging.getLogger(__name__)

#: The well-known development mnemonic: anvil funds these accounts, and so does the embedded
#: chain, so that keys and addresses are the same on both.
DEV_MNEMONIC = "test test test test test test test test test test test junk"
DEV_ACCOUNTS = 10
DEFAULT_TX_GAS = 3_000_000
DEPLOY_GAS = 8_000_000

Account.enable_unaudited_hdwallet_features()


def dev_accounts(count: int = DEV_ACCOUNTS) -> list[LocalAccount]:
    """The funded development accounts (same on the embedded chain and anvil)."""
    return [Account.from_mnemonic(DEV_MNEMONIC, account_path=f"m/44'/60'/0'/0/{i}") for i in range(count)]


@dataclass(frozen=True)
class PendingTx:
    """A transaction sent and not yet confirmed (``receipt`` set when the node returned it
    with the send, as anvil's ``eth_sendRawTransactionSync`` does)."""

    tx_hash: bytes
    tx: dict[str, Any]
    label: str
    receipt: Any = None


class LocalSubscription:
    """An in-process log subscription on the embedded chain (the twin of a WebSocket one)."""

    def __init__(self, chain: "Chain", addresses: set[str], topic0: str | None,
                 on_log: Callable[[Any], None] | None) -> None:
        self.chain, self.addresses, self.topic0, self.on_log = chain, addresses, topic0, on_log
        self.event = threading.Event()
        self.connected = threading.Event()
        self.connected.set()

    def matches(self, log_: Any) -> bool:
        if str(log_["address"]).lower() not in self.addresses:
            return False
        return self.topic0 is None or ("0x" + bytes(log_["topics"][0]).hex()).lower() == self.topic0

    def stop(self) -> None:
        self.chain._unsubscribe(self)


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
        if selector == bytes.fromhex("08c379a0"):
            return DecodedError("Error", {"message": abi_decode(["string"], body)[0]})
        if selector == bytes.fromhex("4e487b71"):
            return DecodedError("Panic", {"code": abi_decode(["uint256"], body)[0]})
        item = self._errors.get(selector)
        if item is None:
            return DecodedError("UnknownError", {"selector": selector, "data": body})
        values = abi_decode([_abi_type(i) for i in item["inputs"]], body)
        return DecodedError(item["name"], {
            i["name"]: to_checksum_address(v) if i["type"] == "address" else v
            for i, v in zip(item["inputs"], values)})


def _abi_type(item: dict[str, Any]) -> str:
    if item["type"].startswith("tuple"):
        inner = ",".join(_abi_type(c) for c in item["components"])
        return f"({inner}){item['type'][5:]}"
    return item["type"]


class Chain:
    """A connection to one chain, with funded accounts, local signing and decoded reverts."""

    def __init__(self, w3: Web3, *, name: str, accounts: Sequence[LocalAccount],
                 config: ChainConfig | None = None, on_close: Callable[[], None] | None = None,
                 embedded: bool = False) -> None:
        # Every transaction carries chainId, gas and fees we set, and no ENS names: web3's validation,
        # ENS and gas middlewares would only add round trips (eth_chainId, eth_getBlock) per call.
        for middleware in ("validation", "ens_name_to_address", "gas_price_strategy", "gas_estimate"):
            try:
                w3.middleware_onion.remove(middleware)
            except ValueError:
                pass
        self.w3 = w3
        self.name = name
        self.config = config or ChainConfig()
        self.accounts = list(accounts)
        self.embedded = embedded
        #: WebSocket endpoint for push subscriptions, when the node offers one (anvil does, on the
        #: HTTP port); None on the embedded chain.
        self.ws_url: str | None = None
        #: The node answers eth_sendRawTransactionSync (anvil): no receipt polling.
        self.send_sync = False
        self.chain_id: int = w3.eth.chain_id
        self.errors = ErrorDecoder(a["abi"] for a in all_artifacts().values())
        self._lock = threading.RLock()
        #: Held around every request on the embedded chain (eth-tester is not thread-safe); a
        #: real node takes concurrent requests, so there only nonce hand-out is serialised.
        self.request_lock: Any = self._lock if embedded else contextlib.nullcontext()
        # Signalled after every transaction this process mines on the embedded chain, so that
        # in-process listeners wait for blocks instead of polling the EVM.
        self._new_block = threading.Condition(self._lock)
        self._nonces: dict[str, int] = {}
        self._subscriptions: list[LocalSubscription] = []
        self._on_close = on_close
        self._max_fee = 0
        self._fee_checked = 0.0

    def account(self, role: int) -> LocalAccount:
        """The account for role ``role`` (0 admin, 1 model owner, 2 node, 3 requester, ...): the
        development accounts on dev chains; on a chain reached with one configured key, that key
        plays every role."""
        return self.accounts[role] if role < len(self.accounts) else self.accounts[0]

    # --- lifecycle -----------------------------------------------------------------------

    def close(self) -> None:
        if self._on_close:
            self._on_close()
            self._on_close = None

    def __enter__(self) -> "Chain":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- contracts -----------------------------------------------------------------------

    def contract(self, name: str, address: str) -> Contract:
        """A handle on a deployed contract by artifact name."""
        return self.w3.eth.contract(address=to_checksum_address(address), abi=load_artifact(name)["abi"])

    def deploy(self, name: str, *args: Any, sender: LocalAccount, gas: int = DEPLOY_GAS) -> Contract:
        """Deploy the committed artifact ``name`` with constructor ``args``."""
        return self.deploy_with_receipt(name, *args, sender=sender, gas=gas)[0]

    def deploy_with_receipt(self, name: str, *args: Any, sender: LocalAccount,
                            gas: int = DEPLOY_GAS) -> tuple[Contract, TxReceipt]:
        artifact = load_artifact(name)
        factory = self.w3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"])
        receipt = self._send(factory.constructor(*args), sender, gas, label=f"{name}.constructor")
        return self.contract(name, receipt["contractAddress"]), receipt

    def transact(self, fn: ContractFunction, *, sender: LocalAccount, gas: int | None = None,
                 value: int = 0) -> TxReceipt:
        """Sign and send ``fn`` from ``sender``; wait for and return the receipt.

        Raises :class:`ContractRevertError` with the decoded custom error when it reverts.
        """
        return self._send(fn, sender, gas or DEFAULT_TX_GAS, value=value, label=fn.fn_name)

    def call(self, fn: ContractFunction, *, sender: str | None = None, block: int | str = "latest") -> Any:
        """Call a view (or simulate a transaction); reverts are decoded."""
        params = {"from": sender} if sender else {}
        with self.request_lock:
            try:
                return fn.call(params, block_identifier=block)
            except Exception as exc:  # noqa: BLE001 - revert data arrives in several shapes
                data = _revert_data(exc)
                if data is None:
                    raise ChainError(f"{fn.fn_name}: the call failed: {exc}") from exc
                raise self._revert(data, fn.fn_name) from None

    def events(self, receipt: TxReceipt, contract: Contract, event: str) -> list[Any]:
        """The ``event`` logs ``contract`` emitted in ``receipt``, decoded (args only)."""
        logs = getattr(contract.events, event)().process_receipt(receipt, errors=DISCARD)
        return [entry["args"] for entry in logs]

    def get_logs(self, contract: Contract, event: str, from_block: int, to_block: int | None = None,
                 argument_filters: dict[str, Any] | None = None) -> list[Any]:
        """Decoded logs of ``event`` in a block range, clamped to the head and chunked."""
        head = self.block_number()
        to_block = head if to_block is None else min(to_block, head)
        out: list[Any] = []
        start = max(0, from_block)
        while start <= to_block:
            end = min(to_block, start + self.config.max_log_range - 1)
            out.extend(self.rpc(f"get_logs({event})", lambda: getattr(contract.events, event)().get_logs(
                from_block=start, to_block=end, argument_filters=argument_filters)))
            start = end + 1
        return out

    def rpc(self, label: str, request: Callable[[], Any]) -> Any:
        """Run one request (under the lock on the embedded chain); transport and node errors become
        :class:`ChainError` (the retry path of every service), with what was asked."""
        with self.request_lock:
            try:
                return request()
            except (ChainError, ValueError, TypeError):
                raise
            except Exception as exc:  # noqa: BLE001 - web3, requests and node errors
                raise ChainError(f"{label}: {type(exc).__name__}: {exc}") from exc

    # --- blocks and time -----------------------------------------------------------------

    def block_number(self) -> int:
        return self.rpc("eth_blockNumber", lambda: self.w3.eth.block_number)

    def get_block(self, ident: int | str = "latest") -> Any:
        return self.rpc(f"eth_getBlock({ident})", lambda: self.w3.eth.get_block(ident))

    def wait_for_block(self, after: int, timeout: float) -> int:
        """Wait until the head is past ``after`` (or ``timeout`` passes); returns the head.

        On the embedded chain this sleeps on a condition that every transaction of this process
        signals; elsewhere it polls ``eth_blockNumber`` every 2 ms.
        """
        deadline = time.monotonic() + timeout
        if self.embedded:
            with self._lock:
                while True:
                    head = self.w3.eth.block_number
                    remaining = deadline - time.monotonic()
                    if head > after or remaining <= 0:
                        return head
                    self._new_block.wait(remaining)
        while True:
            head = self.block_number()
            if head > after or time.monotonic() >= deadline:
                return head
            time.sleep(0.002)

    def subscribe(self, addresses: str | Sequence[str], *, on_log: Callable[[Any], None] | None = None,
                  topic0: str | None = None) -> LocalSubscription:
        """Embedded chain only: push the logs of ``addresses`` (and ``topic0``) of every
        transaction this process sends, as a node pushes them over WebSocket."""
        if not self.embedded:
            raise ChainError("in-process subscriptions exist on the embedded chain only; use the node's WebSocket")
        addresses = [addresses] if isinstance(addresses, str) else list(addresses)
        sub = LocalSubscription(self, {a.lower() for a in addresses}, topic0.lower() if topic0 else None, on_log)
        with self._lock:
            self._subscriptions.append(sub)
        return sub

    def _unsubscribe(self, sub: LocalSubscription) -> None:
        with self._lock:
            if sub in self._subscriptions:
                self._subscriptions.remove(sub)

    def _push(self, receipt: Any) -> None:
        for log_ in receipt["logs"]:
            for sub in list(self._subscriptions):
                if sub.matches(log_):
                    if sub.on_log is not None:
                        try:
                            sub.on_log(log_)
                        except Exception as exc:  # noqa: BLE001 - a subscriber must not break a send
                            log.warning("pushed log not handled: %s", exc)
                    sub.event.set()

    def wake_waiters(self) -> None:
        """Release every :meth:`wait_for_block` now (a service that is stopping)."""
        if self.embedded:
            with self._lock:
                self._new_block.notify_all()

    def snapshot(self) -> Any:
        with self._lock:
            return self.w3.provider.make_request("evm_snapshot", [])["result"]

    def revert(self, snapshot_id: Any) -> None:
        with self._lock:
            response = self.w3.provider.make_request("evm_revert", [snapshot_id])
            if "error" in response:
                raise ChainError(f"evm_revert({snapshot_id}) failed: {response['error']}")
            self._nonces.clear()

    def increase_time(self, seconds: int) -> None:
        """Move the chain clock forward and mine a block at the new time."""
        with self._lock:
            if self.embedded:
                latest = self.w3.eth.get_block("latest")["timestamp"]
                self.w3.provider.ethereum_tester.time_travel(int(latest) + int(seconds))
            else:
                self.w3.provider.make_request("evm_increaseTime", [int(seconds)])
                self.w3.provider.make_request("evm_mine", [])

    def mine(self, blocks: int = 1) -> None:
        with self._lock:
            if self.embedded:
                self.w3.provider.ethereum_tester.mine_blocks(blocks)
            else:
                for _ in range(blocks):
                    self.w3.provider.make_request("evm_mine", [])

    # --- internals -----------------------------------------------------------------------

    def _next_nonce(self, address: str) -> int:
        if address not in self._nonces:
            self._nonces[address] = self.w3.eth.get_transaction_count(address, "pending")
        nonce = self._nonces[address]
        self._nonces[address] = nonce + 1
        return nonce

    def _fees(self) -> dict[str, int]:
        now = time.monotonic()
        if now - self._fee_checked > 30 or not self._max_fee:
            base = self.w3.eth.get_block("latest").get("baseFeePerGas") or self.w3.eth.gas_price
            self._max_fee = max(2 * int(base), 2 * 10**9)
            self._fee_checked = now
        return {"maxFeePerGas": self._max_fee, "maxPriorityFeePerGas": min(10**9, self._max_fee)}

    def _send(self, fn: Any, sender: LocalAccount, gas: int, *, value: int = 0, label: str) -> TxReceipt:
        return self.confirm(self._submit(fn, sender, gas, value=value, label=label))

    def send(self, fn: ContractFunction, *, sender: LocalAccount, gas: int | None = None,
             value: int = 0) -> "PendingTx":
        """Sign and send without waiting: several transactions of one account can be in flight
        (nonces are handed out in order); :meth:`confirm` waits for each."""
        return self._submit(fn, sender, gas or DEFAULT_TX_GAS, value=value, label=fn.fn_name)

    def _submit(self, fn: Any, sender: LocalAccount, gas: int, *, value: int, label: str,
                _retried: bool = False) -> "PendingTx":
        with self._lock:  # nonces must reach the node in the order they were handed out
            nonce = self._next_nonce(sender.address)
            tx = fn.build_transaction({"from": sender.address, "nonce": nonce, "gas": gas,
                                       "value": value, "chainId": self.chain_id, **self._fees()})
            signed = sender.sign_transaction(tx)
            try:
                if self.send_sync:
                    receipt = self._send_sync(signed.raw_transaction)
                    return PendingTx(receipt["transactionHash"], tx, label, receipt)
                tx_hash = self.w3.eth.send_raw_transaction(signed.raw_transaction)
            except Exception as exc:  # noqa: BLE001
                self._nonces.pop(sender.address, None)  # resync: the nonce was not consumed
                data = _revert_data(exc)
                if data is not None:
                    raise self._revert(data, label) from None
                if "nonce" in str(exc).lower() and not _retried:
                    # another process sent from this account: read the nonce again, once
                    return self._submit(fn, sender, gas, value=value, label=label, _retried=True)
                raise ChainError(f"{label}: sending the transaction failed: {exc}") from exc
            if self.embedded:  # auto-mined: the receipt is there already; push its logs
                receipt = self.w3.eth.get_transaction_receipt(tx_hash)
                self._push(receipt)
                self._new_block.notify_all()
                return PendingTx(tx_hash, tx, label, receipt)
        return PendingTx(tx_hash, tx, label)

    def _send_sync(self, raw: bytes) -> Any:
        """``eth_sendRawTransactionSync`` (EIP-7966): the receipt in the same round trip."""
        from web3._utils.method_formatters import receipt_formatter
        from web3.datastructures import AttributeDict

        response = self.w3.provider.make_request("eth_sendRawTransactionSync", ["0x" + bytes(raw).hex()])
        if "error" in response:
            error = response["error"]
            data = error.get("data") if isinstance(error, dict) else None
            if isinstance(data, str) and data.startswith("0x"):
                raise ContractLogicError(error.get("message", ""), data=data)
            raise ChainError(f"node refused the transaction: {error}")
        return AttributeDict.recursive(receipt_formatter(response["result"]))

    def confirm(self, pending: "PendingTx") -> TxReceipt:
        """Wait for a sent transaction; raises :class:`ContractRevertError` when it reverted."""
        receipt = pending.receipt or self._wait(pending.tx_hash, pending.label)
        if receipt["status"] != 1:
            raise self._replay_revert(pending.tx, receipt, pending.label)
        log.debug("tx=%s fn=%s gas=%d block=%d", pending.tx_hash.to_0x_hex(), pending.label,
                  receipt["gasUsed"], receipt["blockNumber"])
        return receipt

    def _wait(self, tx_hash: bytes, label: str) -> TxReceipt:
        if self.embedded:
            with self._lock:
                return self.w3.eth.get_transaction_receipt(tx_hash)
        try:  # no lock: other threads' requests go on while this one polls
            return self.w3.eth.wait_for_transaction_receipt(
                tx_hash, timeout=self.config.receipt_timeout, poll_latency=0.0005)
        except TimeExhausted:
            raise ChainError(f"{label}: no receipt for {tx_hash.to_0x_hex()} after "
                             f"{self.config.receipt_timeout} s; is the node mining?") from None
        except Exception as exc:  # noqa: BLE001
            raise ChainError(f"{label}: waiting for the receipt failed: {exc}") from exc

    def _replay_revert(self, tx: dict[str, Any], receipt: TxReceipt, label: str) -> ChainError:
        """Re-run a failed transaction as a call to learn its custom error.

        A reverted transaction changes no state, so the state after its own block is the one it
        saw (unless the same block changed it). anvil with --prune-history keeps no older state,
        so fall back to the latest block.
        """
        call = {k: tx[k] for k in ("from", "to", "data", "value", "gas") if k in tx}
        for block in (receipt["blockNumber"], "latest"):
            try:
                with self.request_lock:
                    self.w3.eth.call(call, block_identifier=block)
            except Exception as exc:  # noqa: BLE001
                data = _revert_data(exc)
                if data is not None:
                    return self._revert(data, label)
                log.debug("replay of %s at block %s failed: %r", label, block, exc)
                continue
            break
        if receipt["gasUsed"] >= tx["gas"]:
            return ChainError(f"{label}: ran out of gas ({tx['gas']}); raise the gas limit")
        return ChainError(f"{label}: transaction {receipt['transactionHash'].hex()} reverted")

    def _revert(self, data: bytes, label: str) -> ContractRevertError:
        decoded = self.errors.decode(data)
        return ContractRevertError(decoded.name, decoded.args, function=label, raw=data)


def _revert_data(exc: BaseException) -> bytes | None:
    """Revert data from the exception shapes of web3 (anvil, URLs) and eth-tester."""
    if isinstance(exc, ContractLogicError):
        data = exc.data
        if isinstance(data, str) and data.startswith("0x"):
            return bytes.fromhex(data[2:])
        if isinstance(data, (bytes, bytearray)):
            return bytes(data)
        return b""
    if type(exc).__name__ == "TransactionFailed":  # eth_tester.exceptions
        return _eth_tester_revert_data(exc.args[0] if exc.args else b"")
    return None


def _eth_tester_revert_data(arg: Any) -> bytes:
    """eth-tester (through web3's provider) renders revert data into its message as
    ``execution reverted: b'...'`` (raw) or ``execution reverted: <reason>`` (Error(string))."""
    if isinstance(arg, (bytes, bytearray)):
        return bytes(arg)
    text = str(arg)
    prefix = "execution reverted: "
    text = text[len(prefix):] if text.startswith(prefix) else text
    if text.startswith(("b'", 'b"')):
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = None
        if isinstance(value, bytes):
            return value
    if text.startswith("0x"):
        try:
            return bytes.fromhex(text[2:])
        except ValueError:
            pass
    if not text or text == "execution reverted":
        return b""
    return bytes.fromhex("08c379a0") + abi_encode(["string"], [text])


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
        return _connect_embedded(config, accounts)
    if url == "anvil":
        from .anvil import AnvilNode, running_node

        node = running_node(home or Path.cwd())
        owned = node is None
        if owned and not start_anvil:
            raise ChainError("no anvil node is running; start one with `splitseal chain up` "
                             "(or give the node's URL with --chain http://127.0.0.1:PORT)")
        if owned:
            node = AnvilNode.start()
        chain = _connect_url(node.http_url, config, accounts, name="anvil",
                             on_close=node.stop if owned else None)
        return chain
    if url.startswith(("http://", "https://")):
        return _connect_url(url, config, accounts, name=url)
    if url.startswith(("ws://", "wss://")):
        raise ConfigError(f"chain URL {url}: give the node's http(s):// endpoint for transactions; "
                          "WebSocket endpoints are used for subscriptions alongside it")
    raise ConfigError(f"unknown chain {url!r}: use 'embedded', 'anvil' or an http(s):// JSON-RPC URL")


def _connect_embedded(config: ChainConfig, accounts: Sequence[LocalAccount] | None) -> Chain:
    from eth_tester import EthereumTester, PyEVMBackend
    from web3 import EthereumTesterProvider

    backend = PyEVMBackend(mnemonic=DEV_MNEMONIC, hd_path="m/44'/60'/0'/0")
    w3 = Web3(EthereumTesterProvider(EthereumTester(backend)))
    return Chain(w3, name="embedded", accounts=accounts or dev_accounts(), config=config, embedded=True)


def _connect_url(url: str, config: ChainConfig, accounts: Sequence[LocalAccount] | None, *, name: str,
                 on_close: Callable[[], None] | None = None) -> Chain:
    from web3 import HTTPProvider

    w3 = Web3(HTTPProvider(url, request_kwargs={"timeout": 30}))
    try:
        w3.eth.chain_id
    except Exception as exc:  # noqa: BLE001
        if on_close:
            on_close()
        raise ChainError(f"cannot reach the chain at {url}: {exc}; is the node running?") from None
    if accounts is None:
        accounts = [Account.from_key(config.admin_key)] if config.admin_key else dev_accounts()
    chain = Chain(w3, name=name, accounts=accounts, config=config, on_close=on_close)
    if _is_anvil(w3):
        chain.ws_url = "ws" + url[len("http"):]  # anvil serves WebSocket on its HTTP port
        chain.send_sync = True
    return chain


def _is_anvil(w3: Web3) -> bool:
    """anvil offers WebSocket on its HTTP port and synchronous sends; other nodes get the
    portable path (HTTP polling, send then receipt)."""
    try:
        return "anvil" in str(w3.client_version).lower()
    except Exception:  # noqa: BLE001
        return False
