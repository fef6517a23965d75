"""A chain over JSON-RPC: anvil, or any http(s) node.

- Receipts are polled with a short interval (web3's default 0.1 s poll dominates a 3 ms anvil
  transaction); where the node answers ``eth_sendRawTransactionSync`` (EIP-7966, anvil) the
  receipt arrives with the send and nothing is polled.
- Where the node serves WebSocket (anvil does, on its HTTP port), :meth:`RpcChain.subscribe`
  opens an ``eth_subscribe("logs")`` on a background thread; elsewhere it returns None and
  callers poll.
- Raw JSON from those two paths (the sync receipt, pushed logs) is converted here, explicitly,
  into the form web3 returns for its own requests (ints, ``HexBytes``, checksum addresses).
- anvil is recognised by ``web3_clientVersion``; other nodes get the portable path.
"""

from __future__ import annotations

import http.client
import itertools
import json
import logging
import select
import threading
import time
from typing import Any, Callable, Sequence
from urllib.parse import urlsplit

from eth_account.signers.local import LocalAccount
from hexbytes import HexBytes
from web3 import HTTPProvider, Web3
from web3.datastructures import AttributeDict
from web3.exceptions import ContractLogicError, TimeExhausted
from web3.types import TxReceipt

from splitseal.config import ChainConfig
from splitseal.errors import ChainError

from .client import Chain, Subscription
from .codec import checksum_address as to_checksum_address  # cached: the same few addresses in every reply
from .revert import node_revert_data

log = logging.getLogger(__name__)

_JSON_HEADERS = {"Content-Type": "application/json"}

#: Receipt poll interval where the node cannot send synchronously.
RECEIPT_POLL = 0.0005
#: Head poll interval of :meth:`RpcChain.wait_for_block`.
HEAD_POLL = 0.002


