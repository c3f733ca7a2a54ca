"""Real Postfix (Debian's 3.7) enforcing the daemon's answers, configured by contrib/postfix/main.cf.

A private Postfix instance (tests/world/postfix.py: its own config and
queue, in a mount namespace whose /etc/resolv.conf names the world's
validating unbound) sends one message to each case of tests/world/mta.py.
Its settings are contrib/postfix/main.cf as shipped, with two substitutions
only: the daemon's test port and the test CA.  What the MX hosts received
and what Postfix logged decide each case.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from tests.world.daemon import REPO
from tests.world.mta import CASES, MX_NET, mta_world  # noqa: F401  (fixture)
from tests.world.postfix import PrivatePostfix

CONTRIB_MAIN_CF = REPO / "contrib" / "postfix" / "main.cf"
DELIVERY_TIMEOUT_S = 60


def contrib_settings(path: Path) -> dict[str, str]:
    """The active ``name = value`` lines of a main.cf snippet."""
    settings = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            settings[name.strip()] = value.strip()
    return settings


@pytest.fixture(scope="module")
def postfix(mta_world):
    settings = contrib_settings(CONTRIB_MAIN_CF)
    assert settings["smtp_tls_policy_maps"] == "socketmap:inet:127.0.0.1:8461:postfix"
    settings["smtp_tls_policy_maps"] = mta_world.daemon.socketmap_map()
    settings["smtp_tls_CAfile"] = str(mta_world.ca_file)
    # Postfix's unprivileged daemons must traverse the directory: not under
    # pytest's basetemp, whose 0700 root a concurrent pytest session re-applies.
    workdir = Path(tempfile.mkdtemp(prefix="mta-postfix-"))
    workdir.chmod(0o755)
    instance = PrivatePostfix(workdir, f"{MX_NET}.100", mta_world.resolver, settings)
    # glibc strips the AD bit unless told to trust the resolver (contrib/postfix/main.cf says so too).
    instance.resolv_conf.write_text(instance.resolv_conf.read_text() + "options trust-ad\n")
    try:
        instance.start()
        yield instance
    finally:
        instance.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def _send(postfix: PrivatePostfix, domain: str) -> str:
    marker = f"pf-{uuid.uuid4().hex}"
    message = f"From: sender@sender.test\nTo: rcpt@{domain}\nSubject: {marker}\n\n{marker}\n".encode()
    postfix.sendmail("sender@sender.test", f"rcpt@{domain}", message)
    return marker


def _outcome(postfix: PrivatePostfix, domain: str) -> str:
    """Wait for Postfix's first verdict on mail to ``domain``: the status= word."""
    pattern = re.compile(rf"to=<rcpt@{re.escape(domain)}>.*status=(sent|deferred|bounced)")
    deadline = time.monotonic() + DELIVERY_TIMEOUT_S
    while time.monotonic() < deadline:
        found = pattern.findall(postfix.log_text())
        if found:
            return found[-1]
        time.sleep(0.2)
    raise AssertionError(f"no delivery verdict for {domain}:\n{postfix.log_text()[-4000:]}")


@pytest.fixture(scope="module")
def sent(postfix):
    """One message per case, sent at once; the verdicts are awaited per test."""
    return {domain: _send(postfix, domain) for domain in CASES}


def test_daemon_answers_are_what_postfix_acts_on(mta_world):
    assert mta_world.daemon.postmap("mta-sts-good.test") == (
        0, "secure match=mx.mta-sts-good.test servername=hostname")
    assert mta_world.daemon.postmap("mta-dane-good.test") == (0, "dane-only"), mta_world.daemon.log_tail()
    assert mta_world.daemon.postmap("mta-plain.test") == (1, "")


def test_sts_enforce_good_certificate_is_delivered_verified(postfix, sent, mta_world):
    assert _outcome(postfix, "mta-sts-good.test") == "sent"
    (message,) = mta_world.received("mta-sts-good.test", sent["mta-sts-good.test"])
    assert message.tls
    assert "Verified TLS connection established to mx.mta-sts-good.test" in postfix.log_text()


def test_sts_enforce_wrong_name_certificate_is_deferred(postfix, sent, mta_world):
    assert _outcome(postfix, "mta-sts-badcert.test") == "deferred"
    assert mta_world.received("mta-sts-badcert.test", sent["mta-sts-badcert.test"]) == []
    assert re.search(r"mx\.mta-sts-badcert\.test.*(certificate verification failed|"
                     r"Server certificate not verified|server certificate name)", postfix.log_text())


def test_sts_enforce_mx_outside_the_policy_is_deferred(postfix, sent, mta_world):
    assert _outcome(postfix, "mta-sts-outside.test") == "deferred"
    assert mta_world.received("mta-sts-outside.test", sent["mta-sts-outside.test"]) == []


def test_dane_matching_tlsa_is_delivered(postfix, sent, mta_world):
    assert _outcome(postfix, "mta-dane-good.test") == "sent"
    (message,) = mta_world.received("mta-dane-good.test", sent["mta-dane-good.test"])
    assert message.tls
    assert "Verified TLS connection established to mx.mta-dane-good.test" in postfix.log_text()


def test_dane_mismatching_tlsa_is_deferred(postfix, sent, mta_world):
    assert _outcome(postfix, "mta-dane-bad.test") == "deferred"
    assert mta_world.received("mta-dane-bad.test", sent["mta-dane-bad.test"]) == []
    assert "mx.mta-dane-bad.test[" in postfix.log_text() and "no matching DANE TLSA records" in postfix.log_text()


def test_no_policy_is_delivered_opportunistically(postfix, sent, mta_world):
    assert _outcome(postfix, "mta-plain.test") == "sent"
    (message,) = mta_world.received("mta-plain.test", sent["mta-plain.test"])
    assert message.tls   # TLS all the same, with a certificate nobody vouches for
    assert "Untrusted TLS connection established to mx.mta-plain.test" in postfix.log_text()
