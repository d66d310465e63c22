"""Bearer tokens: from ``AUTOPRUNE_TOKEN`` or a 0600 file under the runs root, checked in constant time; each
names an owner, and an owner marked ``:admin`` sees every run."""

from __future__ import annotations

import hmac
import ipaddress
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from search_spaces.ground.errors import ConfigError

TOKEN_ENV = "AUTOPRUNE_TOKEN"
TOKEN_FILE = ".token"
DEFAULT_OWNER = "default"
OWNER = re.compile(r"^[A-Za-z0-9_.-]+$")
ADMIN = ":admin"  # NAME:admin=TOKEN marks the owner NAME as an admin
_NAME = re.compile(rf"^([A-Za-z0-9_.-]+)({ADMIN})?$")


@dataclass(frozen=True)
class Caller:
    """Who a request comes from: the owner its token names, and whether that owner is an admin."""

    name: str
    admin: bool = False
    #: may reach runs whose damaged record names no owner: admins, or everyone on a server without admins
    reaches_unowned: bool = False

    def may_access(self, owner: str | None) -> bool:
        """Whether this caller may see and change a run of ``owner`` (None: a damaged record naming no one)."""
        return self.admin or owner == self.name or (owner is None and self.reaches_unowned)


def _entries(text: str) -> list[tuple[str, str, bool]]:
    """``(owner, token, admin)`` for each entry of ``token`` or ``name=token,name:admin=token`` (an unnamed
    token's owner is ``default``).

    An entry is named when the part before its first ``=`` is a name (letters, digits, ``_.-``, optionally
    followed by ``:admin``) and something other than ``=`` padding follows, so a base64 token ending in ``=`` is
    one unnamed token. No message shows a token.
    """
    entries = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        name, _, token = item.partition("=")
        named = _NAME.match(name.strip())
        owner, admin, token = (named.group(1), bool(named.group(2)), token.strip()) \
            if named and token.strip("= ") else (DEFAULT_OWNER, False, item)
        if len(token) < 16:
            raise ConfigError(f"{TOKEN_ENV}: each token must be 'TOKEN', 'NAME=TOKEN' or 'NAME:admin=TOKEN' with at "
                              f"least 16 characters, got one of {len(token)} characters for owner {owner!r}")
        entries.append((owner, token, admin))
    if not entries:
        raise ConfigError(f"{TOKEN_ENV} is set but holds no token")
    return entries


def parse_tokens(text: str) -> dict[str, str]:
    """Owners by token, from ``token`` or ``name=token,name:admin=token`` (see :func:`parse_admins`)."""
    return {token: owner for owner, token, _ in _entries(text)}


def parse_admins(text: str) -> frozenset[str]:
    """The owners ``text`` marks as admins (``NAME:admin=TOKEN``): they see and change every run."""
    return frozenset(owner for owner, _, admin in _entries(text) if admin)


def first_token(text: str) -> str:
    """The token of the first entry of ``text`` (as :func:`parse_tokens` reads it): what a client sends."""
    return next(iter(parse_tokens(text)))


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def load_tokens(runs_root: Path, *, host: str) -> tuple[dict[str, str], str | None]:
    """The server's tokens by owner, and a token created just now (to print once) or None.

    ``AUTOPRUNE_TOKEN`` wins; else the runs root's 0600 token file, created on the first start. A non-loopback
    ``host`` never gets a fresh token: the operator must have set one.
    """
    if os.environ.get(TOKEN_ENV):
        return parse_tokens(os.environ[TOKEN_ENV]), None
    path = runs_root / TOKEN_FILE
    if path.exists():
        return parse_tokens(path.read_text(encoding="utf-8")), None
    if not is_loopback(host):
        raise ConfigError(f"refusing to serve on the non-loopback address {host!r} without a token: set "
                          f"{TOKEN_ENV}, or start once on 127.0.0.1 to create {str(path)!r}")
    token = secrets.token_urlsafe(32)
    runs_root.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(token + "\n")
    return {token: DEFAULT_OWNER}, token


def load_admins(runs_root: Path) -> frozenset[str]:
    """The owners marked admin where :func:`load_tokens` found the tokens (none for a token created now)."""
    if os.environ.get(TOKEN_ENV):
        return parse_admins(os.environ[TOKEN_ENV])
    path = runs_root / TOKEN_FILE
    return parse_admins(path.read_text(encoding="utf-8")) if path.exists() else frozenset()


def owner_of(authorization: str | None, tokens: dict[str, str]) -> str | None:
    """The owner of the bearer token in an ``Authorization`` header (None: missing or wrong).

    Every known token is compared (constant time each), so the time taken tells nothing about which matched.
    """
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not given:
        return None
    found = None
    for token, owner in tokens.items():
        if hmac.compare_digest(given.strip().encode(), token.encode()):
            found = owner
    return found
