"""What can be checked before binding anything: users, groups, directories, files.

``--check-config`` (systemd's ExecStartPre), the daemon's start-up and every
reload run these checks, so a typo in a socket's group is refused with the
same message in all three places, before READY and before anything opened
needs closing.  Each problem names the key and the thing (user, group, path).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mtasts_resolver.app.exits import EX_CANTCREAT, EX_CONFIG, OK
from mtasts_resolver.config import Config
from mtasts_resolver.net.sockets import UnknownOwner, gid_of, uid_of

JOURNAL = "journal"   # tlsrpt.postfix_log = "journal": follow journald, not a file


@dataclass(frozen=True)
class Problem:
    status: int     # the exit status it ends a start with (sysexits)
    text: str

    def __str__(self) -> str:
        return self.text


def problems(config: Config) -> list[Problem]:
    """Everything wrong with ``config`` that shows without binding a socket; empty when all is well."""
    found: list[Problem] = []
    for index, listen in enumerate(config.listen):
        key = f"listen[{index}]"
        found += _owner(f"{key}.owner", uid_of, listen.owner) + _owner(f"{key}.group", gid_of, listen.group)
        if listen.unix:
            found += _directory(f"{key}.unix", listen.unix)
    tlsrpt = config.tlsrpt
    for key in ("collector_socket", "exim_event_socket"):
        found += _owner(f"tlsrpt.{key}_owner", uid_of, getattr(tlsrpt, f"{key}_owner"))
        found += _owner(f"tlsrpt.{key}_group", gid_of, getattr(tlsrpt, f"{key}_group"))
        if getattr(tlsrpt, key):
            found += _directory(f"tlsrpt.{key}", str(getattr(tlsrpt, key)))
    for key, path in (("mta_sts.ca_file", config.mta_sts.ca_file), ("tlsrpt.ca_file", tlsrpt.ca_file),
                      ("tlsrpt.dkim_key_file", tlsrpt.dkim_key_file)):
        if path:
            found += _readable(key, path)
    # A followed log may not exist yet (the follower waits for it); one that exists must be readable.
    for key, path in (("tlsrpt.exim_log", tlsrpt.exim_log),
                      ("tlsrpt.postfix_log", "" if tlsrpt.postfix_log == JOURNAL else tlsrpt.postfix_log)):
        if path:
            found += _readable(key, path) if os.path.exists(path) else _directory(key, path)
    if config.cache.backend == "sqlite":   # a PostgreSQL store is checked by connecting, at start
        found += _cache(config.cache_path)
    return found


def _owner(key: str, lookup: Callable[[str], int], name: str) -> list[Problem]:
    """``lookup`` is :func:`net.sockets.uid_of` or ``gid_of``: the same lookup the socket's chown uses."""
    try:
        lookup(name)
    except UnknownOwner as exc:
        return [Problem(EX_CONFIG, f"{key}: {exc}")]
    return []


def _directory(key: str, socket_path: str) -> list[Problem]:
    parent = Path(socket_path).parent
    if not parent.is_dir():
        return [Problem(EX_CONFIG, f"{key}: directory {parent} of {socket_path} does not exist")]
    return []


def _readable(key: str, path: str) -> list[Problem]:
    try:
        with open(path, "rb") as handle:
            handle.read(1)
    except OSError as exc:
        return [Problem(EX_CONFIG, f"{key}: cannot read {path}: {exc.strerror}")]
    return []


def _cache(path: Path) -> list[Problem]:
    """The cache file must be writable where it is, or creatable in the nearest existing directory."""
    if path.exists():
        if not path.is_file():
            return [Problem(EX_CANTCREAT, f"policy cache {path} is not a regular file")]
        if not os.access(path, os.R_OK | os.W_OK):
            return [Problem(EX_CANTCREAT, f"policy cache {path} is not readable and writable")]
        return []
    ancestor = path.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        return [Problem(EX_CANTCREAT, f"cannot create the policy cache {path}: {ancestor} is not a directory")]
    if not os.access(ancestor, os.W_OK | os.X_OK):
        return [Problem(EX_CANTCREAT, f"cannot create the policy cache {path}: {ancestor} is not writable")]
    return []


def check_config_command(config: Config, source: str) -> int:
    """``--check-config`` (systemd's ExecStartPre): the same checks the start-up makes, without binding."""
    found = problems(config)
    for problem in found:
        print(f"{source}: {problem}", file=sys.stderr)
    if found:
        return found[0].status
    print(f"configuration OK ({source})")
    return OK
