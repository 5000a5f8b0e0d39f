"""API keys of the svimo app (`serve.api_keys`): a file of hashed keys, one per line,

    # name  sha256 of the key                                                  max queued
    alice   sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08  4

and the command that adds one and prints the key, once (the file keeps only its hash):

    python -m serve.keys add alice --file keys.txt [--max-queued 4]

A client sends its key as a bearer token (`Authorization: Bearer <key>`). The max-queued
column is optional: without it a key may have `serve.max_queued_per_key` jobs queued or
running.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path

from hoi.config import StorageConfig
from hoi.storage import read_text

NAME = re.compile(r"^[A-Za-z0-9._@-]{1,64}$")
PREFIX = "sha256:"


class KeysError(ValueError):
    """The keys file cannot be used; the message names the file and line."""


@dataclass(frozen=True)
class Key:
    name: str
    max_queued: int | None


def digest(key: str) -> str:
    return PREFIX + hashlib.sha256(key.encode()).hexdigest()


def parse(text: str, source: str) -> dict[str, Key]:
    """Keys by their digest."""
    keys: dict[str, Key] = {}
    names: set[str] = set()
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        where = f"{source}:{number}"
        if len(fields) not in (2, 3):
            raise KeysError(f"{where}: want 'name sha256:<hex> [max_queued]', got {line!r}")
        name, hashed = fields[0], fields[1]
        if not NAME.match(name) or name in names:
            raise KeysError(f"{where}: key name {name!r} is not [A-Za-z0-9._@-]{{1,64}} or "
                            f"is not unique")
        if not re.fullmatch(PREFIX + "[0-9a-f]{64}", hashed):
            raise KeysError(f"{where}: {hashed!r} is not sha256:<64 hex digits>")
        limit = None
        if len(fields) == 3:
            if not fields[2].isdigit() or int(fields[2]) < 1:
                raise KeysError(f"{where}: max_queued must be a whole number >= 1")
            limit = int(fields[2])
        names.add(name)
        keys[hashed] = Key(name, limit)
    if not keys:
        raise KeysError(f"{source}: no keys (an app with serve.api_keys answers only to keys)")
    return keys


def load(path: str, storage: StorageConfig) -> dict[str, Key]:
    """The keys file at `path` (local or s3://)."""
    try:
        text = read_text(path, storage)
    except FileNotFoundError:
        raise KeysError(f"serve.api_keys: no file {path}") from None
    return parse(text, path)


def add(path: Path, name: str, max_queued: int | None = None) -> str:
    """A new key for `name`, its hash appended to the local file `path`; returns the key."""
    text = path.read_text() if path.exists() else ""
    existing = parse(text, str(path)) if text.strip() else {}
    if not NAME.match(name) or name in {k.name for k in existing.values()}:
        raise KeysError(f"key name {name!r} is not [A-Za-z0-9._@-]{{1,64}} or is taken")
    key = secrets.token_urlsafe(32)
    line = f"{name} {digest(key)}" + (f" {max_queued}" if max_queued else "")
    with path.open("a") as f:
        f.write(line + "\n")
    return key


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serve.keys", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    adding = commands.add_parser("add", help="add a key and print it")
    adding.add_argument("name")
    adding.add_argument("--file", required=True, type=Path)
    adding.add_argument("--max-queued", type=int, default=None)
    args = parser.parse_args(argv)
    try:
        print(add(args.file, args.name, args.max_queued))
    except KeysError as e:
        print(f"serve.keys: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
