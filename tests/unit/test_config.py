from pathlib import Path

import pytest

from splitseal.config import Config, load_config
from splitseal.errors import ConfigError


def test_defaults_are_the_embedded_chain():
    config = load_config(environ={})
    assert config.chain.url == "embedded"
    assert config.enclave.debug is False


def test_toml_then_environment_then_overrides(tmp_path: Path):
    path = tmp_path / "splitseal.toml"
    path.write_text('[chain]\nurl = "http://127.0.0.1:9"\nconfirmations = 2\n[node]\nkeeper_interval = 7\n')
    env = {"SPLITSEAL_CHAIN_CONFIRMATIONS": "5", "SPLITSEAL_ENCLAVE_DEBUG": "yes"}
    config = load_config(path, environ=env, node={"keeper_interval": 9})
    assert config.chain.url == "http://127.0.0.1:9"
    assert config.chain.confirmations == 5
    assert config.enclave.debug is True
    assert config.node.keeper_interval == 9


@pytest.mark.parametrize("text, fragment", [
    ("[chain]\nurll = 'x'\n", "unknown key(s) ['urll'] in [chain]"),
    ("[chian]\n", "unknown section(s) ['chian']"),
    ("[chain]\nconfirmations = 'many'\n", "[chain].confirmations: 'many' is not a valid int"),
    ("[chain\n", "is not valid TOML"),
])
def test_bad_config_says_what_is_wrong(tmp_path: Path, text: str, fragment: str):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert fragment in str(info.value)


def test_bad_environment_value_is_named():
    with pytest.raises(ConfigError, match="SPLITSEAL_ENCLAVE_DEBUG"):
        load_config(environ={"SPLITSEAL_ENCLAVE_DEBUG": "perhaps"})


def test_missing_file_is_a_clear_error(tmp_path: Path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml", environ={})


def test_paths_resolve_against_home():
    config = Config(home="/srv/splitseal")
    assert config.path("var/node.db") == Path("/srv/splitseal/var/node.db")
    assert config.path("/abs/x") == Path("/abs/x")


def test_home_from_file_environment_and_override(tmp_path: Path):
    path = tmp_path / "c.toml"
    path.write_text('home = "/from/file"\n')
    assert load_config(path, environ={}).home == "/from/file"
    assert load_config(path, environ={"SPLITSEAL_HOME": "/from/env"}).home == "/from/env"
    assert load_config(path, environ={"SPLITSEAL_HOME": "/from/env"}, home="/given").home == "/given"
