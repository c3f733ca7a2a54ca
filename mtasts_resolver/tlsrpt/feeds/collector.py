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
READER_POLL_S = 0.25               # how often the reader thread checks whether to stop
DRAIN_BATCH_MAX = 4096             # datagrams read before handing a batch over
PARSED_CACHE_ENTRIES = 10000       # distinct datagrams remembered (each a few hundred bytes)


class DatagramCollector(Service):
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
        self._received: deque[list[bytes]] = deque()
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
        sock.settimeout(READER_POLL_S)
        self._sock = sock
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
            self._thread.join()
            self._thread = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._count()  # what the reader handed over last

    # -- reader thread --------------------------------------------------------

    def _read_loop(self) -> None:
        sock = self._sock
        assert sock is not None
        while not self._stopping.is_set():
            try:
                batch = [sock.recv(MAX_DATAGRAM_BYTES)]
            except (socket.timeout, InterruptedError):
                continue
            except OSError:
                return  # closed under us at shutdown
            while len(batch) < DRAIN_BATCH_MAX:
                try:
                    batch.append(sock.recv(MAX_DATAGRAM_BYTES, socket.MSG_DONTWAIT))
                except (BlockingIOError, InterruptedError, TimeoutError):  # a socket with a timeout says TimeoutError
                    break
            self._received.append(batch)
            with self._wake_lock:
                if self._wake_pending:
                    continue
                self._wake_pending = True
            self._reactor.callFromThread(self._count)

    # -- reactor thread -------------------------------------------------------

    def _count(self) -> None:
        with self._wake_lock:
            self._wake_pending = False
        now = self._reactor.seconds()
        day = utc_day(now)
        if day != self._cache_day or len(self._cache) > PARSED_CACHE_ENTRIES:
            self._cache, self._cache_day = {}, day
        keys: list[tuple[str, str, str, str, str]] = []
        while self._received:
            for data in self._received.popleft():
                parsed = self._cache.get(data)
                if parsed is None:
                    try:
                        outcomes = parse_datagram(data, now)
                    except DatagramError as exc:
                        self.rejected += 1
                        self.log.warn("ignoring a datagram that is not libtlsrpt's: {error} ({size} bytes)",
                                      error=exc, size=len(data))
                        continue
                    parsed = self._cache[data] = [key for outcome in outcomes for key in outcome.keys()]
                keys += parsed
                self.datagrams += 1
        if keys:
            self._spool.add_keys(keys)


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
