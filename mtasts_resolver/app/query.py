"""``mtasts-resolver query DOMAIN``: resolve one domain now, as the daemon would, and explain the answer."""

from __future__ import annotations

import json
import time

from mtasts_resolver.app.assembly import build_lookups
from mtasts_resolver.app.exits import OK
from mtasts_resolver.app.explain import explain, explain_json
from mtasts_resolver.config import Config
from mtasts_resolver.policy.keys import KeyKind, parse_key
from mtasts_resolver.store import DamagedCache, StoreError, open_store
from mtasts_resolver.store.sqlite import SqliteStore


async def query_command(reactor, config: Config, domain: str, map_name: str, as_json: bool = False) -> int:
    key = parse_key(domain)
    if key.kind is not KeyKind.DOMAIN:
        if as_json:
            print(json.dumps({"domain": domain, "answer": {"kind": "NOTFOUND", "text": ""}, "why": key.reason}))
        else:
            print(f"{domain}: answer NOTFOUND without any lookup ({key.reason})")
        return OK
    try:
        store = open_store(config.cache, config.cache_path)
        cache_note = f"persistent cache {config.cache_path}"
    except StoreError as exc:
        store = SqliteStore(":memory:")
        cache_note = f"no persistent cache ({exc})"
    lookups = build_lookups(config, reactor, store)
    try:
        lookups.policy.load()
    except DamagedCache as exc:   # the readable rows are loaded; the daemon would refuse to start
        cache_note = f"{cache_note}, DAMAGED: {exc}"
    before = lookups.policy.cached_policy(key.domain)
    if lookups.probe is not None:
        await lookups.probe.check()  # DANE only with a validating resolver, as in the daemon
    resolution = await lookups.policy.resolve(key.domain)
    answer = lookups.policy.answer_now(map_name, key.domain)
    if as_json:
        print(json.dumps(explain_json(resolution, before, answer, cache_note), indent=2))
    else:
        print(explain(resolution, before, answer, cache_note, time.time()))
    store.close()
    return OK
