"""Failures of our own making: this host ran out of something, so the network's answer is unknown.

A resolution that fails because *we* ran out of file descriptors, memory or
socket buffers, or because our resolver process is gone, says nothing about
the domain.  Reporting it as a fetch or DNS failure would turn our own
limit into "no policy" (NOTFOUND, cached for ``failure_ttl_s``): a downgrade
an attacker can trigger by exhausting us.  So such failures raise
:class:`LocalFailure`, which the lookup service answers TEMP and never
caches.
"""

from __future__ import annotations

import errno

from twisted.python.failure import Failure

#: errno values that describe this host, not the remote side.
EXHAUSTION_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


class LocalFailure(Exception):
    """A resolution could not be made for a reason of this host's: answer TEMP, do not cache."""


def exhaustion(problem: BaseException | Failure) -> BaseException | None:
    """The local resource error inside ``problem`` (its causes, Agent's ``reasons`` lists), or None.

    Twisted hands a failed connect over as ``ConnectError(osError=errno)``
    and a failed HTTP request as ``ResponseFailed``/``RequestNotSent`` with
    the real failures in ``reasons``; a DNS query's socket that cannot be made is an ``OSError``.
    """
    pending: list[BaseException] = [problem.value if isinstance(problem, Failure) else problem]
    seen: set[int] = set()
    while pending:
        exc = pending.pop()
        if id(exc) in seen:
            continue
        seen.add(id(exc))
        if isinstance(exc, MemoryError):
            return exc
        code = exc.errno if isinstance(exc, OSError) else getattr(exc, "osError", None)
        if code in EXHAUSTION_ERRNOS:
            return exc
        for inner in getattr(exc, "reasons", None) or []:
            pending.append(inner.value if isinstance(inner, Failure) else inner)
        pending.extend(cause for cause in (exc.__cause__, exc.__context__) if cause is not None)
    return None
