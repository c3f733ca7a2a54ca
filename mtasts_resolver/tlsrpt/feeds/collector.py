"""The UNIX datagram collector: a drop-in for tlsrpt-collectd on ``smtp_tlsrpt_socket_name``.

libtlsrpt sends with ``MSG_DONTWAIT``: when the socket's receive queue is
full the datagram is lost, and for AF_UNIX datagram sockets that queue is
only ``net.unix.max_dgram_qlen`` datagrams long (10 by kernel default, 512
with systemd's sysctl defaults), whatever SO_RCVBUF says.  So the socket is
read by a dedicated thread that does nothing but ``recv`` and hand raw bytes
over; parsing and counting happen on the reactor thread, committing on the
spool's writer thread.  The reader waits for the GIL at most the switch
interval, which is lowered to ``READER_SWITCH_INTERVAL_S`` so a busy
reactor cannot stall it for the default 5 ms.
"""

from __future__ import annotations

import os
import select
import socket
import sys
import threading
from collections import deque

from twisted.application.service import Service
from twisted.internet.interfaces import IReactorFromThreads
from twisted.logger import Logger

from mtasts_resolver.config import SocketSpec
from mtasts_resolver.net.sockets import unix_datagram
from mtasts_resolver.tlsrpt.feeds.datagram import MAX_DATAGRAM_BYTES, DatagramError, parse_datagram
from mtasts_resolver.tlsrpt.model import utc_day
from mtasts_resolver.tlsrpt.spool import OutcomeSpool

READER_SWITCH_INTERVAL_S = 0.0005  # CPython's GIL switch interval (sys.setswitchinterval), default 0.005
DRAIN_BATCH_MAX = 4096             # datagrams read at most before handing a batch over...
DRAIN_BATCH_MAX_S = 0.05           # ...or after this long, so a steady stream is handed over at once
PARSED_CACHE_ENTRIES = 10000       # distinct datagrams remembered (each a few hundred bytes)


class DatagramCollector(Service):
    """Reads the socket on its own thread; counts on the reactor thread; the spool commits.

    Latency: the reader hands a batch over as soon as the socket's queue is
    empty, or after ``DRAIN_BATCH_MAX`` datagrams or ``DRAIN_BATCH_MAX_S``
    of reading, whichever comes first, so under any arrival pattern a
    datagram reaches the spool within ``DRAIN_BATCH_MAX_S`` plus the
    reactor's turn, and the spool commits it within its flush interval.
    The reader sleeps in ``poll`` on the socket and a wake-up pipe, so
    stopping never waits for the sender to pause.  Each datagram is parsed
    on its own: a bad one is counted as rejected and affects no other.
    Sessions are dated by when their datagram arrived (the reader's clock
    reading for the batch), not by when it was counted.
    """

    log = Logger()

    def __init__(self, reactor: IReactorFromThreads, spool: OutcomeSpool, spec: SocketSpec,
                 rcvbuf_bytes: int) -> None:
        self._reactor = reactor
        self._spool = spool
        self._spec = spec
        self._rcvbuf_bytes = rcvbuf_bytes
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._wake_r, self._wake_w = -1, -1
        self._received: deque[tuple[float, list[bytes]]] = deque()
        self._wake_lock = threading.Lock()
        self._wake_pending = False
        # Sessions to the same domain with the same outcome send byte-identical
        # datagrams: parse each distinct one once per UTC day.
        self._cache: dict[bytes, list[tuple[str, str, str, str, str]]] = {}
        self._cache_day = ""
        self.datagrams = 0   # counted since start
        self.rejected = 0    # not libtlsrpt datagrams

    def startService(self) -> None:
        super().startService()
        sock = unix_datagram(self._spec)
        _set_rcvbuf(sock, self._rcvbuf_bytes)
        sock.setblocking(False)
        self._sock = sock
        self._wake_r, self._wake_w = os.pipe()
        sys.setswitchinterval(min(sys.getswitchinterval(), READER_SWITCH_INTERVAL_S))
        self._stopping.clear()
        self._thread = threading.Thread(target=self._read_loop, name="tlsrpt-collector", daemon=True)
        self._thread.start()
        self.log.info("collecting TLSRPT datagrams on {path} (max_dgram_qlen {qlen})", path=self._spec.path,
                      qlen=_max_dgram_qlen())

    def stopService(self) -> None:
        super().stopService()
        self._stopping.set()
        if self._thread is not None:
            os.write(self._wake_w, b"x")   # out of poll at once; the drain loop checks _stopping per datagram
            self._thread.join()
            self._thread = None
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                os.close(fd)
        self._wake_r = self._wake_w = -1
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._count()  # what the reader handed over last

    # -- reader thread --------------------------------------------------------

    def _read_loop(self) -> None:
        sock = self._sock
        assert sock is not None
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        clock = self._reactor.seconds
        while not self._stopping.is_set():
            try:
                poller.poll()
            except InterruptedError:
                continue
            arrived = clock()
            batch: list[bytes] = []
            deadline = arrived + DRAIN_BATCH_MAX_S
            while len(batch) < DRAIN_BATCH_MAX and not self._stopping.is_set():
                try:
                    batch.append(sock.recv(MAX_DATAGRAM_BYTES + 1))   # one byte more: an oversize one is seen
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:
                    return  # closed under us at shutdown
                if len(batch) % 64 == 0 and clock() >= deadline:
                    break
            if not batch:
                continue
            self._received.append((arrived, batch))
            with self._wake_lock:
                if self._wake_pending:
                    continue
                self._wake_pending = True
            self._reactor.callFromThread(self._count)

    # -- reactor thread -------------------------------------------------------

    def _count(self) -> None:
        with self._wake_lock:
            self._wake_pending = False
        keys: list[tuple[str, str, str, str, str]] = []
        while self._received:
            arrived, batch = self._received.popleft()
            day = utc_day(arrived)
            if day != self._cache_day or len(self._cache) > PARSED_CACHE_ENTRIES:
                self._cache, self._cache_day = {}, day
            for data in batch:
                parsed = self._cache.get(data)
                if parsed is None:
                    parsed = self._parse(data, arrived)
                    if parsed is None:
                        continue
                    self._cache[data] = parsed
                keys += parsed
                self.datagrams += 1
        if keys:
            self._spool.add_keys(keys)

    def _parse(self, data: bytes, arrived: float) -> list[tuple[str, str, str, str, str]] | None:
        """The counter keys of one datagram, None (logged, counted as rejected) when it is not usable."""
        try:
            return [key for outcome in parse_datagram(data, arrived) for key in outcome.keys()]
        except DatagramError as exc:
            self.log.warn("ignoring a datagram that is not libtlsrpt's: {error} ({size} bytes)",
                          error=exc, size=len(data))
        except Exception:   # a parser bug must cost this datagram only, never the batch
            self.log.failure("ignoring a datagram the parser failed on ({size} bytes)", size=len(data))
        self.rejected += 1
        return None


def _set_rcvbuf(sock: socket.socket, size: int) -> None:
    """As root, SO_RCVBUFFORCE passes net.core.rmem_max; otherwise the kernel caps SO_RCVBUF."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, 33, size)  # SO_RCVBUFFORCE (Linux)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)


def _max_dgram_qlen() -> str:
    try:
        with open("/proc/sys/net/unix/max_dgram_qlen") as handle:
            return handle.read().strip()
    except OSError:
        return "unknown"
