"""The lean calldata codec (splitseal.chain.codec) against web3 for the contracts' functions: the
same calldata, the same decoded arguments, the same signed transaction through the sender's
fast path; web3 still builds what the codec does not take."""

from __future__ import annotations

import os

import pytest
from eth_account import Account
from web3 import Web3

from splitseal.chain.artifacts import load_artifact
from splitseal.chain.calldata import _as_tuple
from splitseal.chain.codec import FunctionCodec, codec_of
from splitseal.chain.sender import ContractCall, build_transaction, sign_transaction

ADDRESS = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
REQUESTER = "0x90F79bf6EB2c4f870365E785982E1f101E93b906"


def _contract(name: str):
    return Web3().eth.contract(address=ADDRESS, abi=load_artifact(name)["abi"])


def _claim(request_id: int) -> tuple:
    return (request_id, os.urandom(32), os.urandom(32), REQUESTER, os.urandom(32), ADDRESS, os.urandom(32), 7,
            "0x" + "00" * 20, 0, True, os.urandom(32))


def _delivery(request_id: int) -> tuple:
    return (_claim(request_id), os.urandom(32), os.urandom(406), "", bytes(32), os.urandom(65))


CALLS = [
    ("BackboneExecution", "requestInference", (os.urandom(32), 1, os.urandom(32), os.urandom(1102), "", os.urandom(32), 600)),
    ("BackboneExecution", "requestInferenceWithCallback",
     (os.urandom(32), 2, os.urandom(32), b"", "blob://x", os.urandom(32), 600, REQUESTER, 100_000)),
    ("BackboneExecution", "deliverResult", _delivery(5)),
    ("BackboneExecution", "deliverResults", ([_delivery(6), _delivery(7)],)),
    ("EnclaveTransfer", "reportFailure", (9, 3, "no input")),
]


def _plain(value):
    """Structs and arrays as nested tuples (web3 gives lists or tuples, by version)."""
    if isinstance(value, (list, tuple, dict)):
        return tuple(_plain(v) for v in _as_tuple(value))
    return value


@pytest.mark.parametrize("contract_name,function,args", CALLS, ids=[c[1] for c in CALLS])
def test_calldata_equals_web3s_and_decodes_to_the_same_arguments(contract_name, function, args):
    contract = _contract(contract_name)
    codec = codec_of(contract.address, contract.abi)
    ours = codec.encode(function, args)
    web3s = bytes.fromhex(contract.encode_abi(function, list(args))[2:])
    assert ours == web3s
    name, decoded = codec.decode(ours)
    fn, expected = contract.decode_function_input(ours)
    assert name == fn.fn_name == function
    assert {k: _plain(v) for k, v in decoded.items()} == {k: _plain(v) for k, v in expected.items()}


def test_decoded_addresses_are_checksummed_inside_structs_and_arrays():
    contract = _contract("BackboneExecution")
    codec = codec_of(contract.address, contract.abi)
    _, args = codec.decode(codec.encode("deliverResults", ([_delivery(1)],)))
    claim = args["deliveries"][0][0]
    assert claim[3] == REQUESTER and claim[5] == ADDRESS  # not lower-case


def test_an_unknown_selector_or_bad_arguments_are_value_errors():
    codec = FunctionCodec(_contract("EnclaveTransfer").abi)
    with pytest.raises(ValueError, match="selector 0xdeadbeef"):
        codec.decode(bytes.fromhex("deadbeef") + bytes(64))
    data = codec.encode("reportFailure", (1, 2, "x"))
    with pytest.raises(ValueError, match="reportFailure: arguments do not decode"):
        codec.decode(data[:40])


def test_the_senders_fast_path_signs_the_very_transaction_web3_builds():
    account = Account.create()
    fields = {"from": account.address, "nonce": 3, "gas": 400_000, "value": 0, "chainId": 31337,
              "maxFeePerGas": 2 * 10**9, "maxPriorityFeePerGas": 10**9}
    for contract_name, function, args in CALLS:
        fn = getattr(_contract(contract_name).functions, function)(*args)
        fast, slow = build_transaction(fn, dict(fields)), fn.build_transaction(dict(fields))
        assert account.sign_transaction(fast).raw_transaction == account.sign_transaction(slow).raw_transaction
        keys: dict = {}
        assert sign_transaction(account, fast, keys) == bytes(account.sign_transaction(slow).raw_transaction)
        assert set(keys) == {account.address}  # the sender's own serialisation and signature took it


