"""What one client can make a table listener hold: the bounds, and how a hit is handled.

A table client is trusted to be Postfix or Exim, but anything that can
connect can try to exhaust us: open thousands of connections (file
descriptors), trickle a request one byte at a time (every byte resets the
idle timer), pipeline without reading the replies (our send buffer grows),
or pipeline many cold names (every one a resolution).  Each of these has a
bound here, checked by the protocol layer before any lookup is made, and
every hit is reported to the factory's ``on_limit(key, detail)``: the
daemon passes :meth:`mtasts_resolver.limits.LimitLog.hit`, which counts
every hit and logs rate-limited, never once per request (passed in, not
imported: protocols depend on the lookup interface alone).

What a hit does is chosen so that it can never become a weaker TLS policy:

- too many connections: the new one is closed at once.  Postfix's table
  clients treat a lost connection as a failed lookup and defer the mail.
- too many requests in flight on one connection, or too many reply bytes it
  has not read: we stop reading that connection (the kernel's window then
  stops the client) until replies drain.  Nothing is refused and nothing is
  answered differently: Postfix sends one request at a time and never gets
  here; a client that pipelines is slowed to the pace it reads.  Answering
  TEMP instead would not bound anything: the TEMP replies themselves have to
  queue behind the unanswered ones, in request order.
- a request not complete ``request_timeout_s`` after its first byte: the
  connection is dropped, as for the idle timeout.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

#: ``on_limit(config_key, detail)``: told of every limit hit.
LimitHit = Callable[[str, str], None]


def ignore_limit(limit: str, detail: str) -> None:
    """The default ``on_limit``, for factories built outside the daemon (tests, tools)."""

# Postfix writes a request with one write(2) (dict_sockmap.c, dict_tcp.c), so
# even a loaded host completes it within milliseconds; tcp_table(5) gives a
# whole exchange 100 s.  10 s leaves room for a stalled network.
DEFAULT_REQUEST_TIMEOUT_S = 10.0
# Postfix has one request outstanding per connection; 16 lets a pipelining
# batch tool keep the resolver busy.  More buys little: cold lookups are CPU
# (a TLS handshake each), and 64 at once from one client tripled the cached
# answers' p99 for everyone else (bench/hostile.py).
DEFAULT_MAX_IN_FLIGHT = 16
# Twisted's own default write-buffer threshold (FileDescriptor.bufferSize),
# on top of the kernel's socket buffer: about 600 cached replies.
DEFAULT_MAX_UNSENT_BYTES = 65536
# One listener: a Postfix host has at most default_process_limit (100) smtp
# processes per transport, each with one connection per table.
DEFAULT_MAX_CONNECTIONS = 1024


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """One listener's bounds (``[[listen]]`` keys of the same names)."""

    max_connections: int = DEFAULT_MAX_CONNECTIONS
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT
    request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S
    max_unsent_bytes: int = DEFAULT_MAX_UNSENT_BYTES


class ConnectionBudget:
    """Connections open on every listener of the process together (``daemon.max_connections``)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open = 0
