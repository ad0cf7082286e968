"""API keys in SQL: the operator's named keys, stored as hashes (schema version 8). A mixin of SQLStore
(t2i/store/sql.py), which gives it `transaction` and the statement helpers. The keys themselves are
made and hashed by t2i/api/auth.py; the store sees only the hash."""

from __future__ import annotations

from dataclasses import dataclass

MAX_KEY_NAME = 64


@dataclass(frozen=True)
class ApiKey:
    id: int
    name: str
    created_at: float
    revoked_at: float | None

    @property
    def submitter(self) -> str:
        """The submitter its jobs carry: the row's id, not the name, so a name revoked and made again
        is a new submitter that does not own the old key's jobs."""
        return f"apikey-{self.id}"


_COLUMNS = "id, name, created_at, revoked_at"


class ApiKeys:
    def create_key(self, name: str, key_hash: str) -> ApiKey:
        """A new live key named `name` whose secret hashes to `key_hash`. ValueError (one line) when a
        live key already has that name; nothing is written then."""
        with self.transaction():
            if self._one("SELECT 1 FROM api_keys WHERE name = ? AND revoked_at IS NULL", (name,)):
                raise ValueError(f"a key named {name!r} exists; revoke it first or choose another name")
            row = self._one(f"INSERT INTO api_keys (name, key_hash, created_at) VALUES (?, ?, {{now}}) "
                            f"RETURNING {_COLUMNS}", (name, key_hash))
        return ApiKey(int(row[0]), row[1], float(row[2]), row[3])

    def key_by_hash(self, key_hash: str) -> ApiKey | None:
        """The live key with this hash, or None (unknown or revoked). One probe of a unique index."""
        row = self._one(f"SELECT {_COLUMNS} FROM api_keys WHERE key_hash = ? AND revoked_at IS NULL", (key_hash,))
        return ApiKey(int(row[0]), row[1], float(row[2]), row[3]) if row else None

    def api_keys(self) -> list[ApiKey]:
        """Every key, revoked ones included, oldest first."""
        return [ApiKey(int(r[0]), r[1], float(r[2]), r[3])
                for r in self._all(f"SELECT {_COLUMNS} FROM api_keys ORDER BY id")]

    def revoke_key(self, name: str) -> bool:
        """Revoke the live key of that name at once (its next request is refused). False: no live key."""
        return self._rowcount("UPDATE api_keys SET revoked_at = {now} WHERE name = ? AND revoked_at IS NULL",
                              (name,)) > 0
