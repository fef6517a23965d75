"""JSON-RPC results (the sync receipt, pushed logs) into web3's form without web3's private
formatters; revert data into custom errors."""

from __future__ import annotations

from eth_abi import encode
from eth_utils import function_signature_to_4byte_selector
from hexbytes import HexBytes

from splitseal.chain.revert import ErrorDecoder
from splitseal.chain.rpc import format_log, format_receipt

ADDRESS = "0x5fbdb2315678afecb367f032d93f642f64180aa3"
TOPIC = "0x" + "ab" * 32
TX = "0x" + "cd" * 32

RAW_LOG = {"address": ADDRESS, "topics": [TOPIC, "0x" + "00" * 31 + "07"], "data": "0x0102",
           "blockNumber": "0x1a", "blockHash": "0x" + "ef" * 32, "transactionHash": TX,
           "transactionIndex": "0x0", "logIndex": "0x3", "removed": False}


def test_a_pushed_log_is_in_web3_form():
    entry = format_log(RAW_LOG)
    assert entry["address"] == "0x5FbDB2315678afecb367f032d93F642f64180aa3"
    assert entry["topics"] == [HexBytes(TOPIC), HexBytes("0x" + "00" * 31 + "07")]
    assert entry["data"] == HexBytes("0x0102")
    assert (entry["blockNumber"], entry["logIndex"], entry["transactionIndex"]) == (26, 3, 0)
    assert entry["transactionHash"] == HexBytes(TX) and entry.removed is False


def test_a_sync_receipt_is_in_web3_form():
    receipt = format_receipt({"transactionHash": TX, "blockNumber": "0x1a", "status": "0x1", "gasUsed": "0x5208",
                              "contractAddress": None, "from": ADDRESS, "to": ADDRESS, "type": "0x2",
                              "logs": [RAW_LOG]})
    assert receipt["status"] == 1 and receipt["gasUsed"] == 21000 and receipt["blockNumber"] == 26
    assert receipt["contractAddress"] is None and receipt["to"] == "0x5FbDB2315678afecb367f032d93F642f64180aa3"
    assert receipt["transactionHash"].to_0x_hex() == TX
    assert receipt["logs"][0]["logIndex"] == 3


def test_revert_data_decodes_into_the_custom_error_with_arguments():
    abi = [{"type": "error", "name": "Late", "inputs": [{"name": "id", "type": "uint256"},
                                                         {"name": "who", "type": "address"}]}]
    data = function_signature_to_4byte_selector("Late(uint256,address)") + encode(["uint256", "address"], [7, ADDRESS])
    error = ErrorDecoder([abi]).error(data, "respond")
    assert (error.error_name, error.function, error.raw) == ("Late", "respond", data)
    assert error.error_args == {"id": 7, "who": "0x5FbDB2315678afecb367f032d93F642f64180aa3"}
    assert ErrorDecoder([]).decode(b"").name == "EmptyRevert"
    assert ErrorDecoder([]).decode(bytes.fromhex("08c379a0") + encode(["string"], ["no"])).args == {"message": "no"}
