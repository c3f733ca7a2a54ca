"""The one place the daemon makes its sockets, from a :class:`~mtasts_resolver.config.SocketSpec`.

Listeners (socketmap, tcp_table, readsocket), the libtlsrpt datagram
collector and the Exim event socket all come from here, so a UNIX socket
file gets the same treatment whoever asks for it: a socket file left
behind (by a stop, or by a killed daemon) is removed, then the socket is
bound and given its mode, owner and group before anyone can connect
(``listen()`` comes last).
Plain ``socket`` module sockets: a worker pool's parent binds them without
a reactor, and the reactor adopts them with :func:`adopt_listener`.
"""

from __future__ import annotations

import grp
import os
import pwd
import socket
import stat

from twisted.internet import tcp, unix
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Factory

from mtasts_resolver.config import SocketSpec

LISTEN_BACKLOG = 1024   # listen(2) backlog; the kernel caps it at net.core.somaxconn


class UnknownOwner(KeyError):
    """The owner or group named for a socket file does not exist: a configuration mistake, not the system's.

    A KeyError, as ``pwd``/``grp`` raise, so callers tell it from the
    ``OSError`` of a socket the system refuses.
    """

    def __str__(self) -> str:
        return str(self.args[0])


def remove_stale_socket(path: str) -> None:
    """A socket file left behind would make bind() fail; other files are left alone."""
    try:
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)
    except FileNotFoundError:
        pass


def stream_listener(spec: SocketSpec, backlog: int = LISTEN_BACKLOG) -> socket.socket:
    """A listening TCP or UNIX stream socket.

    Raises :class:`UnknownOwner` or the ``OSError`` of bind(2), chmod(2), chown(2).
    """
    if spec.address is not None:
        host = spec.address.host
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, spec.address.port))
            sock.listen(backlog)
        except BaseException:
            sock.close()
            raise
        return sock
    sock = _unix_bound(spec, socket.SOCK_STREAM)
    sock.listen(backlog)
    return sock


def unix_datagram(spec: SocketSpec) -> socket.socket:
    """A bound UNIX datagram socket (the libtlsrpt collector's); raises as :func:`stream_listener`."""
    return _unix_bound(spec, socket.SOCK_DGRAM)


#: New connections a listener accepts per event-loop turn (:class:`_AcceptsFairly`).
ACCEPTS_PER_TURN = 8


def adopt_listener(reactor, sock: socket.socket, factory: Factory, spec: SocketSpec) -> IListeningPort:
    """The reactor accepts on ``sock`` (from :func:`stream_listener`, or inherited); ``sock`` is closed.

    Twisted's UNIX port chmods its socket file when it starts listening,
    adopted or not, to its own ``mode`` (0o666 by default):
    ``reactor.adoptStreamPort`` would leave every adopted socket file
    world-writable whatever ``spec.mode`` says.  So a UNIX socket is adopted
    through the port class with ``spec.mode`` set first (Twisted 22.4 has
    the same ``_fromListeningDescriptor`` and ``mode``), one that leaves the
    file in place when it closes (:class:`_AdoptedUnixPort`).
    """
    try:
        sock.setblocking(False)   # the adopting port's precondition: a blocking accept() would stall the reactor
        if sock.family != socket.AF_UNIX:
            port = _FairTcpPort._fromListeningDescriptor(reactor, sock.fileno(), sock.family, factory)
        else:
            port = _AdoptedUnixPort._fromListeningDescriptor(reactor, sock.fileno(), factory)
            port.mode = spec.mode
        port.startListening()
        return port
    finally:
        sock.close()   # the port holds its own copy of the descriptor


class _AcceptsFairly:
    """At most :data:`ACCEPTS_PER_TURN` new connections per event-loop turn.

    Twisted's port accepts up to ``numberAccepts`` connections each time the
    listening socket is readable, 100 at first and 20 more after every batch
    that filled it: a client opening a thousand connections at once made
    the loop build a hundred-odd protocols before answering anyone, a stall
    of ~10 ms for every cached lookup meanwhile (bench/hostile.py).  With a
    fixed small batch, accepting takes turns with answering, as reading does
    (4 KiB per connection per turn).
    """

    @property
    def numberAccepts(self) -> int:
        return ACCEPTS_PER_TURN

    @numberAccepts.setter
    def numberAccepts(self, _: int) -> None:
        """Twisted grows or shrinks it after each batch: the batch stays fixed."""


class _FairTcpPort(_AcceptsFairly, tcp.Port):
    pass


class _AdoptedUnixPort(_AcceptsFairly, unix.Port):
    """A UNIX port that does not remove its socket file when it closes: the file is its binder's.

    In a worker pool every worker adopts the one socket the parent bound;
    Twisted's port would unlink the file as the first worker stops, from
    under the others, whose own unlink then fails and fails their stop.  A
    file left behind is a stale socket, replaced at the next bind.  (An
    adopted port has no PID lock file, the other thing ``unix.Port`` cleans.)
    """

    def connectionLost(self, reason) -> None:
        tcp.Port.connectionLost(self, reason)


def _unix_bound(spec: SocketSpec, kind: int) -> socket.socket:
    if not spec.path:
        raise ValueError(f"a UNIX socket needs a path, got {spec!r}")
    uid, gid = _owner_ids(spec)   # an unknown name fails before anything is created
    remove_stale_socket(spec.path)
    sock = socket.socket(socket.AF_UNIX, kind)
    try:
        sock.bind(spec.path)
    except BaseException:
        sock.close()
        raise
    try:
        os.chmod(spec.path, spec.mode)
        if uid != -1 or gid != -1:
            os.chown(spec.path, uid, gid)
    except BaseException:
        sock.close()
        os.unlink(spec.path)   # ours, just made: no half-configured socket file stays behind
        raise
    return sock


def uid_of(owner: str) -> int:
    """The uid of the socket file's ``owner``; -1 for "" leaves it alone (chown(2)). Also what preflight checks."""
    try:
        return pwd.getpwnam(owner).pw_uid if owner else -1
    except KeyError:
        raise UnknownOwner(f"no such user {owner!r}") from None


def gid_of(group: str) -> int:
    """The gid of the socket file's ``group``; -1 for "" leaves it alone. Also what preflight checks."""
    try:
        return grp.getgrnam(group).gr_gid if group else -1
    except KeyError:
        raise UnknownOwner(f"no such group {group!r}") from None


def _owner_ids(spec: SocketSpec) -> tuple[int, int]:
    """The uid and gid to give the socket file, or :class:`UnknownOwner` naming the path."""
    try:
        return uid_of(spec.owner), gid_of(spec.group)
    except UnknownOwner as exc:
        raise UnknownOwner(f"{spec.path}: {exc}") from None
