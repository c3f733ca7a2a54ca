"""Sending one report to one rua destination: mailto through the local MTA, or HTTPS POST.

mailto (RFC 8460 §5.3): the DKIM-signed mail goes to the local MTA, either
through its ``sendmail`` binary or over SMTP to a local listener; the MTA
then delivers it like any mail (``TLS-Required: No`` lets it pass broken
TLS).  https (RFC 8460 §5.4): POST ``application/tlsrpt+gzip``; only 200 or
201 is success.  RFC 8460 §3 lets submitters ignore certificate errors on
https, so with ``https_ignore_cert_errors`` a failed certificate check is
followed at once by an unverified POST (logged).  Host names resolve
through the configured resolver, like every other lookup of the daemon.
"""

from __future__ import annotations

import io
import subprocess
from collections.abc import Sequence

from twisted.internet import ssl
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.mail.smtp import sendmail as smtp_sendmail
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, FileBodyProducer, readBody
from twisted.web.http_headers import Headers
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

from mtasts_resolver.config import HostPort
from mtasts_resolver.net.tls import tls_errors
from mtasts_resolver.tlsrpt.report.mail import REPORT_MEDIA_TYPE

HTTPS_SUCCESS_CODES = (200, 201)   # RFC 8460 §5.4
MAX_RESPONSE_BYTES_LOGGED = 200


class DeliveryFailed(Exception):
    """This attempt failed; the reporter retries with back-off."""


class MailSubmitter:
    """Hands a mail to the local MTA: ``sendmail`` binary, or SMTP to HOST:PORT."""

    def __init__(self, method: str, sendmail_command: Sequence[str], smtp_server: HostPort, timeout_s: float) -> None:
        self._method, self._command, self._timeout_s = method, list(sendmail_command), timeout_s
        self._smtp = smtp_server

    async def submit(self, mail_from: str, rcpt: str, message: bytes) -> str:
        if self._method == "smtp":
            try:
                await smtp_sendmail(self._smtp.host, mail_from, [rcpt], message, port=self._smtp.port,
                                    requireAuthentication=False, requireTransportSecurity=False)
            except Exception as exc:  # twisted.mail raises SMTPClientError and connection errors alike
                raise DeliveryFailed(f"SMTP submission to {self._smtp}: {exc}") from exc
            return f"submitted over SMTP to {self._smtp}"
        argv = [*self._command, "-f", mail_from, "--", rcpt]
        local = message.replace(b"\r\n", b"\n")  # sendmail(1) input uses the local line ending
        try:
            result = await deferToThread(subprocess.run, argv, input=local, capture_output=True,
                                         timeout=self._timeout_s)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise DeliveryFailed(f"{argv[0]}: {exc}") from exc
        if result.returncode != 0:
            raise DeliveryFailed(f"{argv[0]} exited {result.returncode}: "
                                 f"{result.stderr.decode('utf-8', 'replace').strip()}")
        return f"submitted to {argv[0]}"


@implementer(IPolicyForHTTPS)
class _Unverified:
    """TLS without certificate checks: only for RFC 8460 §3's tolerated https submissions."""

    def creatorForNetloc(self, hostname: bytes, port: int):
        return ssl.CertificateOptions(verify=False)


class HttpsPoster:
    log = Logger()

    def __init__(self, reactor, trust: ssl.IOpenSSLTrustRoot, ignore_cert_errors: bool, timeout_s: float) -> None:
        self._reactor = reactor
        self._verified = Agent(reactor, BrowserLikePolicyForHTTPS(trust), connectTimeout=timeout_s)
        self._unverified = Agent(reactor, _Unverified(), connectTimeout=timeout_s) if ignore_cert_errors else None
        self._timeout_s = timeout_s

    async def post(self, url: str, body: bytes) -> str:
        try:
            return await self._post(self._verified, url, body)
        except DeliveryFailed as exc:
            if self._unverified is None or not isinstance(exc.__cause__, _CertificateProblem):
                raise
            self.log.warn("{url}: certificate not valid ({error}); posting without verification (RFC 8460 §3)",
                          url=url, error=exc.__cause__)
            return await self._post(self._unverified, url, body) + " (certificate not verified)"

    async def _post(self, agent: Agent, url: str, body: bytes) -> str:
        headers = Headers({b"content-type": [REPORT_MEDIA_TYPE.encode()]})
        d = agent.request(b"POST", url.encode("ascii"), headers, FileBodyProducer(io.BytesIO(body)))
        d.addTimeout(self._timeout_s, self._reactor)
        try:
            response = await d
            text = await readBody(response).addTimeout(self._timeout_s, self._reactor)
        except Exception as exc:  # connection, TLS, timeout: all mean "try again later"
            errors = tls_errors(Failure(exc))
            if errors:
                raise DeliveryFailed(f"POST {url}: certificate not valid: {errors[0]}") from _CertificateProblem(
                    str(errors[0]))
            raise DeliveryFailed(f"POST {url}: {exc or type(exc).__name__}") from exc
        answer = text[:MAX_RESPONSE_BYTES_LOGGED].decode("utf-8", "replace").strip()
        if response.code not in HTTPS_SUCCESS_CODES:
            raise DeliveryFailed(f"POST {url}: HTTP {response.code} {answer}")
        return f"POST {url}: HTTP {response.code}"


class _CertificateProblem(Exception):
    """Marks a DeliveryFailed caused by certificate validation (the one tolerated case)."""