@pytest.mark.parametrize("nonce,gas,value,data", [(0, 21_000, 0, b""), (2**32, 30_000_000, 10**18, b"\x00" * 3),
                                                  (127, 128, 1, "0x" + "ab" * 1100)])
def test_the_senders_signature_equals_eth_accounts_for_edge_values(nonce, gas, value, data):
    account = Account.create()
    tx = {"from": account.address, "nonce": nonce, "gas": gas, "value": value, "chainId": 1,
          "maxFeePerGas": 10**12, "maxPriorityFeePerGas": 0, "to": REQUESTER, "data": data}
    keys: dict = {}
    assert sign_transaction(account, tx, keys) == bytes(account.sign_transaction(tx).raw_transaction)
    assert keys  # signed by the fast path


def test_what_the_senders_signer_does_not_serialise_eth_account_signs():
    account = Account.create()
    base = {"from": account.address, "nonce": 1, "gas": 50_000, "value": 0, "chainId": 31337}
    legacy = {**base, "gasPrice": 10**9, "to": REQUESTER, "data": b""}
    creation = {**base, "maxFeePerGas": 10**9, "maxPriorityFeePerGas": 1, "data": "0x6000"}
    access = {**base, "maxFeePerGas": 10**9, "maxPriorityFeePerGas": 1, "to": REQUESTER, "data": b"",
              "accessList": [{"address": REQUESTER, "storageKeys": []}]}
    for tx in (legacy, creation, access):
        keys: dict = {}
        assert sign_transaction(account, tx, keys) == bytes(account.sign_transaction(tx).raw_transaction)
        assert not keys  # eth-account signed it
    other = {**base, "from": REQUESTER, "maxFeePerGas": 10**9, "maxPriorityFeePerGas": 1, "to": REQUESTER}
    with pytest.raises(Exception):  # eth-account refuses another sender's transaction, as before
        sign_transaction(account, other, {})


def test_a_contract_call_builds_the_transaction_web3s_function_builds_and_makes_it_only_when_asked():
    fields = {"from": REQUESTER, "nonce": 4, "gas": 400_000, "value": 0, "chainId": 31337,
              "maxFeePerGas": 2 * 10**9, "maxPriorityFeePerGas": 10**9}
    for contract_name, function, args in CALLS:
        contract = _contract(contract_name)
        call = ContractCall(contract, function, *args)
        assert build_transaction(call, dict(fields)) == getattr(contract.functions, function)(*args).build_transaction(
            dict(fields))
        assert call._function is None  # the codec encoded it: web3's function was never made
    # arguments only web3 normalises (hex strings for bytes32): built by web3's function, made then
    as_hex = ("0x" + "11" * 32, 1, "0x" + "22" * 32, b"", "p", "0x" + "33" * 32, 60)
    contract = _contract("BackboneExecution")
    call = ContractCall(contract, "requestInference", *as_hex)
    assert build_transaction(call, dict(fields)) == contract.functions.requestInference(*as_hex).build_transaction(
        dict(fields))
    assert call._function is not None and call.fn_name == "requestInference"


def test_what_the_codec_does_not_take_is_built_by_web3():
    fields = {"from": REQUESTER, "nonce": 0, "gas": 100_000, "value": 0, "chainId": 31337,
              "maxFeePerGas": 2 * 10**9, "maxPriorityFeePerGas": 10**9}
    # a hex string where bytes32 is expected: eth_abi refuses it, web3 normalises it
    fn = _contract("EnclaveTransfer").functions.reportFailure(1, 2, "x")
    as_hex = _contract("BackboneExecution").functions.requestInference(
        "0x" + "11" * 32, 1, "0x" + "22" * 32, b"", "p", "0x" + "33" * 32, 60)
    assert build_transaction(as_hex, dict(fields)) == as_hex.build_transaction(dict(fields))
    assert build_transaction(fn, dict(fields))["data"] == fn.build_transaction(dict(fields))["data"]


