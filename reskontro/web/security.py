"""Who is asking, and what every response carries.

Three ways in, decided by `[web]` in the config:
- no users and no trusted proxies: the page is served on the loopback address only, and whoever
  can reach it is a person on this machine (the login shown is the OS user's);
- HTTP Basic against argon2 hashes in the config (the password itself is never stored);
- a reverse proxy that authenticated the person and names the login in a header, believed only
  from the configured proxy addresses (from anywhere else the header is ignored).

Actions are POST forms carrying a CSRF token bound to the login; a POST from another origin is
refused whatever it carries.
"""
from __future__ import annotations

import base64
import binascii
import getpass
import hashlib
import hmac
import ipaddress
import os
import re
import threading
import time
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from reskontro.config import WebConfig

LOOPBACK_ONLY = "the support page without users or trusted proxies in [web] serves 127.0.0.1 only"
_LOGIN = re.compile(r"[A-Za-z0-9._@-]{1,64}")
_REMEMBER = 300.0      # seconds a verified Basic password is remembered (argon2 costs ~50 ms a check)

# A content security policy with no inline script or style: htmx is a file from 'self'.
HEADERS = (
    (b"content-security-policy", b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                                 b"connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-content-type-options", b"nosniff"),
    (b"cross-origin-opener-policy", b"same-origin"),
)


class Refused(Exception):
    """A request that may not go on: its HTTP status and a sentence for the person."""

    def __init__(self, status: int, message: str, *, challenge: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.challenge = challenge


def hash_password(password: str) -> str:
    """An argon2id hash for `[web] users` (argon2-cffi's recommended parameters)."""
    return PasswordHasher().hash(password)


def check_bind(web: WebConfig, host: str) -> None:
    """Refuse to listen beyond the loopback address unless a login is required."""
    if web.authenticated:
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        raise Refused(0, f"refusing to listen on {host}: {LOOPBACK_ONLY}. Add users (`reskontro web-password` "
                         "makes a hash) or trusted_proxies to [web] in reskontro.toml first")


@dataclass
class Gate:
    """Decides the login of each request (see the module's text)."""
    web: WebConfig

    def __post_init__(self) -> None:
        self._hasher = PasswordHasher()
        self._users = dict(self.web.users)
        self._proxies = {ipaddress.ip_address(a) for a in self.web.trusted_proxies}
        self._key = os.urandom(32)         # per process: CSRF tokens and remembered passwords
        self._dummy = self._hasher.hash(os.urandom(16).hex())
        self._remembered: dict[str, float] = {}
        self._lock = threading.Lock()
        try:
            self._local = getpass.getuser()
        except (KeyError, OSError):
            self._local = "local"

    def login(self, client: str | None, headers) -> str:
        """The login of a request with these headers from this address, or Refused."""
        if not self.web.authenticated:
            if not _is_loopback(client):
                raise Refused(403, LOOPBACK_ONLY)
            return self._local
        if self._proxies and _address(client) in self._proxies:
            named = headers.get(self.web.proxy_header)
            if named:
                if not _LOGIN.fullmatch(named):
                    raise Refused(403, f"the proxy's {self.web.proxy_header} is not a login")
                return named
            if not self._users:
                raise Refused(403, f"the proxy did not name a login ({self.web.proxy_header})")
        if not self._users:
            raise Refused(403, "only the configured reverse proxy may reach this page")
        return self._basic(headers.get("authorization"))

    def _basic(self, header: str | None) -> str:
        if not header or not header[:6].lower() == "basic ":
            raise Refused(401, "log in", challenge=True)
        try:
            login, sep, password = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise Refused(401, "log in", challenge=True) from None
        if not sep:
            raise Refused(401, "log in", challenge=True)
        proof = hmac.new(self._key, f"{login}\0{password}".encode(), hashlib.sha256).hexdigest()
        now = time.monotonic()
        with self._lock:
            if self._remembered.get(proof, 0.0) > now:
                return login
        hashed = self._users.get(login)
        try:
            # an unknown login costs the same as a wrong password (no telling which logins exist)
            self._hasher.verify(hashed or self._dummy, password)
        except (VerificationError, InvalidHashError):
            raise Refused(401, "wrong login or password", challenge=True) from None
        if hashed is None:
            raise Refused(401, "wrong login or password", challenge=True)
        with self._lock:
            self._remembered = {k: v for k, v in self._remembered.items() if v > now}
            self._remembered[proof] = now + _REMEMBER
        return login

    def csrf_token(self, login: str) -> str:
        return hmac.new(self._key, f"csrf\0{login}".encode(), hashlib.sha256).hexdigest()

    def check_post(self, login: str, token: str | None, headers) -> None:
        """A POST must come from this page (same origin, when the browser says) with the token."""
        origin = headers.get("origin")
        if origin and origin != "null":
            host = headers.get("host", "")
            if origin.split("://", 1)[-1] != host:
                raise Refused(403, f"a form from another site ({origin}) was refused")
        elif origin == "null":
            raise Refused(403, "a form from an opaque origin was refused")
        if not token or not hmac.compare_digest(token, self.csrf_token(login)):
            raise Refused(403, "the form's security token is missing or stale: reload the page and try again")


def _address(client: str | None):
    try:
        return ipaddress.ip_address(client or "")
    except ValueError:
        return None


def _is_loopback(client: str | None) -> bool:
    a = _address(client)
    return a is not None and a.is_loopback


class SecurityHeaders:
    """ASGI middleware: the security headers on every response, and no caching of pages."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = scope["path"].startswith("/static/")

        async def with_headers(message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.extend(HEADERS)
                if not static:
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers)
