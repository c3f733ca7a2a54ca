"""Session-scoped pytest fixtures for the test world.

Use with ``from tests.world.fixtures import *`` in a conftest (or a test
module).  The world binds fixed loopback addresses, so two live copies
would collide: if these fixtures end up registered twice (a conftest *and*
a test module importing them), both registrations share one instance,
started by the first user and stopped by the last.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import pytest

from .dns import DnsWorld
from .pki import TestPKI
from .policy_server import PolicyServer

__all__ = ["pki", "dns_world", "policy_server", "WORLD_ID"]

# The world binds fixed loopback addresses. Setting TEST_WORLD_ID=N (0-99)
# moves it to 127.53.N.x / 127.60.N.1, so several suites can run side by side.
WORLD_ID = int(os.environ.get("TEST_WORLD_ID", "0"))

T = TypeVar("T")

_shared: dict[str, list[Any]] = {}  # name -> [instance, users]


@contextmanager
def _share(name: str, make: Callable[[], T], stop: Callable[[T], None]) -> Iterator[T]:
    """Reference-counted singleton per fixture name, for the duplicate case."""
    if name not in _shared:
        _shared[name] = [make(), 0]
    entry = _shared[name]
    entry[1] += 1
    try:
        yield entry[0]
    finally:
        entry[1] -= 1
        if entry[1] == 0:
            del _shared[name]
            stop(entry[0])


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestPKI]:
    """The test CA; clients trust ``pki.ca_file`` and nothing else."""
    with _share("pki", lambda: TestPKI(tmp_path_factory.mktemp("pki")), lambda _: None) as ca:
        yield ca


@pytest.fixture(scope="session")
def dns_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DnsWorld]:
    """Running nsd + validating and plain unbound; add zones as needed."""

    def make() -> DnsWorld:
        world = DnsWorld(tmp_path_factory.mktemp("dns"), auth_addr=f"127.53.{WORLD_ID}.1",
                         resolver_addr=f"127.53.{WORLD_ID}.2", plain_resolver_addr=f"127.53.{WORLD_ID}.3")
        world.start()
        return world

    with _share("dns_world", make, DnsWorld.stop) as world:
        yield world


@pytest.fixture(scope="session")
def policy_server(pki: TestPKI) -> Iterator[PolicyServer]:
    """Running HTTPS server for every ``mta-sts.<domain>`` on 127.60.WORLD_ID.1:443."""

    def make() -> PolicyServer:
        server = PolicyServer(pki, address=f"127.60.{WORLD_ID}.1")
        server.start()
        return server

    with _share("policy_server", make, PolicyServer.stop) as server:
        yield server
