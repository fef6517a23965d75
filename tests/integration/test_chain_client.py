"""The chain interface on both backends: decoded reverts (call and replayed transaction), the one
chunked getLogs and its errors, pushed logs, the nonce resync, the test cheats."""

from __future__ import annotations

import os
import threading
from dataclasses import replace

import pytest

from splitseal.chain import event_topic
from splitseal.errors import ChainError, ContractRevertError


@pytest.fixture
def floor(any_chain):
    """A small contract with custom errors that carry arguments (RoundTripFloor)."""
    return any_chain.deploy("RoundTripFloor", sender=any_chain.accounts[0])


def _request(chain, floor) -> int:
    receipt = chain.transact(floor.functions.request(os.urandom(32)), sender=chain.accounts[5], gas=100_000)
    return int(chain.events(receipt, floor, "Requested")[0]["requestId"])


def test_a_reverting_call_is_the_custom_error_with_its_arguments(any_chain, floor):
    with pytest.raises(ContractRevertError) as caught:
        any_chain.call(floor.functions.respond(424242, b"\x01" * 32), sender=any_chain.accounts[5].address)
    assert caught.value.error_name == "RoundTripFloorUnknownRequest"
    assert caught.value.error_args == {"requestId": 424242}
    assert isinstance(caught.value.raw, bytes) and len(caught.value.raw) == 36  # selector + one word


def test_a_reverted_transaction_is_replayed_into_its_custom_error(any_chain, floor):
    request_id = _request(any_chain, floor)
    any_chain.transact(floor.functions.respond(request_id, b"\x01" * 32), sender=any_chain.accounts[9], gas=100_000)
    with pytest.raises(ContractRevertError) as caught:
        any_chain.transact(floor.functions.respond(request_id, b"\x02" * 32), sender=any_chain.accounts[9],
                           gas=100_000)
    assert caught.value.error_name == "RoundTripFloorAlreadyAnswered"
    assert caught.value.error_args == {"requestId": request_id}
    assert caught.value.function == "respond"


def test_a_reverting_constructor_is_decoded(any_chain):
    with pytest.raises(ContractRevertError) as caught:
        any_chain.deploy("BackboneExecution", any_chain.accounts[0].address, "0x" + "00" * 20,
                         sender=any_chain.accounts[0])
    assert caught.value.error_name == "BackboneExecutionZeroAddress"


def test_chunked_logs_equal_one_query_and_filter_indexed_arguments(any_chain, floor):
    first = any_chain.block_number() + 1
    ids = [_request(any_chain, floor) for _ in range(4)]
    whole = any_chain.get_logs(floor, "Requested", first)
    assert [int(e["args"]["requestId"]) for e in whole] == ids
    chunked = replace(any_chain.config, max_log_range=1)
    saved, any_chain.config = any_chain.config, chunked
    try:
        assert any_chain.get_logs(floor, "Requested", first) == whole
        assert len(any_chain.logs(floor.address, [], first)) == 4
        # past the head is clamped, not an error
        assert any_chain.get_logs(floor, "Requested", first, any_chain.block_number() + 100) == whole
    finally:
        any_chain.config = saved
    picked = any_chain.get_logs(floor, "Requested", first, argument_filters={"requestId": ids[2]})
    assert [int(e["args"]["requestId"]) for e in picked] == [ids[2]]


def test_transaction_call_is_what_the_transaction_called_on_both_backends(any_chain, floor):
    receipt = any_chain.transact(floor.functions.request(b"\x07" * 32), sender=any_chain.accounts[5], gas=100_000)
    call = any_chain.transaction_call(receipt["transactionHash"])
    full = any_chain.transaction(receipt["transactionHash"])
    assert call == {"hash": full["hash"], "from": full["from"], "to": full["to"], "input": bytes(full["input"])}
    assert call["to"] == floor.address and call["from"] == any_chain.accounts[5].address
    assert floor.decode_function_input(call["input"])[1] == {"payload": b"\x07" * 32}
    with pytest.raises(ChainError):
        any_chain.transaction_call("0x" + "ab" * 32)


def test_pending_calls_hold_what_transactions_to_the_addresses_call_where_the_chain_pushes_them(any_chain, floor):
    """anvil pushes full pending transactions: a transaction to the watched contract is held,
    as transaction_call reads it once mined, and taken once; one to another contract is not. The
    embedded chain, and a chain configured without them, push none (None: readers fetch)."""
    import time

    if any_chain.url is None:
        assert any_chain.pending_calls(floor.address) is None
        return
    other = any_chain.deploy("RoundTripFloor", sender=any_chain.accounts[0])
    saved = any_chain.config
    any_chain.config = replace(saved, pending_transactions=False)
    try:
        assert any_chain.pending_calls(floor.address) is None
    finally:
        any_chain.config = saved
    pending = any_chain.pending_calls(floor.address)
    assert pending is not None and pending.connected.is_set()
    try:
        mine = any_chain.transact(floor.functions.request(b"\x07" * 32), sender=any_chain.accounts[5], gas=100_000)
        theirs = any_chain.transact(other.functions.request(b"\x08" * 32), sender=any_chain.accounts[5], gas=100_000)
        deadline = time.monotonic() + 5
        while len(pending) < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.1)  # the other contract's transaction, had it been kept, would be in by now
        assert pending.take(theirs["transactionHash"]) is None
        call = pending.take(mine["transactionHash"])
        assert call == any_chain.transaction_call(mine["transactionHash"])
        assert pending.take(mine["transactionHash"]) is None and pending.taken == 1 and len(pending) == 0
    finally:
        pending.stop()