class RpcChain(Chain):
    """A node reached over HTTP(S) JSON-RPC."""

    def __init__(self, w3: Web3, endpoint: str, *, name: str, accounts: Sequence[LocalAccount],
                 config: ChainConfig | None = None, on_close: Callable[[], None] | None = None,
                 ws_url: str | None = None, send_sync: bool = False, session: "EnvironmentOnce | None" = None) -> None:
        super().__init__(w3, name=name, accounts=accounts, config=config, on_close=on_close)
        self._endpoint = endpoint
        self._session = session  # the session web3 posts through, for :meth:`_rpc`'s direct path
        self._rpc_ids = itertools.count(1)
        #: WebSocket endpoint for push subscriptions, when the node offers one.
        self.ws_url = ws_url
        #: The node answers eth_sendRawTransactionSync: no receipt polling.
        self.send_sync = send_sync

    @classmethod
    def open(cls, url: str, config: ChainConfig, accounts: Sequence[LocalAccount], *, name: str,
             on_close: Callable[[], None] | None = None) -> "RpcChain":
        session = EnvironmentOnce(url)
        w3 = Web3(HTTPProvider(url, request_kwargs={"timeout": 30}, session=session))
        try:
            w3.eth.chain_id
        except Exception as exc:  # noqa: BLE001
            if on_close:
                on_close()
            raise ChainError(f"cannot reach the chain at {url}: {exc}; is the node running?") from None
        anvil = _is_anvil(w3)
        return cls(w3, url, name=name, accounts=accounts, config=config, on_close=on_close,
                   # anvil serves WebSocket on its HTTP port
                   ws_url="ws" + url[len("http"):] if anvil else None, send_sync=anvil, session=session)

    @property
    def url(self) -> str:
        return self._endpoint

    def _rpc(self, method: str, params: list[Any]) -> dict[str, Any]:
        """One JSON-RPC request, its response as the node sent it (``result`` or ``error``). To a
        local node (:attr:`EnvironmentOnce.direct`) it is posted straight over the thread's
        kept-alive connection: web3's provider (its request and response encoders, caching
        decorator and logging) took 1.65 ms for an ``eth_getTransactionByHash`` that a bare
        POST answered in 1.00 ms (anvil, 300 calls each interleaved, load 3.0), and the calls
        that go through here are on every request's critical path: the node's input fetch and
        delivery, the requester's request and result fetch. Elsewhere, web3's provider."""
        if self._session is None or not self._session.direct:
            return self._w3.provider.make_request(method, params)
        body = json.dumps({"jsonrpc": "2.0", "method": method, "params": params, "id": next(self._rpc_ids)})
        reply = self._session.post(self._endpoint, data=body, headers=_JSON_HEADERS, timeout=30)
        reply.raise_for_status()
        return json.loads(reply.content)

    # --- sending -------------------------------------------------------------------------------

    def _send_raw(self, raw: bytes) -> tuple[bytes, Any]:
        if self.send_sync:
            receipt = self._send_sync(raw)
            return receipt["transactionHash"], receipt
        return self._w3.eth.send_raw_transaction(raw), None

    def _send_sync(self, raw: bytes) -> Any:
        """``eth_sendRawTransactionSync`` (EIP-7966): the receipt in the same round trip."""
        response = self._rpc("eth_sendRawTransactionSync", ["0x" + bytes(raw).hex()])
        if "error" in response:
            error = response["error"]
            data = error.get("data") if isinstance(error, dict) else None
            if isinstance(data, str) and data.startswith("0x"):
                raise ContractLogicError(error.get("message", ""), data=data)
            raise ChainError(f"node refused the transaction: {error}")
        return format_receipt(response["result"])

    def _wait_receipt(self, tx_hash: bytes, label: str) -> TxReceipt:
        try:  # no lock: other threads' requests go on while this one polls
            return self._w3.eth.wait_for_transaction_receipt(
                tx_hash, timeout=self.config.receipt_timeout, poll_latency=RECEIPT_POLL)
        except TimeExhausted:
            raise ChainError(f"{label}: no receipt for {tx_hash.to_0x_hex()} after "
                             f"{self.config.receipt_timeout} s; is the node mining?") from None
        except Exception as exc:  # noqa: BLE001
            raise ChainError(f"{label}: waiting for the receipt failed: {exc}") from exc

    def _revert_data(self, exc: BaseException) -> bytes | None:
        return node_revert_data(exc)

    def _replay(self, tx: dict[str, Any], block: int | str) -> bytes | None:
        try:
            self._w3.eth.call(tx, block_identifier=block)
        except Exception as exc:  # noqa: BLE001
            data = node_revert_data(exc)
            if data is None:
                raise
            return data
        return None

    def _get_logs(self, query: dict[str, Any]) -> list[Any]:
        """``eth_getLogs`` straight from the provider, each log through :func:`format_log`
        (web3's result formatters cost ~0.1 ms a log: the node's catch-up poll, its keeper and
        its take-over check read every request's logs, on each of n nodes)."""
        params = {**query, "fromBlock": hex(query["fromBlock"]), "toBlock": hex(query["toBlock"]),
                  "topics": [_json_topic(t) for t in query.get("topics", [])]}
        response = self._rpc("eth_getLogs", [params])
        if "error" in response:
            raise ChainError(f"the node refused the log query: {response['error']}")
        return [format_log(entry) for entry in response.get("result") or []]

    def transaction_call(self, tx_hash: bytes | str) -> dict[str, Any]:
        """``eth_getTransactionByHash`` straight from the provider: web3's result formatters
        walk every field of the transaction (about 1 ms per request on the node's critical
        path); only the four fields readers of calldata use are converted here."""
        h = tx_hash if isinstance(tx_hash, str) else "0x" + bytes(tx_hash).hex()
        response = self._request("eth_getTransactionByHash",
                                 lambda: self._rpc("eth_getTransactionByHash", [h]))
        if "error" in response:
            raise ChainError(f"eth_getTransactionByHash({h}) failed: {response['error']}")
        raw = response.get("result")
        if not raw:
            raise ChainError(f"transaction {h} not found on the chain")
        data = raw.get("input") or raw.get("data") or "0x"
        return {"hash": HexBytes(bytes.fromhex(raw["hash"][2:])), "from": to_checksum_address(raw["from"]),
                "to": to_checksum_address(raw["to"]) if raw.get("to") else None, "input": bytes.fromhex(data[2:])}

    # --- waiting and pushing -------------------------------------------------------------------

    def wait_for_block(self, after: int, timeout: float) -> int:
        """Polls ``eth_blockNumber`` every 2 ms."""
        deadline = time.monotonic() + timeout
        while True:
            head = self.block_number()
            if head > after or time.monotonic() >= deadline:
                return head
            time.sleep(HEAD_POLL)

    def subscribe(self, addresses: str | Sequence[str], *, on_log: Callable[[Any], None] | None = None,
                  topic0: str | Sequence[str] | None = None) -> "PushWakeup | None":
        """A WebSocket subscription where the node offers one and it connects; else None."""
        if not self.ws_url:
            return None
        push = PushWakeup(self.ws_url, addresses, on_log=on_log, topic0=topic0).start()
        if push.connected.is_set():
            return push
        push.stop()
        return None

    def pending_calls(self, addresses: str | Sequence[str]) -> "PendingCalls | None":
        """Where the node pushes full pending transactions over WebSocket and the configuration
        allows it (``[chain].pending_transactions``); else None."""
        if not self.ws_url or not self.config.pending_transactions:
            return None
        pending = PendingCalls(self.ws_url, addresses).start()
        if pending.connected.is_set():
            return pending
        pending.stop()
        return None

    # --- test cheats (anvil's evm_* and anvil_* methods) -------------------------------------

    def _cheat(self, method: str, params: list[Any]) -> Any:
        response = self._request(method, lambda: self._rpc(method, params))
        if "error" in response:
            raise ChainError(f"{method}{tuple(params)} failed: {response['error']}")
        return response.get("result")

    def snapshot(self) -> Any:
        return self._cheat("evm_snapshot", [])

    def revert(self, snapshot_id: Any) -> None:
        self._cheat("evm_revert", [snapshot_id])
        self._sender.reset()

    def increase_time(self, seconds: int) -> None:
        self._cheat("evm_increaseTime", [int(seconds)])
        self._cheat("evm_mine", [])

    def mine(self, blocks: int = 1) -> None:
        for _ in range(blocks):
            self._cheat("evm_mine", [])

    def set_next_block_timestamp(self, timestamp: int) -> None:
        self._cheat("evm_setNextBlockTimestamp", [int(timestamp)])


