"""The reply cache of `georeason annotate`: an sqlite table keyed by a hash of the exact request payload.

Supports the long annotation runs of the EarthReason pipeline (paper Sec. 3.2): every reply is committed as
soon as it arrives, so a rerun after a crash or a kill replays finished requests for free and resumes.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

from georeason.errors import GeoreasonError


def payload_key(payload: dict[str, Any]) -> str:
    """sha256 of the payload as canonical JSON (sorted keys, no whitespace): equal requests, equal keys."""
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class ReplyCache:
    """key -> reply text. Only successful replies are stored (malformed ones too: they were paid for)."""

    def __init__(self, path: Path):
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: autocommit, each put is durable on its own.
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("CREATE TABLE IF NOT EXISTS replies ("
                             "key TEXT PRIMARY KEY, reply TEXT NOT NULL, model TEXT, created REAL)")
        except sqlite3.Error as error:
            raise GeoreasonError(f"--cache: cannot open the reply cache {path} ({error})") from error

    def get(self, key: str) -> str | None:
        row = self._db.execute("SELECT reply FROM replies WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def put(self, key: str, reply: str, model: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO replies (key, reply, model, created) VALUES (?, ?, ?, ?)",
                         (key, reply, model, time.time()))

    def __len__(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM replies").fetchone()[0])

    def close(self) -> None:
        self._db.close()
