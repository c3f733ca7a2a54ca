"""DANE or MTA-STS: the one policy for a domain (RFC 8461 §2, RFC 7672), as a value.

A pure function of the two results.  DANE wins whenever it applies (RFC
8461 §2: MTA-STS must not override DANE); MTA-STS applies only when DANE is
proven absent, or when DANE answers are disabled because the resolver does
not validate (announced loudly by the validation probe).  When the DNS data
that decides whether DANE applies cannot be obtained, the verdict is
:class:`Temp`: Postfix defers the mail and asks again, nothing is silently
downgraded.

The verdict is never answer text: :mod:`mtasts_resolver.policy.answer`
renders it for each client dialect, so nothing is decided twice and no
decision is taken by reading text.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from mtasts_resolver.policy.dane import DaneOutcome, DaneResult
from mtasts_resolver.policy.model import Mode, StsPolicy


class Level(enum.Enum):
    """The Postfix TLS security levels we answer with (postconf(5) smtp_tls_security_level).

    With ``dane`` and ``dane-only`` Postfix looks up the TLSA records itself
    (``smtp_dns_support_level = dnssec`` is required, see README).
    """

    DANE = "dane"            # DANE for the MX hosts that have usable TLSA records
    DANE_ONLY = "dane-only"  # DANE for every MX host, no fallback
    SECURE = "secure"        # MTA-STS enforce: WebPKI certificate naming an mx pattern


@dataclass(frozen=True, slots=True)
class Decision:
    """A TLS policy for one domain.

    ``sts`` is the MTA-STS policy behind a ``secure`` decision (its mx
    patterns are the ``match=`` list, its lines the TLSRPT
    ``policy_string`` attributes); None for the DANE levels, where Postfix
    builds the TLSA policy description for its reports from its own lookups.
    """

    level: Level
    domain: str = ""
    sts: StsPolicy | None = None

    @property
    def match(self) -> tuple[str, ...]:
        """The MTA-STS mx patterns a ``secure`` server must match, as published (RFC 8461 §4.1)."""
        return self.sts.mx if self.sts is not None else ()

    @property
    def servername(self) -> str:
        """Postfix's ``servername=``: ``hostname`` checks the certificate against the MX host name."""
        return "hostname" if self.level is Level.SECURE else ""


@dataclass(frozen=True, slots=True)
class Temp:
    """The policy cannot be known now: the client must defer and ask again."""

    reason: str


@dataclass(frozen=True, slots=True)
class NoPolicy:
    """No policy restricts delivery to this domain (Postfix's own defaults apply)."""


Verdict = Decision | Temp | NoPolicy

NO_POLICY = NoPolicy()
DANE_ONLY = Decision(Level.DANE_ONLY)
DANE = Decision(Level.DANE)


def decide(dane: DaneResult | None, domain: str, sts: StsPolicy | None) -> Verdict:
    """The policy for ``domain`` from its DANE verdict and the MTA-STS policy in force.

    ``dane`` is None when DANE is not configured at all (``dane.enabled =
    false``): MTA-STS alone decides.  Only ``enforce`` MTA-STS policies change
    how mail is delivered: ``testing`` and ``none`` are no policy (RFC 8461
    §5: testing must not stop delivery).
    """
    if dane is not None:
        if dane.outcome is DaneOutcome.DANE_ONLY:
            return DANE_ONLY
        if dane.outcome is DaneOutcome.DANE:
            return DANE
        if dane.outcome is DaneOutcome.TEMP:
            return Temp(f"DANE status unknown, deferring: {dane.reason}")
    # DANE absent, disabled or not configured: MTA-STS decides.
    if sts is None or sts.mode is not Mode.ENFORCE:
        return NO_POLICY
    return Decision(Level.SECURE, domain, sts)
