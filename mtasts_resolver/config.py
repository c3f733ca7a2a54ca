"""Typed configuration: one TOML file, validated completely at start.

Every section is a frozen dataclass whose field defaults *are* the embedded
default configuration, so ``mtasts-resolver`` runs with no file at all.  The
loader rejects unknown keys and wrong types with an error naming the dotted
key (``mta_sts.http_timeout_s: expected a number``), never a traceback.
Timeouts, sizes and counts carry their unit in the name.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SYSTEM_STATE_DIR = Path("/var/lib/mtasts-resolver")


class ConfigError(Exception):
    """A configuration problem, printed as ``Error in configuration at 'a.b': ...``."""

    def __init__(self, message: str, path: str = "") -> None:
        super().__init__(message)
        self.path = path

    def __str__(self) -> str:
        where = f" at '{self.path}'" if self.path else ""
        return f"Error in configuration{where}: {self.args[0]}"


def _meta(*, minimum: float | None = None, choices: tuple[str, ...] | None = None, octal: bool = False,
          doc: str = "") -> dict:
    """``octal``: an int field written in the file as an octal string (``mode = "0660"``).

    ``doc`` is what the key means, for the README's reference (scripts/config-reference writes it).
    """
    return {"minimum": minimum, "choices": choices, "octal": octal, "doc": doc}


MAX_FILE_MODE = 0o7777


@dataclass(frozen=True)
class HostPort:
    """A TCP address, parsed once at load from ``HOST:PORT`` (``[::1]:8461`` for IPv6)."""

    host: str
    port: int

    @classmethod
    def parse(cls, text: str, path: str = "") -> HostPort:
        host, sep, port = text.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"expected HOST:PORT, got {text!r}", path)
        return cls(host.removeprefix("[").removesuffix("]"), int(port))

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class SocketSpec:
    """Where and how to make one socket: a UNIX path with its mode, owner and group, or a TCP address.

    Every socket the daemon makes (listeners, the libtlsrpt collector, the
    Exim event socket) is described by one of these and made by
    :mod:`mtasts_resolver.net.sockets`, so all of them take the same settings.
    """

    path: str = ""                  # UNIX socket file
    address: HostPort | None = None  # or a TCP address
    mode: int = 0o660               # permissions of the socket file
    owner: str = ""                 # user / group of the socket file ("" leaves it alone)
    group: str = ""

    def __str__(self) -> str:
        return self.path or str(self.address)


@dataclass(frozen=True)
class DaemonConfig:
    """The process: logging, where its state lives, workers, shutdown."""

    log_level: str = field(default="info", metadata=_meta(choices=("debug", "info", "warn", "error"),
        doc="Least severe messages logged (to stderr: the journal under systemd)."))
    state_dir: str = field(default="", metadata=_meta(
        doc="Where the SQLite cache lives. \"\": $STATE_DIRECTORY (systemd), /var/lib/mtasts-resolver when writable, else "
            "~/.local/state/mtasts-resolver."))
    workers: int = field(default=1, metadata=_meta(minimum=1,
        doc="Processes serving the same listening sockets, one core each (app/workers.py, README \"Performance\")."))
    resolver_processes: int = field(default=2, metadata=_meta(minimum=0,
        doc="Child processes (per worker) that make the cold resolutions: DNS, the policy fetch, the DANE walk. The event "
            "loop answering cached lookups then never waits behind them (mtasts_resolver/offload). Cold work is Python "
            "CPU: two use two cores (README \"Performance\"), about 30 MB each. 0: resolve on the event loop itself."))
    drain_timeout_s: float = field(default=20.0, metadata=_meta(minimum=0,
        doc="On SIGTERM (and for listeners a SIGHUP removes), wait this long for lookups in flight to be answered before "
            "dropping their connections. Covers one DNS timeout plus one policy fetch at the defaults; keep it below the "
            "unit's TimeoutStopSec (30 s)."))
    max_connections: int = field(default=2048, metadata=_meta(minimum=1,
        doc="Client connections on all listeners of one process together; one more is closed at once. Each is a file "
            "descriptor: the packaged unit's LimitNOFILE= covers this plus the resolutions' sockets."))


@dataclass(frozen=True)
class ListenConfig:
    """One listening socket and the protocol spoken on it."""

    protocol: str = field(default="socketmap", metadata=_meta(choices=("socketmap", "tcp_table", "readsocket"),
        doc="socketmap and tcp_table for Postfix; readsocket (one lookup per connection) for Exim's ${readsocket} "
            "(contrib/exim)."))
    tcp: HostPort | None = field(default=None, metadata=_meta(
        doc="\"HOST:PORT\" to listen on, IPv6 as \"[::1]:8461\". Set exactly one of tcp and unix."))
    unix: str = field(default="", metadata=_meta(doc="Path of a UNIX stream socket to listen on instead of tcp."))
    mode: int = field(default=0o660, metadata=_meta(octal=True, doc="Octal permissions of the UNIX socket."))
    owner: str = field(default="", metadata=_meta(doc="User owning the UNIX socket; \"\" leaves it alone."))
    group: str = field(default="", metadata=_meta(
        doc="Group of the UNIX socket (e.g. \"postfix\"); \"\" leaves it alone."))
    map_name: str = field(default="postfix", metadata=_meta(
        doc="tcp_table and readsocket requests carry no map name: lookups on this listener use this one."))
    idle_timeout_s: float = field(default=110.0, metadata=_meta(minimum=1,
        doc="Close connections idle this long. Postfix drops idle socketmap connections after 100 s (socketmap_table(5));"
            " a little more lets it."))
    max_connections: int = field(default=1024, metadata=_meta(minimum=1,
        doc="Client connections on this listener; one more is closed at once (Postfix defers that lookup)."))
    max_in_flight: int = field(default=16, metadata=_meta(minimum=1,
        doc="Requests read but not yet answered on one connection; past it reading that connection pauses "
            "(Postfix sends one at a time)."))
    max_unsent_bytes: int = field(default=65536, metadata=_meta(minimum=4096,
        doc="Reply bytes a connection has not read; past it reading that connection pauses until they drain."))
    request_timeout_s: float = field(default=10.0, metadata=_meta(minimum=0.1,
        doc="A request must be complete this long after its first byte, or the connection is dropped (the idle "
            "timeout alone lets a byte every few seconds hold a connection forever)."))

    @property
    def socket(self) -> SocketSpec:
        return SocketSpec(self.unix, self.tcp, self.mode, self.owner, self.group)


DEFAULT_LISTENERS = (
    ListenConfig(protocol="socketmap", tcp=HostPort("127.0.0.1", 8461)),
    ListenConfig(protocol="tcp_table", tcp=HostPort("127.0.0.1", 8462)),
)


@dataclass(frozen=True)
class DnsConfig:
    """The resolver every query goes to: _mta-sts TXT, the policy host's address, the DANE walk."""

    nameservers: tuple[str, ...] = field(default=(), metadata=_meta(
        doc="Resolver addresses to ask; []: those of /etc/resolv.conf. DANE needs a validating resolver on loopback."))
    port: int = field(default=53, metadata=_meta(minimum=1, doc="UDP/TCP port of the nameservers."))
    timeout_s: float = field(default=5.0, metadata=_meta(minimum=0.1,
        doc="Deadline of one DNS lookup, retries (every 2 s at most) included."))


