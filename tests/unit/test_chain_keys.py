"""Accounts from configuration: hex keys and encrypted keystores, with clear errors; ETH_RPC_URL."""

from __future__ import annotations

import json

import pytest
from eth_account import Account

from splitseal.chain.keys import PASSWORD_ENV, account_from
from splitseal.config import load_config
from splitseal.errors import ConfigError

KEY = "0x" + "11" * 32


def test_a_hex_key_with_or_without_0x():
    assert account_from(key=KEY, what="k").address == Account.from_key(KEY).address
    assert account_from(key=KEY[2:], what="k").address == Account.from_key(KEY).address
    assert account_from(what="k") is None


@pytest.mark.parametrize("bad", ["0x1234", "zz" * 32, "0x" + "11" * 33])
def test_a_malformed_key_says_which_setting(bad):
    with pytest.raises(ConfigError, match=r"\[node\]\.account_key must be a 32-byte private key in hex"):
        account_from(key=bad, what="[node].account_key")


def test_an_encrypted_keystore_opens_with_its_password_file_or_env(tmp_path, monkeypatch):
    keystore = tmp_path / "key.json"
    keystore.write_text(json.dumps(Account.encrypt(KEY, "s3cret", iterations=2)))
    password = tmp_path / "pw"
    password.write_text("s3cret\n")
    expected = Account.from_key(KEY).address
    assert account_from(keystore=str(keystore), password_file=str(password), what="k").address == expected
    monkeypatch.setenv(PASSWORD_ENV, "s3cret")
    assert account_from(keystore=str(keystore), what="k").address == expected
    monkeypatch.setenv(PASSWORD_ENV, "wrong")
    with pytest.raises(ConfigError, match="does not open with that password"):
        account_from(keystore=str(keystore), what="k")
    monkeypatch.delenv(PASSWORD_ENV)
    with pytest.raises(ConfigError, match="needs its password"):
        account_from(keystore=str(keystore), what="k")
    with pytest.raises(ConfigError, match="does not exist"):
        account_from(keystore=str(tmp_path / "missing.json"), what="k")


def test_eth_rpc_url_is_the_chain_when_nothing_of_ours_says_otherwise():
    assert load_config(environ={"ETH_RPC_URL": "http://node:8545"}).chain.url == "http://node:8545"
    assert load_config(environ={"ETH_RPC_URL": "http://node:8545", "SPLITSEAL_CHAIN_URL": "anvil"}).chain.url == "anvil"
    assert load_config(environ={}).chain.url == "embedded"
