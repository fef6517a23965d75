"""Signing, numbering, pricing, sending and confirming transactions of local accounts.

- Transactions are signed locally (the sender's own EIP-1559 serialisation and coincurve for the
  calls it builds, eth-account for anything else: :func:`sign_transaction`); a per-account nonce manager hands out
  nonces (never mix with node-picked nonces on the same account). When a send fails the nonce
  is read again from the node; when the node says the nonce is wrong (another process sent
  from the account) the transaction is numbered again and sent once more.
- Gas is always explicit: estimation re-runs the EVM, which doubles the cost on eth-tester.
- Fees come from the latest base fee (twice it, at least 2 gwei), read at most every 30 s.
- A transaction that reverted is replayed as a call to learn its custom error
  (:class:`ContractRevertError`).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from eth_account.signers.local import LocalAccount
from web3.types import TxReceipt

from splitseal.errors import ChainError

if TYPE_CHECKING:
    from .client import Chain

log = logging.getLogger(__name__)

#: Fees are read again after this many seconds.
FEE_TTL = 30.0


@dataclass(frozen=True)
class PendingTx:
    """A transaction sent and not yet confirmed (``receipt`` set when the backend returned it
    with the send: the embedded chain mines at once, anvil's ``eth_sendRawTransactionSync``)."""

    tx_hash: bytes
    tx: dict[str, Any]
    label: str
    receipt: Any = None


class ContractCall:
    """A contract function by name with its arguments, to send: what :func:`build_transaction`
    reads, with web3's ``ContractFunction`` made only when something else is asked of it (a gas
    estimate, a call, web3's fallback). Making one matches the arguments against the ABI, which
    took 0.6 ms for a delivery and 0.2 ms for a request (in a loop, load 3.5) on the critical
    path; the codec encodes the very same calldata (``tests/unit/test_chain_codec.py``) and web3
    still builds what it does not take."""

    __slots__ = ("contract", "fn_name", "args", "_function")
    kwargs = None

    def __init__(self, contract: Any, fn_name: str, *args: Any) -> None:
        self.contract, self.fn_name, self.args = contract, fn_name, args
        self._function = None

    @property
    def address(self) -> str:
        return self.contract.address

    @property
    def contract_abi(self) -> Any:
        return self.contract.abi

    def function(self) -> Any:
        """web3's ``ContractFunction`` of this call (made once, when first needed)."""
        if self._function is None:
            self._function = getattr(self.contract.functions, self.fn_name)(*self.args)
        return self._function

    def __getattr__(self, name: str) -> Any:  # build_transaction, call, ...: web3's
        return getattr(self.function(), name)


def build_transaction(fn: Any, fields: dict[str, Any]) -> dict[str, Any]:
    """``fn.build_transaction(fields)``, with the calldata encoded by :mod:`.codec` for a plain
    call of a contract function (every field is given, so web3 would add nothing but its ABI
    normalisers, about a millisecond per transaction); web3 builds the rest (constructors,
    overloaded functions, payable calls, arguments eth_abi does not take as given)."""
    from .codec import codec_of

    abi = getattr(fn, "contract_abi", None)
    if not abi or fields.get("value") or getattr(fn, "kwargs", None) or not getattr(fn, "address", None):
        return fn.build_transaction(fields)
    try:
        codec = codec_of(fn.address, abi)
        if codec.overloaded(fn.fn_name):
            return fn.build_transaction(fields)
        data = codec.encode(fn.fn_name, fn.args)
    except Exception:  # noqa: BLE001 - arguments in a form only web3 normalises (hex strings, ...)
        return fn.build_transaction(fields)
    return {**fields, "to": fn.address, "data": "0x" + data.hex()}


#: The fields :func:`sign_transaction` serialises itself: an EIP-1559 call with every field given.
_EIP1559_FIELDS = frozenset({"from", "nonce", "gas", "value", "chainId", "maxFeePerGas", "maxPriorityFeePerGas",
                             "to", "data"})


def sign_transaction(account: LocalAccount, tx: dict[str, Any], keys: dict[str, Any]) -> bytes:
    """``account.sign_transaction(tx).raw_transaction``, serialised with rlp and signed with
    coincurve directly for the EIP-1559 calls the sender builds: eth-account's general path
    (field validation, a typed-transaction object, its own serialisation) took 1.3 ms for a
    request and 2.2 ms for a delivery, against about 0.25 ms here (in a loop, load 3.5), on both
    transactions of every round trip. A deployment, an access list, a legacy price or another
    sender's "from" go through eth-account. ``keys``: the caller's cache of signing keys by
    address. ``tests/unit/test_chain_codec.py`` compares the bytes of both."""
    if set(tx) - _EIP1559_FIELDS or not tx.get("to") or "maxFeePerGas" not in tx or \
            str(tx.get("from", account.address)) != account.address:
        return bytes(account.sign_transaction(tx).raw_transaction)
    import coincurve
    import rlp
    from eth_utils import keccak, to_bytes

    key = keys.get(account.address)
    if key is None:
        key = keys[account.address] = coincurve.PrivateKey(bytes(account.key))
    data = tx.get("data") or b""
    fields = [int(tx["chainId"]), int(tx["nonce"]), int(tx["maxPriorityFeePerGas"]), int(tx["maxFeePerGas"]),
              int(tx["gas"]), to_bytes(hexstr=tx["to"]), int(tx.get("value", 0)),
              to_bytes(hexstr=data) if isinstance(data, str) else bytes(data), []]  # [] : the access list
    signature = key.sign_recoverable(keccak(b"\x02" + rlp.encode(fields)), hasher=None)  # r || s || y parity
    r, s, y_parity = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:64], "big"), signature[64]
    return b"\x02" + rlp.encode(fields + [y_parity, r, s])