@dataclass(frozen=True)
class MtaStsConfig:
    """MTA-STS (RFC 8461): the policy fetch, its limits, and how long answers are kept."""

    http_timeout_s: float = field(default=10.0, metadata=_meta(minimum=0.1,
        doc="Deadline of the whole policy fetch: connect, TLS, headers, body. RFC 8461 §3.3 asks for a short timeout; 10 "
            "s covers slow hosts."))
    max_policy_bytes: int = field(default=65536, metadata=_meta(minimum=512,
        doc="Largest policy body accepted. RFC 8461 §3.3 suggests a limit; 64 KiB is what other senders use."))
    max_header_bytes: int = field(default=65536, metadata=_meta(minimum=1024,
        doc="Status and header lines of a policy response, 1xx responses included (Twisted's HTTP client caps none of "
            "it); real policy hosts send < 2 KiB."))
    max_headers: int = field(default=100, metadata=_meta(minimum=10,
        doc="Header fields of one policy response (Python's http.client refuses more than 100 too)."))
    max_informational_responses: int = field(default=10, metadata=_meta(minimum=0,
        doc="1xx responses accepted before the final one (RFC 9110 §15.2 allows any number; nobody sends many)."))
    ca_file: str = field(default="", metadata=_meta(
        doc="PEM bundle to trust for policy hosts; \"\": the system store."))
    txt_recheck_s: float = field(default=300.0, metadata=_meta(minimum=0,
        doc="How old a cached answer may get before its _mta-sts TXT id is checked again, in the background: the cached "
            "answer is still served at once."))
    refresh_before_s: float = field(default=86400.0, metadata=_meta(minimum=0,
        doc="Re-fetch a policy this long before its max_age runs out (RFC 8461 §5.1)."))
    refresh_interval_s: float = field(default=600.0, metadata=_meta(minimum=1,
        doc="How often the cache is scanned for policies due for refresh."))
    refresh_concurrency: int = field(default=8, metadata=_meta(minimum=1,
        doc="Policy refreshes of one scan running at once."))
    negative_ttl_s: float = field(default=300.0, metadata=_meta(minimum=0,
        doc="Domains without a policy are remembered this long."))
    failure_ttl_s: float = field(default=30.0, metadata=_meta(minimum=0,
        doc="After a failed discovery with nothing cached, the \"no policy\" answer is remembered this long before trying "
            "again."))
    max_concurrent_resolutions: int = field(default=256, metadata=_meta(minimum=1,
        doc="Resolutions (DNS + policy fetch) running at once, all domains together: each holds sockets, and 1,024 fds go"
            " fast. Past it a new domain is answered TEMP (never cached, never NOTFOUND: a limit must not be a "
            "downgrade)."))
    max_negative_entries: int = field(default=100000, metadata=_meta(minimum=1,
        doc="Domains remembered without an MTA-STS policy (no policy, failures, DANE-only answers), least recently used "
            "forgotten first. Policies are always kept (RFC 8461 §5.1)."))


