"""net/sockets.py: every socket the daemon makes, with real sockets in a temporary directory (no root)."""

import grp
import os
import pwd
import socket
import stat

import pytest
from twisted.internet.protocol import Factory
from twisted.internet.testing import MemoryReactor, MemoryReactorClock

from mtasts_resolver.config import HostPort, SocketSpec
from mtasts_resolver.net.sockets import (ACCEPTS_PER_TURN, UnknownOwner, adopt_listener, remove_stale_socket, stream_listener,
                                         unix_datagram)

MAKERS = {"stream": stream_listener, "datagram": unix_datagram}
KINDS = {"stream": socket.SOCK_STREAM, "datagram": socket.SOCK_DGRAM}


@pytest.fixture
def wide_umask():
    """The mode must come from the spec, whatever the process umask lets through."""
    old = os.umask(0o077)
    yield
    os.umask(old)


@pytest.mark.parametrize("kind", MAKERS)
@pytest.mark.parametrize("mode", [0o600, 0o620, 0o660, 0o666])
def test_unix_socket_file_gets_its_mode(tmp_path, wide_umask, kind, mode):
    path = tmp_path / "s.sock"
    with MAKERS[kind](SocketSpec(str(path), mode=mode)) as sock:
        info = os.lstat(path)
        assert stat.S_ISSOCK(info.st_mode)
        assert stat.S_IMODE(info.st_mode) == mode
        assert sock.type == KINDS[kind] and sock.family == socket.AF_UNIX


@pytest.mark.parametrize("kind", MAKERS)
def test_owner_and_group_by_name(tmp_path, kind):
    """Owning the file by the current user and group needs no privilege; the ids are what chown(2) got."""
    owner = pwd.getpwuid(os.getuid()).pw_name
    group = grp.getgrgid(os.getgid()).gr_name
    path = tmp_path / "s.sock"
    with MAKERS[kind](SocketSpec(str(path), owner=owner, group=group)):
        info = os.lstat(path)
        assert (info.st_uid, info.st_gid) == (os.getuid(), os.getgid())


@pytest.mark.parametrize("kind", MAKERS)
@pytest.mark.parametrize("field, message", [("owner", "no such user"), ("group", "no such group")])
def test_unknown_owner_fails_before_any_file_exists(tmp_path, kind, field, message):
    path = tmp_path / "s.sock"
    with pytest.raises(UnknownOwner, match=message) as info:
        MAKERS[kind](SocketSpec(str(path), **{field: "no-such-name-mtasts"}))
    assert isinstance(info.value, KeyError)   # callers tell a config mistake from an OSError
    assert not path.exists()


@pytest.mark.parametrize("kind", MAKERS)
def test_stale_socket_file_is_replaced(tmp_path, kind):
    path = tmp_path / "s.sock"
    stale = socket.socket(socket.AF_UNIX, KINDS[kind])
    stale.bind(str(path))
    stale.close()                     # a killed daemon leaves the file behind
    with MAKERS[kind](SocketSpec(str(path))) as sock:
        assert sock.getsockname() == str(path)


@pytest.mark.parametrize("kind", MAKERS)
def test_a_file_that_is_not_a_socket_is_left_alone(tmp_path, kind):
    path = tmp_path / "s.sock"
    path.write_text("not mine")
    with pytest.raises(OSError):
        MAKERS[kind](SocketSpec(str(path)))
    assert path.read_text() == "not mine"
    remove_stale_socket(str(path))
    assert path.read_text() == "not mine"


def test_remove_stale_socket_without_a_file(tmp_path):
    remove_stale_socket(str(tmp_path / "absent.sock"))   # nothing to do, no error
    assert not (tmp_path / "absent.sock").exists()


def test_unix_stream_listener_accepts(tmp_path):
    path = tmp_path / "s.sock"
    with stream_listener(SocketSpec(str(path))) as server, socket.socket(socket.AF_UNIX) as client:
        client.connect(str(path))
        client.sendall(b"ping")
        conn, _ = server.accept()
        with conn:
            assert conn.recv(4) == b"ping"


def test_unix_datagram_receives(tmp_path):
    path = tmp_path / "d.sock"
    with unix_datagram(SocketSpec(str(path))) as server, socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as client:
        client.sendto(b"{}", str(path))
        assert server.recv(16) == b"{}"


@pytest.mark.parametrize("host, family", [("127.0.0.1", socket.AF_INET), ("::1", socket.AF_INET6)])
def test_tcp_listener_family_from_the_address(host, family):
    with stream_listener(SocketSpec(address=HostPort(host, 0))) as server:
        assert server.family == family and server.type == socket.SOCK_STREAM
        port = server.getsockname()[1]
        with socket.create_connection((host, port), timeout=2):
            conn, _ = server.accept()
            conn.close()


def test_tcp_address_in_use_is_an_os_error():
    with stream_listener(SocketSpec(address=HostPort("127.0.0.1", 0))) as first:
        taken = HostPort("127.0.0.1", first.getsockname()[1])
        with pytest.raises(OSError):
            stream_listener(SocketSpec(address=taken))


def test_datagram_needs_a_path():
    with pytest.raises(ValueError, match="path"):
        unix_datagram(SocketSpec(address=HostPort("127.0.0.1", 0)))


@pytest.mark.parametrize("mode", [0o600, 0o660])
def test_adopted_unix_listener_keeps_its_mode(tmp_path, mode):
    """reactor.adoptStreamPort would chmod the file to Twisted's default 0o666 as the port starts."""
    path = tmp_path / "s.sock"
    spec = SocketSpec(str(path), mode=mode)
    reactor = MemoryReactorClock()
    port = adopt_listener(reactor, stream_listener(spec), Factory(), spec)
    assert stat.S_IMODE(os.lstat(path).st_mode) == mode
    assert port.getHost().name == str(path).encode()
    assert port in reactor.getReaders()   # accepting, on a descriptor of its own
    assert os.get_blocking(port.fileno()) is False
    port.stopListening()
    reactor.advance(0)
    assert port not in reactor.getReaders() and not port.connected
    # Left for whoever bound it: a worker pool's other workers still accept on it.
    assert stat.S_ISSOCK(os.lstat(path).st_mode)


def test_adopted_tcp_listener():
    spec = SocketSpec(address=HostPort("127.0.0.1", 0))
    reactor = MemoryReactorClock()
    sock = stream_listener(spec)
    bound = sock.getsockname()[1]
    port = adopt_listener(reactor, sock, Factory(), spec)
    assert port.getHost().port == bound and port.connected
    assert sock.fileno() == -1   # closed: the reactor's port holds its own copy
    port.numberAccepts = 500     # what Twisted does after a full batch: the batch stays fixed
    assert port.numberAccepts == ACCEPTS_PER_TURN
    port.stopListening()
