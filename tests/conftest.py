"""Markers by directory, and the real test world's fixtures (DNS, HTTPS, CA) from tests.world.

``tests/unit`` needs nothing but the venv (no root, no nsd/unbound/postfix);
``tests/e2e`` starts the real world on 127.x loopback addresses and needs
root; ``tests/system`` builds and installs the .deb.  Each test is marked by
its directory, so ``-m "not e2e and not system"`` selects exactly tests/unit.
Importing this file starts nothing: the world starts when a test asks for
one of its fixtures.
"""

from pathlib import Path

import pytest

from tests.world.fixtures import *  # noqa: F401,F403  (pki, dns_world, policy_server)

_MARK_BY_DIR = {"e2e": pytest.mark.e2e, "system": pytest.mark.system}
_TESTS = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        try:
            top = Path(item.path).relative_to(_TESTS).parts[0]
        except ValueError:   # a test file outside tests/
            continue
        if top in _MARK_BY_DIR:
            item.add_marker(_MARK_BY_DIR[top])