@dataclass(frozen=True)
class DaneConfig:
    """DANE for SMTP (RFC 7672): only data the resolver validated (AD bit) counts."""

    enabled: bool = field(default=True, metadata=_meta(
        doc="Answer DANE (RFC 7672) for domains whose MX hosts publish validated TLSA records; false: MTA-STS only."))
    probe_name: str = field(default=".", metadata=_meta(
        doc="The validation probe: this name and probe_type must come back with the AD bit, at start-up and every "
            "probe_interval_s, or DANE answers are off."))
    probe_type: str = field(default="DNSKEY", metadata=_meta(choices=("DNSKEY", "SOA", "NS", "A", "AAAA", "TXT"),
        doc="Record type of the validation probe."))
    probe_interval_s: float = field(default=300.0, metadata=_meta(minimum=1,
        doc="How often the validation probe runs after start-up."))
    require_loopback: bool = field(default=True, metadata=_meta(
        doc="An AD bit is only as trustworthy as the path from the resolver: refuse DANE unless every nameserver is on a "
            "loopback address."))
    timeout_s: float = field(default=10.0, metadata=_meta(minimum=0.1,
        doc="Deadline of the whole DANE discovery of one domain (MX, A/AAAA, TLSA)."))
    min_ttl_s: float = field(default=60.0, metadata=_meta(minimum=0,
        doc="DANE results are cached for the smallest TTL of the records that decided them, clamped to [min_ttl_s, "
            "max_ttl_s]."))
    max_ttl_s: float = field(default=3600.0, metadata=_meta(minimum=1, doc="Upper end of that clamp."))
    failure_ttl_s: float = field(default=10.0, metadata=_meta(minimum=0,
        doc="A failed DANE discovery (TEMP answer) is remembered this long."))
    host_concurrency: int = field(default=4, metadata=_meta(minimum=1,
        doc="MX hosts of one domain looked up at the same time."))


@dataclass(frozen=True)
class CacheConfig:
    """The persistent policy cache."""

    backend: str = field(default="sqlite", metadata=_meta(choices=("sqlite", "postgresql"),
        doc="Where policies and the TLS-RPT spool are kept across restarts: sqlite (this host) or postgresql (one "
            "database for a fleet of MTAs, README \"Fleet\")."))
    path: str = field(default="", metadata=_meta(doc="The cache file; \"\": STATE_DIR/cache.sqlite3."))
    dsn: str = field(default="", metadata=_meta(
        doc="For postgresql: a libpq connection string or URI (\"host=db1 dbname=mtasts user=mtasts "
            "passfile=/etc/mtasts-resolver/pgpass\"). Keep the password out of it: libpq reads it from passfile, "
            "PGPASSFILE or PGPASSWORD. Never logged with a password."))
    connect_timeout_s: int = field(default=5, metadata=_meta(minimum=1,
        doc="For postgresql: how long one connection attempt may take (libpq connect_timeout)."))
    statement_timeout_s: float = field(default=10.0, metadata=_meta(minimum=0.1,
        doc="For postgresql: the longest one statement may run before the server cancels it."))


