"""OneContextPolicy: one OpenSSL context for every policy fetch, the same WebPKI check as Twisted's own policy.

Real TLS handshakes in memory (pyOpenSSL memory BIOs, certificates from the
test world's CA): the chain is checked against the trust root, the host name
after the handshake, and every connection shares the one context.
"""

from __future__ import annotations

import pytest
from OpenSSL import SSL
from service_identity import VerificationError
from twisted.internet import ssl

from mtasts_resolver.net.tls import OneContextPolicy, trust_root
from tests.world.pki import TestPKI


class Protocol:
    """What the policy calls back on a TLS protocol: only failVerification."""

    def __init__(self) -> None:
        self.failed: list = []

    def failVerification(self, reason) -> None:
        self.failed.append(reason)


def handshake(client: SSL.Connection, server: SSL.Connection) -> None:
    client.set_connect_state()
    server.set_accept_state()
    for _ in range(20):
        done = 0
        for side, other in ((client, server), (server, client)):
            try:
                side.do_handshake()
                done += 1
            except SSL.WantReadError:
                pass
            try:
                while data := side.bio_read(65536):
                    other.bio_write(data)
            except SSL.WantReadError:
                pass
        if done == 2:
            return
    raise AssertionError("handshake did not finish")


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return TestPKI(tmp_path_factory.mktemp("pki"))


def server_for(pki: TestPKI, host: str, kind: str = "good") -> SSL.Connection:
    cert, key = pki.write_cert(host, kind)
    context = SSL.Context(SSL.TLS_METHOD)
    context.use_certificate_chain_file(str(cert))
    context.use_privatekey_file(str(key))
    return SSL.Connection(context, None)


@pytest.mark.parametrize("served, kind, outcome", [
    ("mta-sts.good.test", "good", "ok"),
    ("mta-sts.other.test", "good", "wrong name"),        # a valid chain for another name
    ("mta-sts.good.test", "self-signed", "bad chain"),
    ("mta-sts.good.test", "expired", "bad chain"),
])
def test_the_webpki_check(pki, served, kind, outcome):
    policy = OneContextPolicy(trust_root(str(pki.ca_file)))
    protocol = Protocol()
    client = policy.creatorForNetloc(b"mta-sts.good.test", 443).clientConnectionForTLS(protocol)
    server = server_for(pki, served, kind)
    if outcome == "bad chain":
        with pytest.raises(SSL.Error):
            handshake(client, server)
        return
    handshake(client, server)
    assert server.get_servername() == b"mta-sts.good.test"         # SNI
    if outcome == "ok":
        assert protocol.failed == []
    else:
        [reason] = protocol.failed
        assert reason.check(VerificationError)


def test_every_connection_shares_one_context(pki):
    policy = OneContextPolicy(ssl.platformTrust())
    first = policy.creatorForNetloc(b"mta-sts.a.test", 443).clientConnectionForTLS(Protocol())
    second = policy.creatorForNetloc(b"mta-sts.b.test", 443).clientConnectionForTLS(Protocol())
    assert first.get_context() is second.get_context()
