"""Configuration: defaults work, every mistake names its key."""

import pytest

from mtasts_resolver.config import (Config, ConfigError, HostPort, SocketSpec, config_from_dict, load_config)


def test_embedded_default_listens_on_loopback():
    config = load_config(None)
    assert [(l.protocol, str(l.socket)) for l in config.listen] == [
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
    assert config.listen[0].socket == SocketSpec("/run/mtasts/socketmap.sock", None, 0o666)
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
    ({"listen": [{"unix": "/x", "mode": 660}]}, "listen[0].mode", "octal"),
    ({"listen": [{"unix": "/x", "mode": "0999"}]}, "listen[0].mode", "octal"),
    ({"listen": [{"unix": "/x", "mode": "17777"}]}, "listen[0].mode", "octal"),
    ({"listen": [{"unix": "/x", "tcp": "127.0.0.1:1"}]}, "listen[0]", "exactly one of tcp or unix"),
    ({"listen": [{"tcp": 8461}]}, "listen[0].tcp", "HOST:PORT"),
    ({"tlsrpt": {"smtp_server": "localhost"}}, "tlsrpt.smtp_server", "HOST:PORT"),
    ({"tlsrpt": {"collector_socket_mode": "0o8"}}, "tlsrpt.collector_socket_mode", "octal"),
    ({"tlsrpt": {"exim_event_socket_mode": "-1"}}, "tlsrpt.exim_event_socket_mode", "octal"),
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


@pytest.mark.parametrize("text, expected", [
    ("127.0.0.1:8461", HostPort("127.0.0.1", 8461)),
    ("[::1]:8461", HostPort("::1", 8461)),
    ("mail.example:25", HostPort("mail.example", 25)),
    ("0.0.0.0:65535", HostPort("0.0.0.0", 65535)),
])
def test_host_port_parsed_once_and_printed_back(text, expected):
    parsed = HostPort.parse(text)
    assert parsed == expected
    assert str(parsed) == text


@pytest.mark.parametrize("text", ["8461", ":8461", "host:", "host:0", "host:65536", "host:8x", "[::1]"])
def test_host_port_rejects(text):
    with pytest.raises(ConfigError, match="HOST:PORT"):
        HostPort.parse(text, "x.tcp")


@pytest.mark.parametrize("mode, expected", [("0660", 0o660), ("600", 0o600), ("0o666", 0o666), ("7777", 0o7777),
                                            ("0", 0)])
def test_modes_are_octal_strings_read_as_ints(mode, expected):
    config = config_from_dict({"listen": [{"unix": "/x", "mode": mode}],
                               "tlsrpt": {"collector_socket_mode": mode, "exim_event_socket_mode": mode}})
    assert config.listen[0].mode == expected and isinstance(config.listen[0].mode, int)
    assert config.tlsrpt.collector_spec.mode == expected
    assert config.tlsrpt.exim_event_spec.mode == expected


def test_every_socket_has_the_same_typed_spec():
    config = config_from_dict({
        "listen": [{"unix": "/run/m/s.sock", "mode": "0600", "owner": "postfix", "group": "mail"},
                   {"protocol": "tcp_table", "tcp": "[::1]:8462"}],
        "tlsrpt": {"collector_socket": "/run/m/t.sock", "collector_socket_mode": "0620",
                   "collector_socket_owner": "mtasts", "collector_socket_group": "postfix",
                   "exim_event_socket": "/run/m/e.sock", "exim_event_socket_mode": "0666",
                   "exim_event_socket_owner": "mtasts", "exim_event_socket_group": "Debian-exim",
                   "smtp_server": "[::1]:587"}})
    assert config.listen[0].socket == SocketSpec("/run/m/s.sock", None, 0o600, "postfix", "mail")
    assert config.listen[1].socket == SocketSpec("", HostPort("::1", 8462))
    assert config.tlsrpt.collector_spec == SocketSpec("/run/m/t.sock", None, 0o620, "mtasts", "postfix")
    assert config.tlsrpt.exim_event_spec == SocketSpec("/run/m/e.sock", None, 0o666, "mtasts", "Debian-exim")
    assert config.tlsrpt.smtp_server == HostPort("::1", 587)


def test_socket_defaults():
    tlsrpt = Config().tlsrpt
    assert tlsrpt.collector_spec == SocketSpec("", None, 0o660) == tlsrpt.exim_event_spec
    assert tlsrpt.smtp_server == HostPort("127.0.0.1", 25)