@dataclass(frozen=True)
class TlsrptConfig:
    """TLS reporting (RFC 8460): outcome feeds into the spool, and the reports made from it (``report``)."""

    attribute_maps: tuple[str, ...] = field(default=("postfix-tlsrpt",), metadata=_meta(
        doc="Socketmap names (socketmap:...:NAME) whose answers carry Postfix >= 3.10 TLSRPT attributes. Postfix <= 3.9 "
            "defers mail on them: opt in only."))

    # -- outcome feeds (all off by default; the daemon's own outcomes are always spooled)
    collector_socket: str = field(default="", metadata=_meta(
        doc="UNIX datagram socket for libtlsrpt (Postfix >= 3.10 smtp_tlsrpt_socket_name); \"\": off."))
    collector_socket_mode: int = field(default=0o660, metadata=_meta(octal=True,
        doc="Octal permissions of collector_socket."))
    collector_socket_owner: str = field(default="", metadata=_meta(
        doc="User owning collector_socket; \"\" leaves it alone."))
    collector_socket_group: str = field(default="", metadata=_meta(
        doc="Group of collector_socket, e.g. \"postfix\" so smtp(8) may write; \"\" leaves it alone."))
    collector_rcvbuf_bytes: int = field(default=8 * 1024 * 1024, metadata=_meta(minimum=65536,
        doc="Receive buffer of collector_socket, asked for with SO_RCVBUFFORCE (root) or SO_RCVBUF "
            "(tlsrpt/feeds/collector.py about max_dgram_qlen)."))
    postfix_log: str = field(default="", metadata=_meta(
        doc="Postfix 3.7-3.9 log file to follow for outcomes, or \"journal\"; \"\": off."))
    exim_log: str = field(default="", metadata=_meta(doc="Exim main log to follow for outcomes; \"\": off."))
    exim_event_socket: str = field(default="", metadata=_meta(
        doc="UNIX stream socket for Exim's event_action readsocket (README \"Exim event format\"); \"\": off."))
    exim_event_socket_mode: int = field(default=0o660, metadata=_meta(octal=True,
        doc="Octal permissions of exim_event_socket."))
    exim_event_socket_owner: str = field(default="", metadata=_meta(
        doc="User owning exim_event_socket; \"\" leaves it alone."))
    exim_event_socket_group: str = field(default="", metadata=_meta(
        doc="Group of exim_event_socket; \"\" leaves it alone."))
    log_poll_interval_s: float = field(default=1.0, metadata=_meta(minimum=0.05,
        doc="How often postfix_log and exim_log are read for new lines."))
    spool_flush_interval_s: float = field(default=0.2, metadata=_meta(minimum=0.01,
        doc="Outcomes are committed to the spool this often: the most a kill -9 can lose."))
    sending_mta_ip: str = field(default="", metadata=_meta(
        doc="sending-mta-ip written into failure details for feeds that do not log it (the Postfix and Exim logs) and "
            "the daemon's own policy-discovery failures; \"\": the source address of the kernel's route to the receiving "
            "IP, or to the Internet when no MX was contacted (right unless the MTA binds another)."))

    # -- reports (mtasts-resolver report)
    organization_name: str = field(default="", metadata=_meta(
        doc="organization-name of the reports (RFC 8460 §4.4)."))
    contact_info: str = field(default="", metadata=_meta(
        doc="contact-info of the reports (RFC 8460 §4.4): an email address."))
    submitter: str = field(default="", metadata=_meta(
        doc="TLS-Report-Submitter and DKIM d= domain; \"\": the domain of contact_info."))
    mail_from: str = field(default="", metadata=_meta(doc="From: of report mail; \"\": contact_info."))
    dkim_selector: str = field(default="", metadata=_meta(
        doc="DKIM selector of report mail (RFC 8460 §3 asks for a DKIM signature)."))
    dkim_key_file: str = field(default="", metadata=_meta(
        doc="PEM private key signing report mail; its public half is published at SELECTOR._domainkey.SUBMITTER."))
    mail_submission: str = field(default="sendmail", metadata=_meta(choices=("sendmail", "smtp"),
        doc="How report mail leaves: the sendmail program or SMTP to smtp_server."))
    sendmail_command: tuple[str, ...] = field(default=("/usr/sbin/sendmail", "-i"), metadata=_meta(
        doc="The sendmail program and its options; \"-f FROM -- RCPT\" is appended."))
    smtp_server: HostPort = field(default=HostPort("127.0.0.1", 25), metadata=_meta(
        doc="\"HOST:PORT\" of the SMTP server for mail_submission = \"smtp\"."))
    smtp_tls_name: str = field(default="", metadata=_meta(
        doc="Name smtp_server's STARTTLS certificate is checked against; \"\": the host of smtp_server."))
    smtp_tls_verify: bool = field(default=True, metadata=_meta(
        doc="Check smtp_server's STARTTLS certificate (ca_file or the system store); false for a local relay "
            "without a valid certificate (a snakeoil one on 127.0.0.1): still encrypted, not authenticated."))
    https_ignore_cert_errors: bool = field(default=True, metadata=_meta(
        doc="Post reports to https rua hosts even when their certificate does not verify (RFC 8460 §3: submitters MAY)."))
    ca_file: str = field(default="", metadata=_meta(
        doc="PEM bundle for https rua hosts and smtp_server's STARTTLS; \"\": the system store."))
    delivery_timeout_s: float = field(default=60.0, metadata=_meta(minimum=1,
        doc="Deadline of one report delivery (HTTPS POST or mail submission)."))
    send_delay_max_s: float = field(default=14400.0, metadata=_meta(minimum=0,
        doc="First attempt at a random moment up to this long after the UTC day ends (RFC 8460 §4.1 suggests hours)."))
    retry_initial_s: float = field(default=300.0, metadata=_meta(minimum=1,
        doc="Wait before retrying a failed delivery, doubled per failed attempt."))
    retry_window_s: float = field(default=86400.0, metadata=_meta(minimum=0,
        doc="Give up on a report this long after its first attempt (RFC 8460 §5.5: up to 24 h)."))
    report_all_success_days: bool = field(default=True, metadata=_meta(
        doc="Send reports for days with only successes too (RFC 8460 §4.2: success counts are the heartbeat)."))
    retention_days: int = field(default=14, metadata=_meta(minimum=1,
        doc="Spooled outcomes and report records older than this many days are deleted."))

    @property
    def submitter_domain(self) -> str:
        return self.submitter or self.contact_info.rpartition("@")[2]

    @property
    def collector_spec(self) -> SocketSpec:
        return SocketSpec(self.collector_socket, None, self.collector_socket_mode, self.collector_socket_owner,
                          self.collector_socket_group)

    @property
    def exim_event_spec(self) -> SocketSpec:
        return SocketSpec(self.exim_event_socket, None, self.exim_event_socket_mode, self.exim_event_socket_owner,
                          self.exim_event_socket_group)


