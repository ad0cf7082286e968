"""API keys: the store's part on both backends (schema version 8) and `python -m t2i keys`."""

from __future__ import annotations

import subprocess
import sys

import pytest

from t2i.api.auth import KEY_PREFIX, hash_key, new_key
from t2i.paths import ROOT
from t2i.store import open_store


def test_keys_are_kept_as_hashes_named_once_and_revoked(store_url):
    store = open_store(store_url)
    try:
        key = new_key()
        assert key.startswith(KEY_PREFIX) and len(key) == len(KEY_PREFIX) + 43 and new_key() != key
        made = store.create_key("alice", hash_key(key))
        assert store.key_by_hash(hash_key(key)) == made and made.revoked_at is None
        assert store.key_by_hash(hash_key(key + "x")) is None
        with pytest.raises(ValueError, match="a key named 'alice' exists"):
            store.create_key("alice", hash_key(new_key()))
        assert [k.name for k in store.api_keys()] == ["alice"]   # the refused one wrote nothing
        assert store.revoke_key("alice") and not store.revoke_key("alice")
        assert store.key_by_hash(hash_key(key)) is None
        # The name is free again, for a new submitter: the old key's jobs are not the new key's.
        again = store.create_key("alice", hash_key(new_key()))
        assert again.submitter != made.submitter
        listed = store.api_keys()
        assert [(k.name, k.revoked_at is None) for k in listed] == [("alice", False), ("alice", True)]
    finally:
        store.close()


@pytest.mark.subprocess
def test_the_keys_command(tmp_path):
    db = f"sqlite:///{tmp_path / 't2i.db'}"
    open_store(db).close()

    def keys(*args):
        return subprocess.run([sys.executable, "-m", "t2i", "keys", *args, "--db", db], cwd=ROOT,
                              capture_output=True, text=True, timeout=120)

    made = keys("create", "bot-1")
    assert made.returncode == 0
    key = made.stdout.splitlines()[-1]
    assert key.startswith(KEY_PREFIX) and key.strip() == key and " " not in key
    raw = (tmp_path / "t2i.db").read_bytes()
    assert key.encode() not in raw and hash_key(key).encode() in raw   # only the hash is kept
    twice = keys("create", "bot-1")
    assert twice.returncode == 1 and twice.stderr.strip() == (
        "error: a key named 'bot-1' exists; revoke it first or choose another name")
    assert keys("create", "no spaces").returncode == 2
    listed = keys("list")
    assert listed.returncode == 0 and "bot-1" in listed.stdout and "live" in listed.stdout and key not in listed.stdout
    assert keys("revoke", "bot-1").returncode == 0
    assert "revoked" in keys("list").stdout
    gone = keys("revoke", "bot-1")
    assert gone.returncode == 1 and "no live key named 'bot-1'" in gone.stderr
