"""Session-scoped pytest fixtures for the test world, registered by tests/conftest.py.

The world binds the fixed loopback addresses of ``addresses`` (moved by
``TEST_WORLD_ID``), so one session runs one copy: test modules use these
fixtures by name and never import this module's fixtures themselves.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .addresses import WORLD_ID
from .dns import DnsWorld
from .pki import TestPKI
from .policy_server import PolicyServer
from .postgres import PostgresServer

__all__ = ["pki", "dns_world", "policy_server", "postgres", "WORLD_ID"]


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPKI:
    """The test CA; clients trust ``pki.ca_file`` and nothing else."""
    return TestPKI(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def dns_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DnsWorld]:
    """Running nsd + validating and plain unbound on the plan's DNS addresses; add zones as needed."""
    with DnsWorld(tmp_path_factory.mktemp("dns")) as world:
        yield world


@pytest.fixture(scope="session")
def policy_server(pki: TestPKI) -> Iterator[PolicyServer]:
    """Running HTTPS server for every ``mta-sts.<domain>`` on the plan's POLICY_IP:443."""
    with PolicyServer(pki) as server:
        yield server


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """The suite's own PostgreSQL server (tests/world/postgres.py); each test takes a database of its own."""
    with PostgresServer() as server:
        yield server