@dataclass(frozen=True)
class MetricsConfig:
    """Prometheus metrics over HTTP (README "Metrics and status"), and the per-worker counts ``status`` reads."""

    listen: HostPort | None = field(default=None, metadata=_meta(
        doc="\"HOST:PORT\" serving GET /metrics (Prometheus text format); unset: no metrics listener. Anyone who can "
            "connect can read the counts: keep it on loopback or a management network."))
    max_connections: int = field(default=16, metadata=_meta(minimum=1,
        doc="Connections to the metrics listener at once; one more is closed at once (a scraper needs one)."))
    timeout_s: float = field(default=10.0, metadata=_meta(minimum=0.1,
        doc="A metrics connection idle this long is closed."))
    snapshot_interval_s: float = field(default=5.0, metadata=_meta(minimum=0.1,
        doc="How often each worker writes its counts to STATE_DIR/status/worker-N.json: what worker 0's metrics sum "
            "(daemon.workers > 1) and what `mtasts-resolver status` shows of a running daemon."))


@dataclass(frozen=True)
class Config:
    daemon: DaemonConfig = DaemonConfig()
    listen: tuple[ListenConfig, ...] = DEFAULT_LISTENERS
    dns: DnsConfig = DnsConfig()
    mta_sts: MtaStsConfig = MtaStsConfig()
    dane: DaneConfig = DaneConfig()
    cache: CacheConfig = CacheConfig()
    tlsrpt: TlsrptConfig = TlsrptConfig()
    metrics: MetricsConfig = MetricsConfig()

    @property
    def state_dir(self) -> Path:
        return Path(self.daemon.state_dir) if self.daemon.state_dir else default_state_dir()

    @property
    def cache_path(self) -> Path:
        return Path(self.cache.path) if self.cache.path else self.state_dir / "cache.sqlite3"