def _json_topic(topic: Any) -> Any:
    """A topic filter position as JSON-RPC takes it (None, 0x hex, or a list of them)."""
    if topic is None or isinstance(topic, str):
        return topic
    if isinstance(topic, (list, tuple)):
        return [_json_topic(t) for t in topic]
    return "0x" + bytes(topic).hex()


class EnvironmentOnce:
    """The HTTP session web3 posts through. Hand-written for performance (measured: an
    ``eth_getTransactionByHash`` against anvil took 813 us through web3's provider on requests,
    255 us as a bare ``http.client`` POST, load 3.4; each inference request makes several such
    calls on its critical path, and every call costs the machine's CPU).

    - To a plain ``http://`` endpoint that the environment sends through no proxy and with no
      netrc credentials (a local node, typically), each thread POSTs over one kept-alive
      ``http.client`` connection of its own; before it is reused, a connection the server closed
      meanwhile is replaced, as urllib3 does (a request is never sent twice).
    - Anywhere else (https, a proxy, credentials), one ``requests.Session`` per thread (as web3
      keeps by default) that reads the environment's proxy, CA-bundle and netrc settings once,
      when created, instead of on every request (requests' ``trust_env`` looks each request's
      proxies up in the environment and stats ~/.netrc: ~0.2 ms a JSON-RPC call).
    """

    def __init__(self, url: str) -> None:
        import requests

        probe = requests.Session()
        self._settings = probe.merge_environment_settings(url, {}, None, None, None)
        self._auth = requests.utils.get_netrc_auth(url)
        probe.close()
        self._local = threading.local()
        parts = urlsplit(url)
        proxies = self._settings.get("proxies") or {}
        self.direct = parts.scheme == "http" and bool(parts.hostname) and not self._auth and \
            not any(proxies.get(k) for k in ("http", "all", "http://" + (parts.hostname or "")))
        self._url = url
        self._address = (parts.hostname or "", parts.port or 80)
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")

    def _session(self) -> Any:
        session = getattr(self._local, "session", None)
        if session is None:
            import requests

            session = requests.Session()
            session.trust_env = False
            session.proxies.update(self._settings.get("proxies") or {})
            session.verify = self._settings.get("verify", True)
            if self._settings.get("cert"):
                session.cert = self._settings["cert"]
            if self._auth:
                session.auth = self._auth
            self._local.session = session
        return session

    def post(self, url: str, data: Any = None, headers: dict[str, str] | None = None, timeout: Any = None,
             **kwargs: Any) -> Any:
        if not self.direct or url != self._url or kwargs.get("stream"):
            return self._session().post(url, data=data, headers=headers, timeout=timeout, **kwargs)
        return self._post_direct(url, data, headers or {}, timeout)

    def _connection(self, timeout: float | None) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is not None and (conn.sock is None or _closed_by_peer(conn.sock)):
            conn.close()
            conn = None
        if conn is None:
            conn = http.client.HTTPConnection(*self._address, timeout=timeout)
            self._local.conn = conn
        elif conn.sock is not None:
            conn.sock.settimeout(timeout)
        return conn

    def _post_direct(self, url: str, data: Any, headers: dict[str, str], timeout: Any) -> "DirectReply":
        if isinstance(timeout, tuple):  # requests' (connect, read)
            timeout = max(t for t in timeout if t is not None) if any(t is not None for t in timeout) else None
        body = data.encode() if isinstance(data, str) else data
        conn = self._connection(timeout)
        try:
            conn.request("POST", self._path, body=body, headers=headers)
            reply = conn.getresponse()
            content = reply.read()
        except BaseException:
            conn.close()  # a half-used connection is never reused
            self._local.conn = None
            raise
        if reply.will_close:
            conn.close()
            self._local.conn = None
        return DirectReply(reply.status, reply.reason, content, url)


