"""plan_reload(old, new): what a SIGHUP applies live and what it reports as needing a restart.

Configs are built from TOML-shaped tables with the real loader, so each row
reads like the two files an admin would have before and after the edit.
Listeners are named by their index in the old (``stop``) or new (``start``)
file's ``[[listen]]`` list.
"""

from __future__ import annotations

from typing import Any

import pytest

from mtasts_resolver.app.reload import plan_reload
from mtasts_resolver.config import config_from_dict

SOCKETMAP = {"protocol": "socketmap", "tcp": "127.0.0.1:8461"}
TCP_TABLE = {"protocol": "tcp_table", "tcp": "127.0.0.1:8462"}
UNIX = {"protocol": "socketmap", "unix": "/run/mtasts-resolver/socketmap.sock", "group": "postfix"}
BASE: dict[str, Any] = {"listen": [SOCKETMAP, TCP_TABLE]}


def changed(**sections: Any) -> dict[str, Any]:
    """BASE with these top-level entries replaced."""
    return {**BASE, **sections}


@pytest.mark.parametrize("old,new,stop,start,restart", [
    # nothing changed: nothing to do
    (BASE, BASE, (), (), ()),
    ({}, {}, (), (), ()),
    # [daemon]: log_level and drain_timeout_s are live, the rest needs a restart
    (BASE, changed(daemon={"log_level": "debug"}), (), (), ()),
    (BASE, changed(daemon={"drain_timeout_s": 5}), (), (), ()),
    (BASE, changed(daemon={"state_dir": "/srv/state"}), (), (), ("daemon",)),
    (BASE, changed(daemon={"workers": 2}), (), (), ("daemon",)),
    (BASE, changed(daemon={"log_level": "debug", "workers": 2}), (), (), ("daemon",)),
    # listeners: unchanged ones are kept, removed ones stopped, new ones started
    (BASE, changed(listen=[SOCKETMAP, TCP_TABLE, UNIX]), (), (2,), ()),
    (BASE, changed(listen=[SOCKETMAP]), (1,), (), ()),
    (BASE, changed(listen=[TCP_TABLE, SOCKETMAP]), (), (), ()),   # order does not matter
    (BASE, changed(listen=[{**SOCKETMAP, "tcp": "127.0.0.1:9461"}, TCP_TABLE]), (0,), (0,), ()),
    (BASE, changed(listen=[SOCKETMAP, {**TCP_TABLE, "idle_timeout_s": 30}]), (1,), (1,), ()),
    (BASE, changed(listen=[SOCKETMAP, {**TCP_TABLE, "map_name": "other"}]), (1,), (1,), ()),
    (changed(listen=[UNIX]), changed(listen=[{**UNIX, "mode": "0666"}]), (0,), (0,), ()),
    ({}, BASE, (), (), ()),   # the built-in listeners are the same two as BASE
    # every other section needs a restart, reported in section order
    (BASE, changed(dns={"timeout_s": 2}), (), (), ("dns",)),
    (BASE, changed(mta_sts={"http_timeout_s": 5}), (), (), ("mta_sts",)),
    (BASE, changed(dane={"enabled": False}), (), (), ("dane",)),
    (BASE, changed(cache={"path": "/srv/cache.sqlite3"}), (), (), ("cache",)),
    (BASE, changed(tlsrpt={"contact_info": "tlsrpt@example.com"}), (), (), ("tlsrpt",)),
    (BASE, changed(dane={"probe_interval_s": 60}, dns={"port": 5353}), (), (), ("dns", "dane")),
    # live and restart-only changes together: the live part is still planned
    (BASE, changed(listen=[SOCKETMAP], daemon={"log_level": "warn"}, dns={"port": 5353}), (1,), (), ("dns",)),
])
def test_plan_reload(old: dict, new: dict, stop: tuple[int, ...], start: tuple[int, ...],
                     restart: tuple[str, ...]) -> None:
    before, after = config_from_dict(old), config_from_dict(new)
    plan = plan_reload(before, after)
    assert plan.stop == tuple(before.listen[i] for i in stop)
    assert plan.start == tuple(after.listen[i] for i in start)
    assert plan.restart_needed == restart


def test_a_key_set_to_its_default_is_no_change() -> None:
    explicit = changed(dns={"port": 53, "timeout_s": 5.0}, daemon={"workers": 1})
    plan = plan_reload(config_from_dict(BASE), config_from_dict(explicit))
    assert (plan.stop, plan.start, plan.restart_needed) == ((), (), ())
