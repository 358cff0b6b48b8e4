"""A persistent translation cache in SQLite, keyed by backend, model, languages and source text.

Each result is committed as soon as it arrives, so a job killed half-way loses at most the requests in
flight and, rerun, sends only what is not in the cache. WAL mode lets a reader (a progress check, a
test) look while a writer works. Stored tokens make the cost of the whole cache computable later.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import time


def cache_key(backend: str, model: str, src: str, tgt: str, text: str, variant: str = "") -> str:
  return hashlib.sha256("\x1f".join((backend, model, src, tgt, variant, text)).encode()).hexdigest()


class TranslationCache:
  def __init__(self, path: str | os.PathLike):
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    self.path = path
    self.db = sqlite3.connect(path, timeout=30)
    self.db.execute("PRAGMA journal_mode=WAL")
    self.db.execute("""CREATE TABLE IF NOT EXISTS cache (
        key TEXT PRIMARY KEY, backend TEXT, model TEXT, source TEXT, target TEXT,
        prompt_tokens INTEGER, completion_tokens INTEGER, created REAL)""")
    self.db.commit()

  def get_many(self, keys: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for i in range(0, len(keys), 500):  # SQLite caps the number of bound parameters
      part = keys[i:i + 500]
      rows = self.db.execute(f"SELECT key, target FROM cache WHERE key IN ({','.join('?' * len(part))})", part)
      out.update(rows.fetchall())
    return out

  def get(self, key: str) -> str | None:
    row = self.db.execute("SELECT target FROM cache WHERE key = ?", (key,)).fetchone()
    return row[0] if row else None

  def put(self, key: str, backend: str, model: str, source: str, target: str, prompt_tokens: int = 0,
          completion_tokens: int = 0) -> None:
    self.db.execute("INSERT OR REPLACE INTO cache VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (key, backend, model, source, target, prompt_tokens, completion_tokens, time.time()))
    self.db.commit()

  def __len__(self) -> int:
    return self.db.execute("SELECT COUNT(*) FROM cache").fetchone()[0]

  def totals(self) -> dict[str, int]:
    n, p, c = self.db.execute("SELECT COUNT(*), COALESCE(SUM(prompt_tokens), 0), "
                              "COALESCE(SUM(completion_tokens), 0) FROM cache").fetchone()
    return {"entries": n, "prompt_tokens": p, "completion_tokens": c}

  def close(self) -> None:
    self.db.close()