def test_pending_calls_skip_what_they_cannot_use_and_stay_bounded():
    """Without the network: a push that names none of the addresses is not parsed, a hash-only
    push ends the subscription (readers fetch), the held calls stay within their capacity."""
    import json

    from splitseal.chain.rpc import PendingCalls, _HashesOnly

    watched = "0x" + "ab" * 20
    pending = PendingCalls("ws://127.0.0.1:1", watched, capacity=2)

    def push(result) -> bytes:
        return json.dumps({"jsonrpc": "2.0", "method": "eth_subscription", "params": {"result": result}}).encode()

    pending._on_message(push({"hash": "0x" + "11" * 32, "to": "0x" + "cd" * 20, "from": "0x" + "cd" * 20,
                        "input": "0x" + "ff" * 200}))  # another contract's: skipped unparsed
    with pytest.raises(_HashesOnly):
        pending._on_message(push("0x" + "11" * 32))
    for i in range(3):
        pending._on_message(push({"hash": "0x" + f"{i:02x}" * 32, "from": "0x" + "cd" * 20, "to": watched.upper().replace("X", "x"),
                            "input": "0x" + "ee" * 4}))
    pending._on_message(push({"hash": "0x" + "99" * 32, "from": watched, "to": "0x" + "cd" * 20, "input": "0x"}))
    assert len(pending) == 2 and pending.take("0x" + "00" * 32) is None  # the oldest went
    assert pending.take("0x" + "02" * 32)["input"] == b"\xee" * 4
    assert pending.take("0x" + "99" * 32) is None  # the address was its sender, not its recipient


def test_a_refused_subscription_gives_up_at_once_and_readers_fetch():
    """A node that refuses a subscription (or has no WebSocket) is told apart from a slow one:
    start returns as soon as the subscription's thread gave up, not after its 2 s wait."""
    import json
    import time

    from websockets.sync.server import serve

    from splitseal.chain.rpc import PendingCalls, PushWakeup

    def refuse(ws):
        request = json.loads(ws.recv())
        ws.send(json.dumps({"jsonrpc": "2.0", "id": request["id"], "error": {"code": -32601, "message": "no"}}))

    with serve(refuse, "127.0.0.1", 0) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"ws://127.0.0.1:{server.socket.getsockname()[1]}"
        for subscription in (PendingCalls(url, "0x" + "ab" * 20), PushWakeup(url, "0x" + "ab" * 20),
                             PendingCalls("ws://127.0.0.1:1", "0x" + "ab" * 20)):
            started = time.monotonic()
            subscription.start()
            assert not subscription.connected.is_set()
            assert time.monotonic() - started < 1.5  # gave up, not timed out
            subscription.stop()
        server.shutdown()


def test_embedded_logs_from_its_index_equal_eth_testers_own(chain):
    """The embedded chain answers getLogs from an index of what it mined (eth-tester scans back
    from the head for each transaction): the same answers, across a snapshot's revert too."""
    floor = chain.deploy("RoundTripFloor", sender=chain.accounts[0])
    first = chain.block_number() + 1
    ids = [_request(chain, floor) for _ in range(3)]
    chain.transact(floor.functions.respond(ids[1], b"\x01" * 32), sender=chain.accounts[9], gas=100_000)
    requested, responded = (event_topic(floor, name) for name in ("Requested", "Responded"))
    id_topic = "0x" + ids[1].to_bytes(32, "big").hex()
    queries = [(floor.address, [], first, None), (None, [], 0, None), ([floor.address], [requested], first, None),
               (floor.address, [[requested, responded], id_topic], first, None), (floor.address, [None, id_topic], 0, None),
               (floor.address, [], first + 1, first + 1), ("0x" + "11" * 20, [], 0, None)]

    def reference(addresses, topics, start, end):
        criteria = {"fromBlock": start, "toBlock": chain.block_number() if end is None else end, "topics": topics}
        if addresses is not None:
            criteria["address"] = addresses
        return list(chain._w3.eth.get_logs(criteria))

    for query in queries:
        assert chain.logs(*query) == reference(*query), query
    assert len(chain.logs(floor.address, [None, id_topic], first)) == 2  # its request and its response
    snap = chain.snapshot()
    chain.transact(floor.functions.request(b"\x03" * 32), sender=chain.accounts[5], gas=100_000)
    assert len(chain.logs(floor.address, [requested], first)) == 4
    chain.revert(snap)
    assert len(chain.logs(floor.address, [requested], first)) == 3
    assert not chain.logs(floor.address, [None, "0x" + (ids[-1] + 1).to_bytes(32, "big").hex()], 0)
    _request(chain, floor)  # the block numbers after the revert are used again
    for query in queries:
        assert chain.logs(*query) == reference(*query), query