def _closed_by_peer(sock: Any) -> bool:
    """A kept-alive socket that is readable before a request was sent: the server closed it (or
    sent something unasked for); either way it is not reused."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


class DirectReply:
    """What web3's session manager reads of a response (``with``, ``raise_for_status``,
    ``content``), for :meth:`EnvironmentOnce.post`'s direct path."""

    __slots__ = ("content", "reason", "status_code", "url")

    def __init__(self, status_code: int, reason: str, content: bytes, url: str) -> None:
        self.status_code, self.reason, self.content, self.url = status_code, reason, content, url

    def __enter__(self) -> "DirectReply":
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def raise_for_status(self) -> None:
        if self.status_code >= 400:
            import requests

            raise requests.HTTPError(f"{self.status_code} {self.reason} for url: {self.url}", response=self)

    def json(self) -> Any:
        return json.loads(self.content)


def _is_anvil(w3: Web3) -> bool:
    """anvil offers WebSocket on its HTTP port and synchronous sends; other nodes get the
    portable path (HTTP polling, send then receipt)."""
    try:
        return "anvil" in str(w3.client_version).lower()
    except Exception:  # noqa: BLE001
        return False


class _SubscriptionThread:
    """A WebSocket ``eth_subscribe`` read on a thread of its own: :meth:`start` waits up to 2 s
    for it to connect (``connected``), :meth:`stop` ends it. Subclasses name the subscription
    (``_params``) and take each pushed message (``_on_message``, raising :class:`_Unsubscribe`
    to end it); a refusal or any failure ends the thread, and the callers fall back."""

    _thread_name = "subscription"
    _what = "subscription"              #: for the log: what it is
    _fallback = "polling only"          #: for the log: what the callers do without it
    _max_size: int | None = 2 ** 20     #: the largest message read (websockets' default); larger ends it
    _decode = True                      #: messages as str (else bytes)

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.connected = threading.Event()

    def start(self) -> Any:
        self._thread = threading.Thread(target=self._run, name=self._thread_name, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 2.0
        # until it connects, gives up (a refusal, no WebSocket: the thread ends), or 2 s pass
        while not self.connected.wait(0.01) and self._thread.is_alive() and time.monotonic() < deadline:
            pass
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=2.0)

    def _params(self) -> list[Any]:  # pragma: no cover - interface
        raise NotImplementedError

    def _on_message(self, message: Any) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def _run(self) -> None:
        from websockets.sync.client import connect

        try:
            with connect(self.ws_url, open_timeout=2.0, max_size=self._max_size) as ws:
                ws.send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_subscribe", "params": self._params()}))
                reply = json.loads(ws.recv(timeout=2.0))
                if "error" in reply:
                    log.info("%s refused (%s); %s", self._what, reply["error"], self._fallback)
                    return
                self.connected.set()
                while not self._stop.is_set():
                    try:
                        message = ws.recv(timeout=0.2, decode=self._decode)
                    except TimeoutError:
                        continue
                    try:
                        self._on_message(message)
                    except _Unsubscribe as end:
                        log.info("%s; %s", end, self._fallback)
                        return
                    except Exception as exc:  # noqa: BLE001 - a bad push must not end the thread
                        log.warning("pushed message of the %s not handled: %s", self._what, exc)
        except Exception as exc:  # noqa: BLE001 - any failure falls back
            log.info("%s unavailable at %s (%s); %s", self._what, self.ws_url, exc, self._fallback)
        finally:
            self.connected.clear()


