"""Who may use the viewer: bearer tokens with roles, per-route permissions, rate limits and the audit log.

Tokens are random strings (``lifeline tokens create``) kept only as SHA-256 digests in a TOML file::

    [[token]]
    name = "ops-centre-1"
    role = "operator"
    sha256 = "9f86d0…"

A client sends its token as ``Authorization: Bearer <token>`` (API and terminal clients) or in the ``lifeline_token``
cookie that ``POST /api/session`` sets (the page; the browser then sends it on the websocket too, which cannot
carry headers). Tokens never appear in URLs, so they never reach access logs.

Roles and what they may do (:data:`PERMISSIONS`): every role reads; ``operator``, ``emergency`` and ``admin`` act on
alerts; ``operator`` and ``admin`` run drills; ``admin`` reads the audit log. A route names the permission it
needs; a missing or unknown token gets 401, a role without the permission 403, too many requests 429 with
``Retry-After``.

:meth:`Authenticator.open` lets everyone in as an anonymous admin: the demo and tests of other features use it;
``lifeline serve`` refuses to start that way unless ``LIFELINE_AUTH=off`` is set on purpose.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import logging
import math
import secrets
import threading
import time
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twin.errors import ConfigError

log = logging.getLogger(__name__)

COOKIE = "lifeline_token"


class Role(enum.StrEnum):
    """What a token holder is."""

    VIEWER = "viewer"
    OPERATOR = "operator"
    EMERGENCY = "emergency"
    ADMIN = "admin"


class Permission(enum.StrEnum):
    """What a route needs."""

    READ = "read"
    ACT_ON_ALERTS = "alerts.act"
    DRILLS = "drills"
    AUDIT = "audit"


PERMISSIONS: Mapping[Permission, frozenset[Role]] = {
    Permission.READ: frozenset(Role),
    Permission.ACT_ON_ALERTS: frozenset({Role.OPERATOR, Role.EMERGENCY, Role.ADMIN}),
    Permission.DRILLS: frozenset({Role.OPERATOR, Role.ADMIN}),
    Permission.AUDIT: frozenset({Role.ADMIN}),
}

WEAK_TOKENS = ("lifeline", "lifeline-demo", "demo", "admin", "password", "changeme", "secret", "token", "test")
"""Tokens a person might type as a default; a tokens file holding any of them is refused."""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who made a request."""

    name: str
    role: Role

    def may(self, permission: Permission) -> bool:
        return self.role in PERMISSIONS[permission]


ANONYMOUS_ADMIN = Principal("anonymous", Role.ADMIN)