@pytest.mark.integration
def test_rpc_logs_without_web3s_formatters_equal_web3s(anvil_chain):
    chain = anvil_chain
    floor = chain.deploy("RoundTripFloor", sender=chain.accounts[0])
    first = chain.block_number() + 1
    ids = [_request(chain, floor) for _ in range(3)]
    chain.transact(floor.functions.respond(ids[0], b"\x01" * 32), sender=chain.accounts[9], gas=100_000)
    requested = event_topic(floor, "Requested")
    for addresses, topics in ((floor.address, []), ([floor.address], [requested]),
                              (floor.address, [None, "0x" + ids[0].to_bytes(32, "big").hex()]),
                              (floor.address, [[bytes.fromhex(requested[2:])]])):
        query = {"address": [addresses] if isinstance(addresses, str) else addresses, "topics": topics,
                 "fromBlock": first, "toBlock": chain.block_number()}
        ours = chain.logs(addresses, topics, first)
        assert ours and ours == list(chain._w3.eth.get_logs(query)), topics
    with pytest.raises(ChainError):
        chain.logs(floor.address, ["0xnot-a-topic"], first)


def test_subscribe_pushes_logs_in_web3_form_on_both_backends(any_chain, floor):
    got: list = []
    seen = threading.Event()

    def on_log(entry):
        got.append(entry)
        seen.set()

    sub = any_chain.subscribe(floor.address, on_log=on_log)
    assert sub is not None and sub.connected.is_set()
    try:
        request_id = _request(any_chain, floor)
        assert seen.wait(5.0)
    finally:
        sub.stop()
    entry = got[0]
    assert entry["address"] == floor.address and isinstance(entry["blockNumber"], int)
    assert int(floor.events.Requested().process_log(entry)["args"]["requestId"]) == request_id


@pytest.mark.integration
def test_url_states_whether_other_processes_reach_the_chain(chain, anvil_chain):
    assert chain.url is None
    assert anvil_chain.url.startswith("http://")


def test_cheats_on_both_backends(any_chain):
    any_chain.mine()  # a timestamp the fixture set for the next block is used up
    snap = any_chain.snapshot()
    head = any_chain.get_block("latest")
    any_chain.increase_time(1000)
    assert int(any_chain.get_block("latest")["timestamp"]) >= int(head["timestamp"]) + 999
    any_chain.mine(2)
    any_chain.set_next_block_timestamp(int(any_chain.get_block("latest")["timestamp"]) + 500)
    any_chain.mine()
    latest = any_chain.get_block("latest")
    assert int(latest["timestamp"]) >= int(head["timestamp"]) + 1499
    any_chain.revert(snap)
    assert any_chain.block_number() == head["number"]


@pytest.mark.integration
def test_the_sender_resyncs_its_nonce_after_another_process_used_the_account(anvil_chain, caplog):
    import logging

    from splitseal.chain import connect

    caplog.set_level(logging.INFO, logger="splitseal.chain.sender")

    floor = anvil_chain.deploy("RoundTripFloor", sender=anvil_chain.accounts[0])
    account = anvil_chain.accounts[6]
    anvil_chain.transact(floor.functions.request(b"\x01" * 32), sender=account, gas=100_000)  # nonce cached
    other = connect(anvil_chain.url)  # a second process, as far as nonces go
    try:
        other.transact(other.contract("RoundTripFloor", floor.address).functions.request(b"\x02" * 32),
                       sender=account, gas=100_000)
    finally:
        other.close()
    receipt = anvil_chain.transact(floor.functions.request(b"\x03" * 32), sender=account, gas=100_000)
    assert receipt["status"] == 1
    assert "reading it again" in caplog.text  # the stale nonce was refused, then read again
    assert anvil_chain.transaction_count(account.address) == anvil_chain.transaction(
        receipt["transactionHash"])["nonce"] + 1


@pytest.mark.integration
def test_logs_raise_chain_error_when_the_node_is_gone():
    from splitseal.chain import AnvilNode, LogDecoder, connect, logs_with_first_topic, logs_with_topic0

    node = AnvilNode.start()
    try:
        chain = connect(node.http_url)
        floor = chain.deploy("RoundTripFloor", sender=chain.accounts[0])
    finally:
        node.stop()
    decoder = LogDecoder([("RoundTripFloor", floor)])
    with pytest.raises(ChainError):
        chain.logs(floor.address, [], 0, 10)
    with pytest.raises(ChainError):
        chain.get_logs(floor, "Requested", 0)
    with pytest.raises(ChainError):
        logs_with_first_topic(chain, decoder, 1, 0)
    with pytest.raises(ChainError):
        logs_with_topic0(chain, decoder, ["Requested"], 0, 10)
    chain.close()


def test_connect_to_a_dead_port_is_a_chain_error():
    from splitseal.chain import connect, free_port

    with pytest.raises(ChainError, match="cannot reach"):
        connect(f"http://127.0.0.1:{free_port()}")