class TransactionSender:
    """Sends the transactions of one :class:`~.client.Chain`; the chain's backend carries them."""

    def __init__(self, chain: "Chain") -> None:
        self._chain = chain
        # nonces must reach the node in the order they were handed out; reentrant because a
        # pushed-log handler may send while a send is delivering its logs
        self._lock = threading.RLock()
        self._nonces: dict[str, int] = {}
        self._max_fee = 0
        self._fee_checked = 0.0
        self._signing_keys: dict[str, Any] = {}  # address -> coincurve.PrivateKey (see sign_transaction)

    def reset(self) -> None:
        """Forget every nonce (the chain went back to a snapshot)."""
        with self._lock:
            self._nonces.clear()

    def submit(self, fn: Any, sender: LocalAccount, gas: int, *, value: int, label: str,
               _retried: bool = False) -> PendingTx:
        """Sign and send ``fn`` (a contract function or constructor) without waiting."""
        chain = self._chain
        with self._lock:
            nonce = self._next_nonce(sender.address)
            try:  # a ContractCall's arguments meet web3's checks here, after the nonce was handed out
                tx = build_transaction(fn, {"from": sender.address, "nonce": nonce, "gas": gas,
                                            "value": value, "chainId": chain.chain_id, **self._fees()})
                raw = sign_transaction(sender, tx, self._signing_keys)
            except Exception:
                self._nonces.pop(sender.address, None)  # not sent: the nonce was not consumed
                raise
            try:
                tx_hash, receipt = chain._send_raw(raw)
            except Exception as exc:  # noqa: BLE001
                self._nonces.pop(sender.address, None)  # resync: the nonce was not consumed
                data = chain._revert_data(exc)
                if data is not None:
                    raise chain.errors.error(data, label) from None
                if "nonce" in str(exc).lower() and not _retried:
                    # another process sent from this account: read the nonce again, once
                    log.info("%s: nonce %d refused (%s); reading it again", label, nonce, exc)
                    return self.submit(fn, sender, gas, value=value, label=label, _retried=True)
                raise ChainError(f"{label}: sending the transaction failed: {exc}") from exc
        return PendingTx(tx_hash, tx, label, receipt)

    def confirm(self, pending: PendingTx) -> TxReceipt:
        """Wait for a sent transaction; raises :class:`ContractRevertError` when it reverted."""
        receipt = pending.receipt or self._chain._wait_receipt(pending.tx_hash, pending.label)
        if receipt["status"] != 1:
            raise self._replay_revert(pending.tx, receipt, pending.label)
        log.debug("tx=%s fn=%s gas=%d block=%d", pending.tx_hash.to_0x_hex(), pending.label,
                  receipt["gasUsed"], receipt["blockNumber"])
        return receipt

    def _replay_revert(self, tx: dict[str, Any], receipt: TxReceipt, label: str) -> ChainError:
        """Re-run a failed transaction as a call to learn its custom error.

        A reverted transaction changes no state, so the state after its own block is the one it
        saw (unless the same block changed it). anvil with --prune-history keeps no older state,
        so fall back to the latest block.
        """
        call = {k: tx[k] for k in ("from", "to", "data", "value", "gas") if k in tx}
        for block in (receipt["blockNumber"], "latest"):
            try:
                data = self._chain._replay(call, block)
            except Exception as exc:  # noqa: BLE001 - state pruned, node busy: try the next block
                log.debug("replay of %s at block %s failed: %r", label, block, exc)
                continue
            if data is not None:
                return self._chain.errors.error(data, label)
            break
        if receipt["gasUsed"] >= tx["gas"]:
            return ChainError(f"{label}: ran out of gas ({tx['gas']}); raise the gas limit")
        return ChainError(f"{label}: transaction {receipt['transactionHash'].hex()} reverted")

    def _next_nonce(self, address: str) -> int:
        if address not in self._nonces:
            self._nonces[address] = self._chain.transaction_count(address, "pending")
        nonce = self._nonces[address]
        self._nonces[address] = nonce + 1
        return nonce

    def _fees(self) -> dict[str, int]:
        now = time.monotonic()
        if now - self._fee_checked > FEE_TTL or not self._max_fee:
            base = self._chain.get_block("latest").get("baseFeePerGas") or self._chain.gas_price()
            self._max_fee = max(2 * int(base), 2 * 10**9)
            self._fee_checked = now
        return {"maxFeePerGas": self._max_fee, "maxPriorityFeePerGas": min(10**9, self._max_fee)}
