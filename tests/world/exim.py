"""Exim running contrib/exim exactly as shipped: the small test configuration that ``.include``s it.

The host's Exim tests (tests/e2e/test_mta_exim.py, Debian's binary unpacked)
and the booted containers' (tests/system/test_booted.py, Debian's package
installed) run the same wrapper: the macros contrib/exim/main.conf asks for
(the daemon's readsocket, the test CA, loopback MX hosts allowed), then the
three files, then what a test instance needs of its own (spool, log, names).
"""

from __future__ import annotations

# Debian compiles this user into the binary and looks it up before reading any configuration.
EXIM_USER, EXIM_GROUP = "Debian-exim", "Debian-exim"


def contrib_wrapper(contrib: str, binary: str, readsocket_port: int, ca_file: str, spool: str, log: str,
                    event_socket: str = "") -> str:
    """The configuration file (``exim -C``) around contrib/exim's files in directory ``contrib``."""
    return f"""\
# Test wrapper around contrib/exim: the macros first, then the files as shipped.
MTASTS_RESOLVER_SOCKET = inet:127.0.0.1:{readsocket_port}
MTASTS_RESOLVER_CA = {ca_file}
MTASTS_RESOLVER_IGNORE_TARGET_HOSTS = 0.0.0.0
{f"MTASTS_RESOLVER_EVENT_SOCKET = {event_socket}" if event_socket else ""}
.include {contrib}/main.conf

exim_path = {binary}
exim_user = {EXIM_USER}
exim_group = {EXIM_GROUP}
spool_directory = {spool}
log_file_path = {log}/%slog
primary_hostname = sender-exim.test
qualify_domain = sender-exim.test
domainlist local_domains = @ : localhost
log_selector = +tls_certificate_verified +tls_sni +smtp_protocol_error
tls_require_ciphers = NORMAL

begin routers
.include {contrib}/routers.conf

begin transports
.include {contrib}/transports.conf

begin retry
*   *   F,1h,1h
"""
