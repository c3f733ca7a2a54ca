"""The STATUS= text systemd shows for DANE, and the watchdog interval, as tables."""

from __future__ import annotations

import os

import pytest

from mtasts_resolver.app.systemd import dane_status, watchdog_interval_s
from tests.unit.helpers import FakeProbe


@pytest.mark.parametrize("enabled,probe,expected", [
    (False, None, "DANE off (dane.enabled = false)"),
    (True, None, "DANE on"),
    (True, FakeProbe(validating=True), "DANE on"),
    (True, FakeProbe(validating=False), "DANE DISABLED: resolver does not validate DNSSEC"),
])
def test_dane_status(enabled, probe, expected):
    assert dane_status(enabled, probe) == expected


@pytest.mark.parametrize("environ,interval_s", [
    ({}, 0.0),
    ({"WATCHDOG_USEC": "20000000"}, 10.0),
    ({"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": "1"}, 0.0),   # meant for another process
    ({"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": str(os.getpid())}, 10.0),
    ({"WATCHDOG_USEC": "junk"}, 0.0),
])
def test_watchdog_interval_is_half_of_watchdog_usec(environ, interval_s):
    assert watchdog_interval_s(environ) == interval_s
