"""What a SIGHUP can apply to a running daemon, decided from two configs alone.

Listeners and the log level change live: unchanged listeners keep their
sockets and connections (Postfix's socketmap connections live up to 100 s
and must not all be dropped at once), removed ones are drained, new ones
bound.  Every other section is wired into the resolvers and the cache at
start, so a change there is reported as needing a restart rather than
half-applied.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from mtasts_resolver.config import Config, ListenConfig

# Keys of [daemon] that a reload applies; the rest (state_dir) needs a restart.
_LIVE_DAEMON_KEYS = ("log_level", "drain_timeout_s")


@dataclass(frozen=True)
class ReloadPlan:
    stop: tuple[ListenConfig, ...]        # listeners to drain and close
    start: tuple[ListenConfig, ...]       # listeners to bind
    restart_needed: tuple[str, ...]       # config sections changed that only a restart applies


def plan_reload(old: Config, new: Config) -> ReloadPlan:
    stop = tuple(listen for listen in old.listen if listen not in new.listen)
    start = tuple(listen for listen in new.listen if listen not in old.listen)
    restart_needed = []
    for section in dataclasses.fields(Config):
        if section.name == "listen":
            continue
        before, after = getattr(old, section.name), getattr(new, section.name)
        if section.name == "daemon":
            live = {key: getattr(after, key) for key in _LIVE_DAEMON_KEYS}
            before = dataclasses.replace(before, **live)
        if before != after:
            restart_needed.append(section.name)
    return ReloadPlan(stop, start, tuple(restart_needed))
