"""mail_submission = "smtp" against the test SMTP sink on a real loopback socket: CRLF reaches the wire
once (the bytes DKIM signed), STARTTLS is verified against smtp_tls_name, and smtp_tls_verify = false
is the explicit way to a relay without a valid certificate."""

from __future__ import annotations

import socket
import ssl as stdlib_ssl

import pytest
import trustme
from twisted.internet import reactor as global_reactor
from twisted.internet import ssl
from twisted.internet.defer import Deferred

from mtasts_resolver.config import HostPort
from mtasts_resolver.tlsrpt.report.deliver import DeliveryFailed, MailSubmitter
from tests.world.smtp_host import SmtpHost

MESSAGE = (b"From: t@s.test\r\nTo: r@a.test\r\nSubject: x\r\nDKIM-Signature: v=1; a=rsa-sha256;\r\n"
           b" b=abc\r\n\r\nline one\r\n.a line that starts with a dot\r\n\r\nlast\r\n")


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def relay(ca, request):
    context = None
    if request.param:
        context = stdlib_ssl.SSLContext(stdlib_ssl.PROTOCOL_TLS_SERVER)
        ca.issue_cert("relay.test").configure_cert(context)
    host = SmtpHost("relay.test", "127.0.0.1", context, free_port())
    host.start()
    yield host
    host.stop()


def submit(ca, host: SmtpHost, **tls) -> str:
    trust = ssl.trustRootFromCertificates([ssl.Certificate.loadPEM(ca.cert_pem.bytes())])
    submitter = MailSubmitter("smtp", (), HostPort("127.0.0.1", host.port), 10.0, reactor=global_reactor,
                              trust=trust, **tls)
    result: list = []
    Deferred.fromCoroutine(submitter.submit("t@s.test", "r@a.test", MESSAGE)).addBoth(result.append)
    while not result:
        global_reactor.iterate(0.01)
    if hasattr(result[0], "raiseException"):
        result[0].raiseException()
    return result[0]


@pytest.mark.parametrize("relay", [True], indirect=True)
def test_verified_starttls_and_crlf_once(ca, relay):
    assert "submitted over SMTP" in submit(ca, relay, tls_name="relay.test")
    [received] = relay.received()
    assert received.tls and received.rcpt_to == ("<r@a.test>",)
    assert received.data == MESSAGE                    # not CR CR LF; the leading dot unstuffed again


@pytest.mark.parametrize("relay", [True], indirect=True)
def test_the_certificate_is_checked_against_the_host_by_default(ca, relay):
    with pytest.raises(DeliveryFailed, match="(?i)certificate|mismatch|verif"):
        submit(ca, relay)                              # 127.0.0.1 is not in the certificate
    assert relay.received() == []


@pytest.mark.parametrize("relay", [True], indirect=True)
def test_a_wrong_name_is_refused(ca, relay):
    with pytest.raises(DeliveryFailed, match="(?i)certificate|mismatch|verif"):
        submit(ca, relay, tls_name="other.test")
    assert relay.received() == []


@pytest.mark.parametrize("relay", [True], indirect=True)
def test_verification_off_is_explicit(ca, relay):
    submit(ca, relay, tls_verify=False)
    [received] = relay.received()
    assert received.tls and received.data == MESSAGE


@pytest.mark.parametrize("relay", [False], indirect=True)
def test_a_relay_without_starttls_gets_it_in_plaintext(ca, relay):
    submit(ca, relay, tls_name="relay.test")
    [received] = relay.received()
    assert not received.tls and received.data == MESSAGE


def test_nothing_listening_is_a_failed_attempt(ca):
    host = SmtpHost("relay.test", "127.0.0.1", None, free_port())   # never started
    with pytest.raises(DeliveryFailed, match="SMTP submission"):
        submit(ca, host)
