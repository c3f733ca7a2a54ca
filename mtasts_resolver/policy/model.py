"""Immutable policy data, parsed once at the edge and passed around typed."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Mode(enum.Enum):
    """RFC 8461 §3.2 policy modes."""

    ENFORCE = "enforce"
    TESTING = "testing"
    NONE = "none"


class FailureType(enum.Enum):
    """Why MTA-STS discovery failed, named as RFC 8460 §4.3 result types.

    Naming failures by their TLS-RPT result type means the reporter can spool
    them as they are, without a second mapping.
    """

    FETCH_ERROR = "sts-policy-fetch-error"    # DNS, TCP, HTTP status, timeout, size
    INVALID = "sts-policy-invalid"            # syntax, content type, TXT/policy mismatch
    WEBPKI_INVALID = "sts-webpki-invalid"     # certificate of mta-sts.DOMAIN not valid


@dataclass(frozen=True, slots=True)
class StsFailure:
    """A failed step of MTA-STS discovery: the typed result, never None."""

    type: FailureType
    detail: str

    def __str__(self) -> str:
        return f"{self.type.value}: {self.detail}"


@dataclass(frozen=True, slots=True)
class StsTxt:
    """A valid ``_mta-sts`` TXT record (RFC 8461 §3.1)."""

    id: str
    record: str


@dataclass(frozen=True, slots=True)
class NoStsTxt:
    """``_mta-sts`` does not announce a usable policy (absent, or not exactly one valid record)."""

    reason: str


@dataclass(frozen=True, slots=True)
class StsPolicy:
    """A parsed policy file (RFC 8461 §3.2).

    ``lines`` keeps the policy's own lines so TLS-RPT can report
    ``policy-string`` exactly as the domain published it.
    """

    mode: Mode
    mx: tuple[str, ...]
    max_age: int
    lines: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CachedPolicy:
    """A policy as cached and persisted: what was fetched, for which TXT id, when."""

    domain: str
    txt_id: str
    policy: StsPolicy
    fetched_at: float

    @property
    def expires_at(self) -> float:
        return self.fetched_at + self.policy.max_age

    def usable(self, now: float) -> bool:
        """RFC 8461 §5.1: a cached policy applies until its max_age runs out."""
        return now < self.expires_at
