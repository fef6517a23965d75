"""Typed configuration: frozen dataclasses loaded from TOML, overridable by environment.

Precedence, lowest first: defaults here, the TOML file (``--config`` or ``SPLITSEAL_CONFIG``),
then ``SPLITSEAL_<SECTION>_<FIELD>`` environment variables (``SPLITSEAL_CHAIN_URL=anvil``).
The result is passed into constructors; nothing reads the environment behind their back.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .errors import ConfigError
from .protocol import ANSWER_DURABILITY

PROJECT_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class ChainConfig:
    #: "embedded" (in-process eth-tester), "anvil" (the node `splitseal chain up` started,
    #: or a new one), or an http(s):// or ws(s):// JSON-RPC URL.
    url: str = "embedded"
    #: Hex private key of the account that deploys and administers; default: a dev account.
    admin_key: str = ""
    #: Or an encrypted JSON keystore of that account (eth-account / geth / `cast wallet` format).
    admin_keystore: str = ""
    #: File holding the keystores' password (else $SPLITSEAL_KEYSTORE_PASSWORD).
    keystore_password_file: str = ""
    #: Blocks a log must be buried under before a listener acts on it.
    confirmations: int = 0
    #: Seconds between polls when the chain offers no push subscription.
    poll_interval: float = 0.05
    #: Seconds to wait for a receipt before giving up.
    receipt_timeout: float = 60.0
    #: Largest block range asked of eth_getLogs at once.
    max_log_range: int = 2000
    #: Read the calldata of pending transactions to the deployment's contracts as the node pushes
    #: them (``eth_subscribe("newPendingTransactions", true)``: anvil, geth) instead of by hash
    #: once mined: one round trip less per request for the node and for the requester. Off where
    #: the mempool is busy (every pending transaction of the chain crosses the WebSocket).
    pending_transactions: bool = True


@dataclass(frozen=True)
class EnclaveConfig:
    #: Unix socket the enclave process listens on.
    socket_path: str = "var/enclave/enclave.sock"
    #: Where sealed state and the platform root secret of the stand-in live.
    state_dir: str = "var/enclave"
    #: Debug enclaves are refused by the registry; on only for development.
    debug: bool = False
    product_id: int = 1
    security_version: int = 1
    #: Largest frame accepted on the socket, bytes.
    max_frame_bytes: int = 64 * 1024 * 1024
    #: Started as root, the enclave drops to this system user (created if missing), which alone
    #: owns the platform secret and the sealed state; empty: stay the starting user.
    user: str = ""
    #: Group allowed to connect to the socket (the node's group; mode 0660); empty: owner only.
    socket_group: str = ""
    #: When each answer's journal record reaches the disk (enclave/journal.py): "fsync" before
    #: the answer leaves; "background" right after (a flusher thread, while the delivery is
    #: sent); "write" when the OS writes it back. A record lost to a power loss makes restore
    #: refuse the state until the enclave is provisioned again; no answer is ever off the record.
    answer_durability: str = "background"

    def __post_init__(self) -> None:
        if self.answer_durability not in ANSWER_DURABILITY:
            raise ConfigError(f"[enclave].answer_durability = {self.answer_durability!r}: give \"fsync\" (each "
                              "answer on disk before it leaves), \"background\" (fsynced right after it "
                              "leaves; the default) or \"write\" (when the OS writes it back)")


@dataclass(frozen=True)
class NodeConfig:
    #: SQLite checkpoint of the inference node.
    db_path: str = "var/node/node.sqlite3"
    #: Directory that off-chain input blobs are read from (pointer scheme file://).
    blob_dir: str = "var/blobs"
    #: Transient failures (enclave restarting, chain unreachable) are retried until the request's
    #: deadline, waiting ``retry_backoff`` s, doubled per attempt up to ``retry_max_backoff`` s.
    retry_backoff: float = 0.2
    retry_max_backoff: float = 5.0
    #: Every ``keeper_interval`` s the node ends (``timeout()``) requests whose deadline passed:
    #: the node whose index is ``request_id % count`` at once, the others ``claim_grace`` s later.
    keeper_interval: float = 5.0
    #: Hex private key of the node's account (holds NODE_ROLE); default: development account 2.
    account_key: str = ""
    #: Or an encrypted JSON keystore of the node's account (password as for [chain]).
    account_keystore: str = ""
    #: Several nodes on one deployment: this node's index and their count. The node whose index
    #: is ``request_id % count`` claims a request at once, the others after ``claim_grace`` s.
    node_index: int = 0
    node_count: int = 1
    claim_grace: float = 2.0
    #: Deliver up to this many results per transaction (``deliverResults``: each item still
    #: signed by its enclave and bound to its request; a bad item is skipped, not the batch).
    #: 1 sends one ``deliverResult`` per request, the lowest latency; 16 costs about a third of
    #: the gas per result (docs/BENCHMARKS.md).
    delivery_batch: int = 1


@dataclass(frozen=True)
class MpcConfig:
    parties: int = 2
    fractional_bits: int = 16
    host: str = "127.0.0.1"
    base_port: int = 0
    state_dir: str = "var/mpc"


@dataclass(frozen=True)
class Config:
    chain: ChainConfig = field(default_factory=ChainConfig)
    enclave: EnclaveConfig = field(default_factory=EnclaveConfig)
    node: NodeConfig = field(default_factory=NodeConfig)
    mpc: MpcConfig = field(default_factory=MpcConfig)
    #: Root that relative paths in the other sections are resolved against.
    home: str = "."

    def path(self, relative: str) -> Path:
        """Resolve a configured path against ``home``."""
        p = Path(relative)
        return p if p.is_absolute() else Path(self.home) / p


def load_config(path: str | os.PathLike[str] | None = None,
                environ: Mapping[str, str] | None = None, **overrides: Any) -> Config:
    """Load the configuration.

    ``overrides`` are section dicts (``chain={"url": "anvil"}``) applied last, as the CLI does
    with its options.
    """
    environ = os.environ if environ is None else environ
    data: dict[str, Any] = {}
    path = path or environ.get("SPLITSEAL_CONFIG")
    if path:
        try:
            data = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist; pass an existing TOML file") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None

    file_home = data.pop("home", None)
    sections: dict[str, Any] = {}
    for f in dataclasses.fields(Config):
        if f.name == "home":
            continue
        section_cls = _section_type(f)
        raw = dict(data.pop(f.name, {}) or {})
        known = {sf.name: sf for sf in dataclasses.fields(section_cls)}
        unknown = set(raw) - set(known)
        if unknown:
            raise ConfigError(f"unknown key(s) {sorted(unknown)} in [{f.name}]; known: {sorted(known)}")
        for name, sf in known.items():
            env_key = f"SPLITSEAL_{f.name.upper()}_{name.upper()}"
            if env_key in environ:
                raw[name] = _coerce(env_key, environ[env_key], sf)
        if f.name == "chain" and "url" not in raw and environ.get("ETH_RPC_URL"):
            raw["url"] = environ["ETH_RPC_URL"]  # the Foundry convention, below our own settings
        raw.update(overrides.get(f.name, {}) or {})
        values = {k: _coerce(f"[{f.name}].{k}", v, known[k]) for k, v in raw.items()}
        sections[f.name] = section_cls(**values)
    home = str(overrides.get("home") or environ.get("SPLITSEAL_HOME") or file_home or ".")
    if data:
        raise ConfigError(f"unknown section(s) {sorted(data)} in config; known: chain, enclave, node, mpc, home")
    return Config(home=home, **sections)


def _section_type(f: dataclasses.Field[Any]) -> type:
    hint = typing.get_type_hints(Config)[f.name]
    return hint


def _coerce(where: str, value: Any, f: dataclasses.Field[Any]) -> Any:
    target = typing.get_type_hints(_owner_of(f))[f.name]
    if isinstance(target, types.UnionType):
        target = next(t for t in typing.get_args(target) if t is not type(None))
    try:
        if target is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        return target(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: {value!r} is not a valid {target.__name__}") from None


def _owner_of(f: dataclasses.Field[Any]) -> type:
    for cls in (ChainConfig, EnclaveConfig, NodeConfig, MpcConfig):
        if any(sf is f for sf in dataclasses.fields(cls)):
            return cls
    raise AssertionError(f.name)
