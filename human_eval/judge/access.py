"""Who may use a judging session: one private link per rater and one admin link.

A link holds a random token (`secrets.token_urlsafe`, 192 bits); the session keeps only its
SHA-256, in ``FILE.raters.json`` beside the judgments CSV (mode 0600, written atomically by `storage`), and
compares hashes in constant time. The token reaches the server as an HttpOnly, SameSite=Strict
cookie that the link sets, so the rater of every request is the one the link names, whatever
the request body says. A restart keeps the links issued before (the file holds their hashes);
a rater left out of ``raters`` loses theirs; ``new_links`` replaces every token.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from storage import atomic_write_text

RATER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
ADMIN = "admin"


class AccessError(ValueError):
    """A bad rater name or an unreadable secrets file (the message says which)."""


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def check_rater_name(name: str) -> str:
    if not RATER.match(name):
        raise AccessError(f"rater name {name!r}: use 1-64 letters, digits, _ . @ - (starting with a letter or digit)")
    return name


@dataclass
class Access:
    path: Path
    raters: dict[str, str]  # name -> sha256 of the link's token
    admin: str
    issued: dict[str, str] = field(default_factory=dict)  # tokens made by this start: name (or ADMIN) -> token

    @classmethod
    def open(cls, path: str | os.PathLike, raters: list[str], new_links: bool = False) -> Access:
        """The session's links for ``raters`` (one for each, kept from an earlier start unless
        ``new_links``), written to ``path``; `issued` holds the tokens made now."""
        path = Path(path)
        for name in raters:
            check_rater_name(name)
        if len(set(raters)) != len(raters) or not raters:
            raise AccessError(f"give each rater once, at least one: {raters}")
        old = {} if new_links or not path.exists() else cls._read(path)
        issued = {}
        hashes = {}
        for name in raters:
            if name in old.get("raters", {}):
                hashes[name] = old["raters"][name]
            else:
                issued[name] = secrets.token_urlsafe(24)
                hashes[name] = token_hash(issued[name])
        admin = old.get("admin")
        if admin is None:
            issued[ADMIN] = secrets.token_urlsafe(24)
            admin = token_hash(issued[ADMIN])
        access = cls(path, hashes, admin, issued)
        access._write()
        return access

    @staticmethod
    def _read(path: Path) -> dict:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise AccessError(f"{path}: cannot read the session's links ({e}); delete it or pass --new-links") from None
        ok = (
            isinstance(data, dict)
            and isinstance(data.get("admin"), str)
            and isinstance(data.get("raters"), dict)
            and all(isinstance(v, str) for v in data["raters"].values())
        )
        if not ok:
            raise AccessError(f"{path}: not a links file of this tool; delete it or pass --new-links")
        return data

    def _write(self) -> None:
        text = json.dumps({"admin": self.admin, "raters": self.raters, "hash": "sha256"}, indent=1) + "\n"
        atomic_write_text(self.path, text)
        os.chmod(self.path, 0o600)  # hashes only, but nobody else's business

    def rater_of(self, token: str | None) -> str | None:
        """The rater whose link holds ``token`` (None for none); every hash is compared."""
        if not token:
            return None
        digest = token_hash(token)
        found = None
        for name, stored in self.raters.items():
            if hmac.compare_digest(stored, digest):
                found = name
        return found

    def is_admin(self, token: str | None) -> bool:
        return bool(token) and hmac.compare_digest(self.admin, token_hash(token))
