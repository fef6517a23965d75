"""Accounts from configuration: a hex private key, or an encrypted JSON keystore (eth-account's
format, as `cast wallet` and geth write it) with its password in a file or an environment
variable. Every malformed input is a :class:`ConfigError` that says which setting is wrong."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from splitseal.errors import ConfigError

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

#: Environment variable holding a keystore's password when no password file is configured.
PASSWORD_ENV = "SPLITSEAL_KEYSTORE_PASSWORD"


def account_from(*, key: str = "", keystore: str = "", password_file: str = "", what: str) -> "LocalAccount | None":
    """The account configured by ``key`` (hex) or ``keystore`` (a JSON file); None if neither.
    ``what`` names the setting in errors (e.g. ``[chain].admin_key``)."""
    from eth_account import Account

    if key and keystore:
        raise ConfigError(f"{what}: give a key or a keystore, not both")
    if key:
        text = key.strip()
        raw = text[2:] if text.lower().startswith("0x") else text
        if len(raw) != 64 or any(c not in "0123456789abcdefABCDEF" for c in raw):
            raise ConfigError(f"{what} must be a 32-byte private key in hex (64 hex digits, 0x optional); "
                              f"got {len(raw)} characters")
        return Account.from_key("0x" + raw)
    if not keystore:
        return None
    path = Path(keystore).expanduser()
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{what}: keystore {path} does not exist") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{what}: keystore {path} is not a JSON keystore ({exc})") from None
    if password_file:
        try:
            password = Path(password_file).expanduser().read_text().rstrip("\n")
        except OSError as exc:
            raise ConfigError(f"{what}: password file {password_file} cannot be read ({exc})") from None
    elif PASSWORD_ENV in os.environ:
        password = os.environ[PASSWORD_ENV]
    else:
        raise ConfigError(f"{what}: keystore {path} needs its password: set [chain].keystore_password_file "
                          f"or {PASSWORD_ENV}")
    try:
        return Account.from_key(Account.decrypt(document, password))
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{what}: keystore {path} does not open with that password ({exc})") from None
