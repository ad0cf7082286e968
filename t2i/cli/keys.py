"""`python -m t2i keys create NAME | list | revoke NAME`: the operator's API keys (t2i/api/auth.py).

The key is printed once, alone on the last line, and only its hash is stored: a lost key is revoked
and made again."""

from __future__ import annotations

import re

from ..errors import T2IError
from ..spec import SpecError
from .common import add_db_options, open_store

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")


def add_keys(sub) -> None:
    k = sub.add_parser("keys", help="API keys: create NAME (printed once), list, revoke NAME")
    k.add_argument("action", choices=["create", "list", "revoke"])
    k.add_argument("name", nargs="?", help="who the key is for: letters, digits, . _ @ - (at most 64)")
    add_db_options(k)
    k.set_defaults(func=cmd_keys)


def _name(args) -> str:
    if args.name is None:
        raise SpecError("name", f"`keys {args.action}` needs the key's name")
    if not NAME.fullmatch(args.name):
        raise SpecError("name", "use 1 to 64 letters, digits, '.', '_', '@' or '-', starting with a letter or digit")
    return args.name


def cmd_keys(args) -> int:
    from ..api.auth import hash_key, new_key

    store = open_store(args)
    if args.action == "create":
        key, name = new_key(), _name(args)
        try:
            store.create_key(name, hash_key(key))
        except ValueError as e:
            raise T2IError(str(e)) from None
        print(f"API key {args.name} created; it is shown once, here (send it as 'Authorization: Bearer <key>'):")
        print(key)
    elif args.action == "list":
        import time

        for k in store.api_keys():
            made = time.strftime("%Y-%m-%d %H:%M", time.gmtime(k.created_at))
            state = f"revoked {time.strftime('%Y-%m-%d %H:%M', time.gmtime(k.revoked_at))}" if k.revoked_at else "live"
            print(f"{k.name:<24}  created {made} UTC  {state}")
    else:
        if not store.revoke_key(_name(args)):
            raise T2IError(f"no live key named {args.name!r}")
        print(f"API key {args.name} revoked")
    return 0
