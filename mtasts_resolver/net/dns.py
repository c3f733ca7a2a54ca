"""DNS lookups on the reactor: UDP (TCP when truncated) to the configured recursive resolver(s).

Each query goes out on a socket of its own (a fresh source port and a random
ID, RFC 5452) to the first nameserver, then the next, retried until
``dns.timeout_s``; a server's SERVFAIL or refusal moves on to the next, and
when every server has failed the answer is unknown (:class:`DnsFailure`).
Messages are written and read by :mod:`mtasts_resolver.net.dns_wire`
(Twisted's DNS codec); nothing is cached here: the policy cache decides
how long anything is kept.
"""

from __future__ import annotations

import secrets
import socket
from collections.abc import Callable

import dns.resolver
from twisted.internet import error
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint, connectProtocol
from twisted.internet.interfaces import (
    IHostnameResolver,
    IHostResolution,
    IReadDescriptor,
    IResolutionReceiver,
)
from twisted.protocols.basic import Int16StringReceiver
from twisted.python.failure import Failure
from zope.interface import implementer

from mtasts_resolver.net.dns_wire import (
    BadAnswer,
    NotTheAnswer,
    RRAnswer,
    ServerFailed,
    Truncated,
    query_message,
    query_name,
    rdtype_number,
    read_response,
)
from mtasts_resolver.net.local import LocalFailure, exhaustion

TRY_TIMEOUT_S = 2.0   # one server's turn: lost UDP is retried quickly, within dns.timeout_s


class DnsFailure(Exception):
    """The answer is unknown (SERVFAIL, timeout, refused): not the same as 'no record'."""


def _local(name: str, rdtype: str, exc: BaseException) -> LocalFailure:
    return LocalFailure(f"{name}/{rdtype}: no socket for the query: {exc}")


class _Timeout(Exception):
    """One server's turn passed without an answer."""


class DnsClient:
    """Queries the configured recursive resolver(s).

    A query this host cannot even send (out of file descriptors or buffers)
    fails with :class:`~mtasts_resolver.net.local.LocalFailure`, not
    :class:`DnsFailure`, and is counted in :attr:`exhaustions`: Twisted's
    host-name lookups (the policy fetch) see only "no address", so the fetch
    compares the count to tell our failure from the domain's.
    """

    def __init__(self, nameservers: tuple[str, ...], port: int, timeout_s: float, reactor=None) -> None:
        """No ``nameservers``: those of /etc/resolv.conf (read by dnspython). ``reactor`` None: Twisted's."""
        self._nameservers = list(nameservers) or list(dns.resolver.Resolver(configure=True).nameservers)
        self._port = port
        self._timeout_s = timeout_s
        self._reactor = reactor
        self.exhaustions = 0

    @property
    def nameservers(self) -> list[str]:
        return list(self._nameservers)

    def query(self, name: str, rdtype: str) -> Deferred[RRAnswer]:
        """Look up ``name``/``rdtype``; fails with :class:`DnsFailure` if the answer is unknown."""
        return Deferred.fromCoroutine(self._query(name, rdtype))

    async def _query(self, name: str, rdtype: str) -> RRAnswer:
        reactor = self._reactor
        if reactor is None:
            from twisted.internet import reactor
        try:
            qname, qtype = query_name(name), rdtype_number(rdtype)
        except (UnicodeEncodeError, ValueError) as exc:
            raise DnsFailure(f"{name}/{rdtype}: {exc}") from None
        deadline = reactor.seconds() + self._timeout_s
        servers = list(self._nameservers)
        index = 0
        while servers:
            left = deadline - reactor.seconds()
            if left <= 0:
                raise DnsFailure(f"{name}/{rdtype}: timed out")
            server = servers[index % len(servers)]
            qid = secrets.randbelow(65536)
            wire = query_message(qid, qname, qtype)
            check = lambda data: read_response(data, qid, qname, qtype)  # noqa: E731
            try:
                try:
                    response = await _exchange(reactor, _UdpExchange, server, self._port, wire, check,
                                               min(TRY_TIMEOUT_S, left))
                except Truncated:
                    response = await _exchange(reactor, _TcpExchange, server, self._port, wire, check,
                                               max(0.1, deadline - reactor.seconds()))
            except _Timeout:
                index += 1
                continue
            except BadAnswer as exc:
                raise DnsFailure(f"{name}/{rdtype}: {exc}") from None
            except (ServerFailed, Truncated, error.ConnectError, OSError) as exc:   # Truncated: over TCP too
                if (local := exhaustion(exc)) is not None:
                    self.exhaustions += 1
                    raise _local(name, rdtype, local) from None
                servers.remove(server)   # it cannot answer: SERVFAIL, refused, unreachable
                continue
            return response
        raise DnsFailure(f"{name}/{rdtype}: no server answered (SERVFAIL or refused)")

    async def txt(self, name: str) -> list[str]:
        """TXT records at ``name``, each with its character-strings joined (RFC 7208 §3.3 style)."""
        answer = await self.query(name, "TXT")
        return [b"".join(rdata.strings).decode("utf-8", "replace") for rdata in answer.records]

    async def addresses(self, name: str) -> list[str]:
        """IPv4 then IPv6 addresses of ``name``, both asked at once.

        Fails only when neither family could be looked up; one family
        failing while the other answers is not an error.
        """
        found: list[str] = []
        failures: list[Failure] = []
        outcomes = await DeferredList([self.query(name, rdtype) for rdtype in ("A", "AAAA")], consumeErrors=True)
        for succeeded, outcome in outcomes:
            if succeeded:
                found.extend(rdata.address for rdata in outcome.records)
            else:
                failures.append(outcome)
        if not found and failures:
            for failure in failures:   # our own trouble first: it must not read as "no address"
                if failure.check(LocalFailure):
                    failure.raiseException()
            failures[0].trap(DnsFailure)   # anything else is a bug: let it raise
            failures[0].raiseException()
        return found