class _Unsubscribe(Exception):
    """A push that says the subscription cannot serve its readers: it ends (they fall back)."""


class PushWakeup(_SubscriptionThread, Subscription):
    """Sets ``event`` whenever the node pushes a log of ``addresses`` (WebSocket eth_subscribe),
    and hands each pushed log (in web3's form, :func:`format_log`) to ``on_log`` when given."""

    def __init__(self, ws_url: str, addresses: str | Sequence[str],
                 on_log: Callable[[Any], None] | None = None, topic0: str | Sequence[str] | None = None) -> None:
        self.ws_url = ws_url
        self.addresses = [addresses] if isinstance(addresses, str) else list(addresses)
        self.topic0 = topic0
        self.on_log = on_log
        self.event = threading.Event()
        super().__init__()

    _thread_name = "push-wakeup"
    _what = "push subscription"

    def _params(self) -> list[Any]:
        criteria: dict[str, Any] = {"address": self.addresses}
        if self.topic0:  # one topic, or a list: any of them
            criteria["topics"] = [self.topic0 if isinstance(self.topic0, str) else list(self.topic0)]
        return ["logs", criteria]

    def _on_message(self, message: str) -> None:
        wake = True
        if self.on_log is not None:
            try:
                wake = self.on_log(format_log(json.loads(message)["params"]["result"])) is not False
            except Exception as exc:  # noqa: BLE001 - a bad push must not end the thread
                log.warning("pushed log not handled: %s", exc)
        if wake:
            self.event.set()


#: Largest pushed pending transaction read (bytes of JSON): far above an inline input's or result's.
MAX_PENDING_PUSH = 8 * 1024 * 1024