def digest(token: str) -> str:
    """Return the SHA-256 hex digest a tokens file stores for *token*."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class TokenEntry:
    name: str
    role: Role
    sha256: str


def read_tokens(path: Path) -> list[TokenEntry]:
    """Read a tokens file.

    Raises:
        ConfigError: unreadable file, a bad entry (with its position), a duplicate name, or a weak default token.
    """
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"tokens file {path}: cannot read ({exc.strerror or exc})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"tokens file {path}: not TOML ({exc})") from exc
    entries: list[TokenEntry] = []
    weak = {digest(t) for t in WEAK_TOKENS}
    for k, raw in enumerate(data.get("token", []), start=1):
        where = f"tokens file {path}, token #{k}"
        if not isinstance(raw, dict):
            raise ConfigError(f"{where}: not a table")
        name, role, sha = raw.get("name"), raw.get("role"), str(raw.get("sha256", "")).lower()
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{where}: 'name' missing")
        try:
            role_value = Role(str(role))
        except ValueError:
            raise ConfigError(f"{where} ({name}): role {role!r} is not one of {', '.join(Role)}") from None
        if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
            raise ConfigError(f"{where} ({name}): 'sha256' must be 64 hex digits (the token's SHA-256)")
        if sha in weak:
            raise ConfigError(
                f"{where} ({name}): a default or well-known token is refused; create one with 'lifeline tokens create'"
            )
        if any(e.name == name for e in entries):
            raise ConfigError(f"{where}: name {name!r} used twice")
        entries.append(TokenEntry(name, role_value, sha))
    if not entries:
        raise ConfigError(f"tokens file {path}: no [[token]] entries")
    return entries


def new_token() -> str:
    """Return a fresh random token (256 bits, URL-safe)."""
    return secrets.token_urlsafe(32)


def add_token(path: Path, *, name: str, role: Role) -> str:
    """Create a token for *name* with *role*, append its digest to the tokens file (created 0600), return it.

    Raises:
        ConfigError: the name is taken or the file is invalid.
    """
    existing = read_tokens(path) if path.exists() and path.stat().st_size else []
    if any(e.name == name for e in existing):
        raise ConfigError(f"tokens file {path}: a token named {name!r} exists already")
    token = new_token()
    entry = f'\n[[token]]\nname = "{_toml_escape(name)}"\nrole = "{role.value}"\nsha256 = "{digest(token)}"\n'
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as fh:
        path.chmod(0o600)
        fh.write(entry)
    return token


def _toml_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float


@dataclass(slots=True)
class RateLimiter:
    """A token bucket per client: *rate_per_s* requests a second on average, bursts of *burst*."""

    rate_per_s: float
    burst: float
    _buckets: dict[str, _Bucket] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self, key: str, now: float | None = None) -> float:
        """Spend one request for *key*; return 0 if allowed, else the seconds to wait."""
        if self.rate_per_s <= 0 or math.isinf(self.rate_per_s):
            return 0.0
        t = time.monotonic() if now is None else now
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = self._buckets[key] = _Bucket(self.burst, t)
            bucket.tokens = min(self.burst, bucket.tokens + (t - bucket.at) * self.rate_per_s)
            bucket.at = t
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                return 0.0
            if len(self._buckets) > 10_000:  # forget idle clients
                self._buckets = {k: b for k, b in self._buckets.items() if t - b.at < 60}
            return (1.0 - bucket.tokens) / self.rate_per_s


class Authenticator:
    """Check tokens and roles; see the module docstring.

    Args:
        entries: the tokens (digests); None lets everyone in as an anonymous admin (:meth:`open`).
        rate_per_s: requests per second per client on average (0: no limit).
        burst: requests a client may make at once.
    """

    def __init__(self, entries: Iterable[TokenEntry] | None, *, rate_per_s: float = 20.0, burst: float = 100.0) -> None:
        self.entries = None if entries is None else list(entries)
        self._by_digest = {e.sha256: e for e in self.entries or []}
        self.limiter = RateLimiter(rate_per_s, burst)

    @classmethod
    def open(cls, *, rate_per_s: float = 0.0) -> Authenticator:
        """Everyone is an anonymous admin (the demo; tests of other features)."""
        return cls(None, rate_per_s=rate_per_s)

    @classmethod
    def from_file(cls, path: Path, *, rate_per_s: float = 20.0, burst: float = 100.0) -> Authenticator:
        return cls(read_tokens(path), rate_per_s=rate_per_s, burst=burst)

    @property
    def required(self) -> bool:
        """Whether requests must carry a valid token."""
        return self.entries is not None

    def identify(self, token: str | None) -> Principal | None:
        """Return who holds *token* (None if it is unknown); with auth off, the anonymous admin."""
        if self.entries is None:
            return ANONYMOUS_ADMIN
        if not token or len(token) > 512:
            return None
        wanted = digest(token)
        for sha, entry in self._by_digest.items():
            if hmac.compare_digest(sha, wanted):
                return Principal(entry.name, entry.role)
        return None

    def describe(self) -> dict[str, Any]:
        return {"required": self.required, "tokens": len(self.entries or [])}


def bearer(header: str | None) -> str | None:
    """Return the token of an ``Authorization: Bearer …`` header, or None."""
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None
