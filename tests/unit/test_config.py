"""Configuration: defaults work, every mistake names its key."""

import pytest

from mtasts_resolver.config import Config, ConfigError, config_from_dict, load_config


def test_embedded_default_listens_on_loopback():
    config = load_config(None)
    assert [(l.protocol, l.tcp) for l in config.listen] == [
        ("socketmap", "127.0.0.1:8461"), ("tcp_table", "127.0.0.1:8462")]
    assert config == Config()


def test_full_file(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text("""
[daemon]
log_level = "debug"
state_dir = "/tmp/state"
[[listen]]
protocol = "socketmap"
unix = "/run/mtasts/socketmap.sock"
mode = "0666"
[dns]
nameservers = ["127.0.0.1", "::1"]
timeout_s = 2
[mta_sts]
http_timeout_s = 3.5
[tlsrpt]
attribute_maps = []
""")
    config = load_config(path)
    assert config.listen[0].unix == "/run/mtasts/socketmap.sock"
    assert config.dns.nameservers == ("127.0.0.1", "::1")
    assert config.dns.timeout_s == 2.0 and isinstance(config.dns.timeout_s, float)
    assert config.cache_path.as_posix() == "/tmp/state/cache.sqlite3"
    assert config.tlsrpt.attribute_maps == ()


@pytest.mark.parametrize("data, where, message", [
    ({"dns": {"timeout": 1}}, "dns.timeout", "unknown key"),
    ({"nonsense": {}}, "nonsense", "unknown key"),
    ({"dns": {"timeout_s": "5"}}, "dns.timeout_s", "expected a number"),
    ({"dns": {"port": 5.5}}, "dns.port", "expected an integer"),
    ({"dns": {"port": True}}, "dns.port", "expected an integer"),
    ({"dns": {"nameservers": "127.0.0.1"}}, "dns.nameservers", "expected a list"),
    ({"daemon": {"log_level": "loud"}}, "daemon.log_level", "must be one of"),
    ({"mta_sts": {"max_policy_bytes": 10}}, "mta_sts.max_policy_bytes", "at least"),
    ({"listen": []}, "listen", "at least one listener"),
    ({"listen": [{"protocol": "socketmap"}]}, "listen[0]", "exactly one of tcp or unix"),
    ({"listen": [{"tcp": "8461"}]}, "listen[0].tcp", "HOST:PORT"),
    ({"listen": [{"unix": "/x", "mode": "rw"}]}, "listen[0].mode", "octal"),
    ({"listen": [{"tcp": "127.0.0.1:1", "colour": "red"}]}, "listen[0].colour", "unknown key"),
])
def test_errors_name_the_key(data, where, message):
    with pytest.raises(ConfigError) as info:
        config_from_dict(data)
    assert info.value.path == where
    assert message in str(info.value)
    assert str(info.value).startswith(f"Error in configuration at '{where}'")


def test_bad_toml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[dns\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml")
