"""The [dane] configuration section."""

import pytest

from mtasts_resolver.config import ConfigError, DaneConfig, config_from_dict


def test_defaults_enable_dane_with_the_root_probe():
    dane = config_from_dict({}).dane
    assert dane == DaneConfig()
    assert (dane.enabled, dane.probe_name, dane.probe_type, dane.require_loopback) == (True, ".", "DNSKEY", True)
    assert dane.min_ttl_s <= dane.max_ttl_s


def test_values_and_errors_name_their_key():
    dane = config_from_dict({"dane": {"probe_name": "test.", "min_ttl_s": 1, "failure_ttl_s": 0}}).dane
    assert (dane.probe_name, dane.min_ttl_s, dane.failure_ttl_s) == ("test.", 1.0, 0.0)
    for section, where in [({"min_ttl_s": 7200}, "dane.min_ttl_s"), ({"timeout_s": 0}, "dane.timeout_s"),
                           ({"probe_type": "MX"}, "dane.probe_type"), ({"enabled": "yes"}, "dane.enabled"),
                           ({"host_concurrency": 0}, "dane.host_concurrency"), ({"ttl": 1}, "dane.ttl")]:
        with pytest.raises(ConfigError) as info:
            config_from_dict({"dane": section})
        assert info.value.path == where, section