def _value(abi_type: str):
    if abi_type.startswith("uint"):
        return int.from_bytes(os.urandom(int(abi_type[4:] or 256) // 8), "big")
    if abi_type.startswith("int"):
        return -int.from_bytes(os.urandom(int(abi_type[3:] or 256) // 8 - 1), "big")
    if abi_type == "address":
        return Web3.to_checksum_address(os.urandom(20))
    if abi_type == "bool":
        return True
    if abi_type == "string":
        return "reason: ü " + os.urandom(4).hex()
    if abi_type == "bytes":
        return os.urandom(70)
    return os.urandom(int(abi_type[5:]))  # bytesN


EVENTS = [(name, item) for name in ("BackboneExecution", "EnclaveTransfer", "ModelRegistry")
          for item in load_artifact(name)["abi"] if item.get("type") == "event"]


@pytest.mark.parametrize("contract_name,item", EVENTS, ids=[f"{n}.{i['name']}" for n, i in EVENTS])
def test_events_decode_as_web3s_process_log(contract_name, item):
    from eth_abi import encode
    from hexbytes import HexBytes
    from web3.datastructures import AttributeDict

    from splitseal.chain.codec import event_decoder
    from splitseal.chain.revert import _abi_type

    contract = _contract(contract_name)
    if any(i["type"].startswith("tuple") or i["type"].endswith("]") for i in item["inputs"]):
        pytest.skip("struct or array arguments: decoded by web3 itself")
    values = {i["name"]: _value(i["type"]) for i in item["inputs"]}
    signature = f"{item['name']}({','.join(_abi_type(i) for i in item['inputs'])})"
    topics = [HexBytes(Web3.keccak(text=signature))]
    for i in (i for i in item["inputs"] if i["indexed"]):
        v = values[i["name"]]
        topics.append(HexBytes(Web3.keccak(v if isinstance(v, bytes) else v.encode())) if i["type"] in ("string", "bytes")
                      else HexBytes(encode([i["type"]], [v])))
    data = [i for i in item["inputs"] if not i["indexed"]]
    raw = AttributeDict({"address": ADDRESS, "topics": topics, "data": HexBytes(encode([i["type"] for i in data],
                                                                                      [values[i["name"]] for i in data])),
                         "blockNumber": 12, "transactionHash": HexBytes(os.urandom(32)), "transactionIndex": 1,
                         "blockHash": HexBytes(os.urandom(32)), "logIndex": 4, "removed": False})
    ours = event_decoder(contract, item["name"])(raw)
    assert ours == getattr(contract.events, item["name"])().process_log(raw)
    assert list(ours["args"]) == list(getattr(contract.events, item["name"])().process_log(raw)["args"])
    if len(topics) > 1:
        with pytest.raises(Exception):  # noqa: B017 - a log of another shape is refused, as web3 refuses it
            event_decoder(contract, item["name"])(AttributeDict({**raw, "topics": topics[:1]}))


def test_the_hand_decoder_gives_eth_abis_values_for_the_request_and_the_delivery_and_leaves_the_rest_to_it():
    from eth_abi import decode as abi_decode

    from splitseal.chain.codec import _NotPlain

    taken = set()
    for contract_name, function, args in CALLS * 5:
        codec = codec_of(ADDRESS, load_artifact(contract_name)["abi"])
        fn = codec._by_name[function]
        data = codec.encode(function, args)[4:]
        if fn.plain is None:
            continue  # an array of structs (deliverResults): eth_abi's alone
        assert fn.plain.decode(data) == abi_decode(list(fn.types), data)
        taken.add(function)
    assert {"requestInference", "requestInferenceWithCallback", "deliverResult", "reportFailure"} <= taken
    codec = codec_of(ADDRESS, load_artifact("BackboneExecution")["abi"])
    fn = codec._by_name["requestInference"]
    data = bytearray(codec.encode("requestInference", CALLS[0][2])[4:])
    tampered = [bytes(data) + b"\x00" * 32,  # trailing bytes
                bytes(data[:-1]),  # short
                bytes(data[:-1]) + b"\x01",  # the inline input's padding not zero
                bytes(data[:32 * 3]) + (1).to_bytes(32, "big") + bytes(data[32 * 4:])]  # a pointer out of place
    for bad in tampered:
        with pytest.raises(_NotPlain):
            fn.plain.decode(bad)
        try:
            expected = ("ok", _plain(abi_decode(list(fn.types), bad)))
        except Exception:  # noqa: BLE001 - eth_abi refuses it
            expected = ("refused",)
        try:
            got = ("ok", _plain(tuple(codec.decode(fn.selector + bad)[1].values())))
        except ValueError:
            got = ("refused",)
        assert got[0] == expected[0]  # decoded or refused as eth_abi alone does
