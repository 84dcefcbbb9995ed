"""Who may use the web face: API tokens and the review page's sessions.

Tokens are random strings given once to their holder (``cxr-node token create``); the
node keeps only their SHA-256 in ``tokens_file`` (JSON: name, hash, created), so a copy of
the storage folder gives no access. The page trades a token for a session cookie
(``HttpOnly``, ``SameSite=Strict``) so that its images load without the token in a URL.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path

SESSION_COOKIE = "cxr_session"
SESSION_SECONDS = 8 * 3600
TOKEN_BYTES = 32


class TokenError(ValueError):
    """A token file that cannot be used, or a name already taken."""


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class TokenEntry:
    name: str
    sha256: str
    created: str


class Tokens:
    """The tokens file: read on every check, so a revoked token stops at once.

    Parameters
    ----------
    path:
        JSON list of ``{"name", "sha256", "created"}``; missing means no token yet.
    """

    def __init__(self, *, path: Path) -> None:
        self.path = Path(path)

    def entries(self) -> list[TokenEntry]:
        if not self.path.exists():
            return []
        try:
            data = json.loads(self.path.read_text())
            return [TokenEntry(str(e["name"]), str(e["sha256"]), str(e["created"]))
                    for e in data]
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise TokenError(f"tokens file unreadable ({type(error).__name__})") from error

    def create(self, name: str) -> str:
        """A new token for ``name``; only its hash is written. Returns the token."""
        if not name or not name.replace("-", "").replace("_", "").isalnum():
            raise TokenError("name: letters, digits, '-' and '_' only")
        entries = self.entries()
        if any(e.name == name for e in entries):
            raise TokenError(f"name: a token named {name!r} exists (revoke it first)")
        token = secrets.token_urlsafe(TOKEN_BYTES)
        created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self._write([*entries, TokenEntry(name, _digest(token), created)])
        return token

    def revoke(self, name: str) -> bool:
        entries = self.entries()
        kept = [e for e in entries if e.name != name]
        self._write(kept)
        return len(kept) != len(entries)

    def holder(self, token: str) -> str | None:
        """The name of the token's holder, or None when it is not a valid token."""
        digest = _digest(token)
        match = None
        for entry in self.entries():  # compare with every entry: no early exit timing
            if hmac.compare_digest(entry.sha256, digest):
                match = entry.name
        return match

    def _write(self, entries: list[TokenEntry]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps([e.__dict__ for e in entries], indent=2) + "\n")
        temporary.chmod(0o600)
        temporary.replace(self.path)


class Sessions:
    """Page sessions in memory (a restart logs everyone out, which is fine)."""

    def __init__(self, *, lifetime_s: float = SESSION_SECONDS) -> None:
        self.lifetime_s = lifetime_s
        self._holders: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def open(self, holder: str) -> str:
        session = secrets.token_urlsafe(TOKEN_BYTES)
        with self._lock:
            now = time.monotonic()
            self._holders = {k: v for k, v in self._holders.items() if v[1] > now}
            self._holders[session] = (holder, now + self.lifetime_s)
        return session

    def holder(self, session: str) -> str | None:
        with self._lock:
            found = self._holders.get(session)
        if found is None or found[1] <= time.monotonic():
            return None
        return found[0]

    def close(self, session: str) -> None:
        with self._lock:
            self._holders.pop(session, None)