def _exchange(reactor, kind, server: str, port: int, wire: bytes, check: Callable, timeout_s: float) -> Deferred:
    """Send ``wire`` to ``server`` by ``kind`` and fire with the first reply ``check`` accepts, or _Timeout.

    The socket is closed the moment the exchange ends, however it ends.
    """
    done: Deferred = Deferred()
    exchange = kind(done, wire, check)
    timer = reactor.callLater(timeout_s, lambda: done.called or done.errback(_Timeout()))

    def ended(result):
        if timer.active():
            timer.cancel()
        exchange.close()
        return result

    done.addBoth(ended)
    exchange.start(reactor, server, port)
    return done


def _answered(done: Deferred, check: Callable, data: bytes) -> bool:
    """Fire ``done`` with what ``check`` makes of a reply (or its error); False for a reply that is not ours.

    Not ours (another ID or question, unreadable): keep waiting for the real
    one until the timeout.  Truncated, ServerFailed, BadAnswer: the caller decides.
    """
    try:
        response = check(data)
    except NotTheAnswer:
        return False
    except Exception as exc:   # noqa: BLE001 - each of dns_wire's errors means something to the caller
        done.errback(exc)
        return True
    done.callback(response)
    return True


@implementer(IReadDescriptor)
class _UdpExchange:
    """One query over UDP, on a connected socket of its own (replies from elsewhere never arrive).

    A plain socket watched with ``reactor.addReader`` rather than
    ``listenUDP``: Twisted's UDP port logs two lines for every socket it
    opens and closes, which at two ports per cold domain was a fifth of a
    resolver process's CPU.
    """

    #: Datagrams read per readable event: a flood of strays on the socket must not hold the loop.
    READS_PER_EVENT = 8

    def __init__(self, done: Deferred, wire: bytes, check: Callable) -> None:
        self._done, self._wire, self._check = done, wire, check
        self._reactor = None
        self._socket: socket.socket | None = None

    def start(self, reactor, server: str, port: int) -> None:
        try:
            sock = socket.socket(socket.AF_INET6 if ":" in server else socket.AF_INET, socket.SOCK_DGRAM)
        except OSError as exc:
            self._done.errback(exc)
            return
        self._reactor, self._socket = reactor, sock
        try:
            sock.setblocking(False)
            sock.connect((server, port))   # the kernel picks a fresh source port (RFC 5452)
            sock.send(self._wire)
        except OSError as exc:   # ECONNREFUSED among them: nothing listens there
            self._done.errback(exc)
            return
            self._done.errback(exc)
            return
        reactor.addReader(self)

    def fileno(self) -> int:
        return self._socket.fileno() if self._socket is not None else -1

    def logPrefix(self) -> str:
        return "dns"

    def doRead(self) -> None:
        for _ in range(self.READS_PER_EVENT):
            if self._done.called or self._socket is None:
                return
            try:
                data = self._socket.recv(65535)
            except BlockingIOError:
                return
            except OSError as exc:   # ECONNREFUSED (ICMP port unreachable) among them
                self._done.errback(exc)
                return
            if _answered(self._done, self._check, data):
                return

    def connectionLost(self, reason) -> None:
        """Called by the reactor only at its shutdown; :meth:`close` is the normal end."""
        self.close()

    def close(self) -> None:
        if self._socket is None:
            return
        if self._reactor is not None:
            self._reactor.removeReader(self)
        self._socket.close()
        self._socket = None