def default_state_dir() -> Path:
    """A state directory that works for root, for systemd and for a plain user."""
    if os.environ.get("STATE_DIRECTORY"):
        return Path(os.environ["STATE_DIRECTORY"].split(":")[0])
    if os.access(SYSTEM_STATE_DIR, os.W_OK) or (
        not SYSTEM_STATE_DIR.exists() and os.access(SYSTEM_STATE_DIR.parent, os.W_OK)
    ):
        return SYSTEM_STATE_DIR
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "mtasts-resolver"


def load_config(path: str | Path | None) -> Config:
    """Read and validate a TOML file; ``None`` gives the embedded default."""
    if path is None:
        return Config()
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:   # TOML is UTF-8 (toml.io); tomllib lets the decoder's error through
        raise ConfigError(f"{path} is not UTF-8: byte 0x{exc.object[exc.start]:02x} at offset {exc.start}") from None
    return config_from_dict(data)


def config_from_dict(data: dict[str, Any]) -> Config:
    config = _build(Config, data, "")
    _check_listeners(config.listen)
    _check_tlsrpt(config.tlsrpt)
    if config.cache.backend == "postgresql" and not config.cache.dsn:
        raise ConfigError("backend postgresql needs a dsn", "cache.dsn")
    if config.dane.min_ttl_s > config.dane.max_ttl_s:
        raise ConfigError(f"must not exceed dane.max_ttl_s ({config.dane.max_ttl_s:g})", "dane.min_ttl_s")
    return config


def _build(cls: type, data: Any, path: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError("expected a table", path)
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in known:
            raise ConfigError(f"unknown key (known: {', '.join(known)})", _join(path, key))
    values = {}
    for name, value in data.items():
        values[name] = _convert(hints[name], value, _join(path, name), known[name].metadata)
    return cls(**values)


def _convert(hint: Any, value: Any, path: str, meta: typing.Mapping[str, Any]) -> Any:
    origin = typing.get_origin(hint)
    if origin in (types.UnionType, typing.Union):   # "X | None": TOML has no null, so a value is an X
        (hint,) = [arg for arg in typing.get_args(hint) if arg is not type(None)]
    if hint is HostPort:
        if not isinstance(value, str):
            raise ConfigError(f"expected HOST:PORT, got {value!r}", path)
        return HostPort.parse(value, path)
    if meta.get("octal"):
        return _octal_mode(value, path)
    if origin is tuple:
        item_type = typing.get_args(hint)[0]
        if not isinstance(value, list):
            raise ConfigError("expected a list", path)
        return tuple(_convert(item_type, item, f"{path}[{i}]", {}) for i, item in enumerate(value))
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, path)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError("expected true or false", path)
        return value
    if hint in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (
            hint is int and not isinstance(value, int)
        ):
            raise ConfigError(f"expected {'an integer' if hint is int else 'a number'}, got {value!r}", path)
        if meta.get("minimum") is not None and value < meta["minimum"]:
            raise ConfigError(f"must be at least {meta['minimum']}, got {value!r}", path)
        return hint(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"expected a string, got {value!r}", path)
        if meta.get("choices") and value not in meta["choices"]:
            raise ConfigError(f"must be one of {', '.join(meta['choices'])}, got {value!r}", path)
        return value
    raise TypeError(f"unsupported config type {hint!r}")  # a bug in this module, not in the file


def _check_listeners(listeners: tuple[ListenConfig, ...]) -> None:
    if not listeners:
        raise ConfigError("at least one listener is needed", "listen")
    for index, listener in enumerate(listeners):
        where = f"listen[{index}]"
        if (listener.tcp is None) == (not listener.unix):
            raise ConfigError("set exactly one of tcp or unix", where)


def _check_tlsrpt(tlsrpt: TlsrptConfig) -> None:
    if tlsrpt.contact_info and "@" not in tlsrpt.contact_info:
        raise ConfigError("expected an email address", "tlsrpt.contact_info")
    if not tlsrpt.sendmail_command:
        raise ConfigError("expected the sendmail program and its options", "tlsrpt.sendmail_command")


def _octal_mode(value: Any, path: str) -> int:
    """``"0660"`` → 0o660: file modes are written as octal strings, as for chmod(1)."""
    try:
        mode = int(value, 8) if isinstance(value, str) else -1
    except ValueError:
        mode = -1
    if not 0 <= mode <= MAX_FILE_MODE:
        raise ConfigError(f"not an octal mode such as \"0660\": {value!r}", path)
    return mode


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key
