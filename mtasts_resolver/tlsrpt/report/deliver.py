"""Sending one report to one rua destination: mailto through the local MTA, or HTTPS POST.

mailto (RFC 8460 §5.3): the DKIM-signed mail goes to the local MTA, either
through its ``sendmail`` binary or over SMTP to a local listener; the MTA
then delivers it like any mail (``TLS-Required: No`` lets it pass broken
TLS).  Over SMTP, STARTTLS (when offered) is verified against
``smtp_tls_name`` (default: the server's host), or not at all with
``smtp_tls_verify = false``; the signed CRLF message is handed to Twisted's
client with LF line ends, which it turns into CRLF (and dot-stuffs) once:
the bytes on the wire are the bytes DKIM signed.  https (RFC 8460 §5.4): POST ``application/tlsrpt+gzip``; only 200 or
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
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.mail.smtp import ESMTPSenderFactory
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

    def __init__(self, method: str, sendmail_command: Sequence[str], smtp_server: HostPort, timeout_s: float,
                 *, reactor=None, tls_name: str = "", tls_verify: bool = True,
                 trust: ssl.IOpenSSLTrustRoot | None = None) -> None:
        self._method, self._command, self._timeout_s = method, list(sendmail_command), timeout_s
        self._smtp = smtp_server
        self._reactor = reactor
        self._tls_name = tls_name or smtp_server.host
        self._tls = (ssl.optionsForClientTLS(self._tls_name, trustRoot=trust) if tls_verify
                     else ssl.CertificateOptions(verify=False))

    async def submit(self, mail_from: str, rcpt: str, message: bytes) -> str:
        if self._method == "smtp":
            return await self._submit_smtp(mail_from, rcpt, message)
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

    async def _submit_smtp(self, mail_from: str, rcpt: str, message: bytes) -> str:
        if self._reactor is None:
            from twisted.internet import reactor as default_reactor
            self._reactor = default_reactor
        done: Deferred[object] = Deferred()
        # ESMTPSender turns every LF into CRLF: hand it LF, so CRLF reaches the wire once.
        factory = ESMTPSenderFactory(None, None, mail_from, [rcpt], io.BytesIO(message.replace(b"\r\n", b"\n")),
                                     done, retries=0, timeout=self._timeout_s, contextFactory=self._tls,
                                     heloFallback=True, requireAuthentication=False, requireTransportSecurity=False)
        connector = self._reactor.connectTCP(self._smtp.host, self._smtp.port, factory, timeout=self._timeout_s)
        def timed_out(result: object, timeout_s: float) -> Failure:
            connector.disconnect()
            return Failure(TimeoutError(f"no answer within {timeout_s:g} s"))

        done.addTimeout(self._timeout_s, self._reactor, onTimeoutCancel=timed_out)
        try:
            await done
        except Exception as exc:  # twisted.mail raises SMTPClientError, TLS and connection errors alike
            # twisted.mail wraps a failed STARTTLS check in SMTPConnectError, the TLS error as its cause
            errors = [e for inner in (exc, exc.__cause__) if inner is not None for e in tls_errors(Failure(inner))]
            why = f"certificate of {self._tls_name!r} not valid: {errors[0]}" if errors else (str(exc) or
                                                                                              type(exc).__name__)
            raise DeliveryFailed(f"SMTP submission to {self._smtp}: {why}") from exc
        return f"submitted over SMTP to {self._smtp}"


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