class PendingCalls(_SubscriptionThread):
    """The calldata of pending transactions to ``addresses``, as the node pushes them
    (``eth_subscribe("newPendingTransactions", true)``, full transactions), kept by hash in the
    form of :meth:`RpcChain.transaction_call` for a reader that would fetch a transaction's
    calldata once its log arrives: the node reads a request's inline input, a requester its
    delivery, without that round trip (0.7 ms each on anvil).

    What is taken here is checked as a fetched call is: the reader asks for the hash its log
    names, and the calldata must hash to the commitment the chain recorded, or the reader fetches
    it by hash after all; a node that pushes something else costs a fetch, never a wrong read. A
    transaction that never reaches the reader (replaced, dropped) is forgotten among the last
    ``capacity``. A node that pushes only hashes (ignoring ``true``) ends the subscription: the
    readers fetch, as without one."""

    def __init__(self, ws_url: str, addresses: str | Sequence[str], capacity: int = 1024) -> None:
        import collections

        self.ws_url, self.capacity = ws_url, int(capacity)
        addresses = [addresses] if isinstance(addresses, str) else list(addresses)
        # matched on the raw message before it is parsed: the chain's other transactions cost a scan
        self._needles = [a.lower()[2:].encode() for a in addresses]
        self._calls: collections.OrderedDict[bytes, dict[str, Any]] = collections.OrderedDict()
        self._lock = threading.Lock()
        self.taken = 0  # reads it answered
        super().__init__()

    _thread_name = "pending-calls"
    _what = "pending-transaction subscription"
    _fallback = "calldata read by hash"
    _max_size = MAX_PENDING_PUSH  # a larger push ends it: the readers fetch, as without one
    _decode = False

    def _params(self) -> list[Any]:
        return ["newPendingTransactions", True]

    def take(self, tx_hash: Any) -> dict[str, Any] | None:
        """The pushed call of ``tx_hash`` (and forget it), or None when none was pushed."""
        with self._lock:
            call = self._calls.pop(bytes(HexBytes(tx_hash)), None)
        self.taken += call is not None
        return call

    def __len__(self) -> int:
        return len(self._calls)

    def _on_message(self, message: bytes) -> None:
        if len(message) < 200:  # a full transaction is longer: a hash, or nothing this reads
            if isinstance(json.loads(message).get("params", {}).get("result"), str):
                raise _HashesOnly()
            return
        lowered = message.lower()
        if not any(needle in lowered for needle in self._needles):
            return  # another contract's transaction: not parsed
        tx = json.loads(message)["params"]["result"]
        if not isinstance(tx, dict):
            raise _HashesOnly()
        to = tx.get("to")
        if not to or to.lower()[2:].encode() not in self._needles:
            return  # an address of ours elsewhere in the transaction
        data = tx.get("input") or tx.get("data") or "0x"
        key = bytes.fromhex(tx["hash"][2:])
        call = {"hash": HexBytes(key), "from": to_checksum_address(tx["from"]), "to": to_checksum_address(to),
                "input": bytes.fromhex(data[2:])}
        with self._lock:
            self._calls[key] = call
            while len(self._calls) > self.capacity:
                self._calls.popitem(last=False)


class _HashesOnly(_Unsubscribe):
    """The node pushed a pending transaction's hash, not the transaction."""

    def __init__(self) -> None:
        super().__init__("the node pushes pending transactions as hashes only")


# --- JSON-RPC results into web3's form -----------------------------------------------------------

_INT = ("blockNumber", "transactionIndex", "logIndex", "gasUsed", "cumulativeGasUsed", "effectiveGasPrice",
        "status", "type", "blobGasUsed", "blobGasPrice")
_BYTES = ("blockHash", "transactionHash", "data", "logsBloom", "root")
_ADDRESS = ("address", "from", "to", "contractAddress")


def _field(key: str, value: Any) -> Any:
    if value is None:
        return None
    if key in _INT:
        return int(value, 16) if isinstance(value, str) else int(value)
    if key in _BYTES:
        return HexBytes(value)
    if key in _ADDRESS:
        return to_checksum_address(value)
    return value


def format_log(raw: dict[str, Any]) -> AttributeDict:
    """A log as JSON-RPC sends it (hex strings) in web3's form."""
    entry = {key: _field(key, value) for key, value in raw.items() if key != "topics"}
    entry["topics"] = [HexBytes(t) for t in raw.get("topics") or []]
    entry.setdefault("removed", False)
    return AttributeDict(entry)


def format_receipt(raw: dict[str, Any]) -> AttributeDict:
    """A receipt as JSON-RPC sends it in web3's form (its logs too)."""
    receipt = {key: _field(key, value) for key, value in raw.items() if key != "logs"}
    receipt["logs"] = [format_log(entry) for entry in raw.get("logs") or []]
    return AttributeDict(receipt)