class _TcpExchange(Int16StringReceiver):
    """One query over TCP (RFC 7766: two-octet length, then the message)."""

    def __init__(self, done: Deferred, wire: bytes, check: Callable) -> None:
        self._done, self._wire, self._check = done, wire, check
        self._connecting: Deferred | None = None

    def start(self, reactor, server: str, port: int) -> None:
        endpoint = (TCP6ClientEndpoint if ":" in server else TCP4ClientEndpoint)(reactor, server, port)
        self._connecting = connectProtocol(endpoint, self)
        self._connecting.addErrback(lambda failure: self._done.called or self._done.errback(failure))

    def connectionMade(self) -> None:
        self.sendString(self._wire)

    def stringReceived(self, data: bytes) -> None:
        if not self._done.called:
            _answered(self._done, self._check, data)

    def close(self) -> None:
        if self._connecting is not None and not self._connecting.called:
            self._connecting.cancel()
        if self.transport is not None:
            self.transport.abortConnection()


@implementer(IHostnameResolver)
class ConfiguredResolver:
    """Twisted's name-resolver interface on a :class:`DnsClient`.

    Installed on the reactor (``reactor.installNameResolver``), it makes
    Twisted's own connections by host name (the policy fetch, report
    uploads) resolve through the configured resolver like every other lookup.
    """

    def __init__(self, dns: DnsClient) -> None:
        self._dns = dns

    def resolveHostName(self, receiver: IResolutionReceiver, hostName: str, portNumber: int = 0,
                        addressTypes=None, transportSemantics: str = "TCP") -> IHostResolution:
        resolution = _Resolution(hostName)
        receiver.resolutionBegan(resolution)

        def found(addresses: list[str]) -> None:
            for address in addresses:
                kind = IPv6Address if ":" in address else IPv4Address
                receiver.addressResolved(kind("TCP", address, portNumber))

        d = Deferred.fromCoroutine(self._dns.addresses(hostName))
        # No address, whatever the reason: a LocalFailure is counted in DnsClient.exhaustions for the fetch.
        d.addCallbacks(found, lambda failure: failure.trap(DnsFailure, LocalFailure))
        d.addBoth(lambda _: receiver.resolutionComplete())
        return resolution


@implementer(IHostResolution)
class _Resolution:
    def __init__(self, name: str) -> None:
        self.name = name

    def cancel(self) -> None:
        """Resolutions are short (DnsClient has its own timeout): nothing to cancel."""
