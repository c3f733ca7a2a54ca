"""The one interface between the wire protocols and the policy logic.

Protocols (``mtasts_resolver.protocols``) import only this module: they turn
bytes into ``(map_name, key)`` pairs, hand them to a :class:`LookupService`,
and encode the :class:`Answer` it returns.  They never see DNS, HTTPS or the
cache, and the policy code never sees netstrings or ``%XX`` escapes.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

from twisted.internet.defer import Deferred


class AnswerKind(enum.Enum):
    """What kind of reply a table lookup gets (socketmap_table(5) terms)."""

    FOUND = "OK"          # a policy: tcp_table 200
    NOTFOUND = "NOTFOUND"  # no policy: tcp_table 500
    TEMP = "TEMP"         # try again later, Postfix defers: tcp_table 400
    PERM = "PERM"         # configuration or request error: tcp_table 400


@dataclass(frozen=True, slots=True)
class Answer:
    """A lookup result, independent of the protocol that carries it.

    ``text`` is the policy for FOUND, and a short reason otherwise (may be
    empty for NOTFOUND).
    """

    kind: AnswerKind
    text: str = ""


NOT_FOUND = Answer(AnswerKind.NOTFOUND)


class LookupService(Protocol):
    """Answers one table lookup.

    ``map_name`` is the socketmap name Postfix sent (``socketmap:...:NAME``);
    tcp_table listeners pass the map name configured for the listener.  The
    result is an :class:`Answer` when it is known at once (the hot path: a
    cached domain) or a Deferred firing with one.  The Deferred never fails:
    errors become TEMP answers inside the service.
    """

    def lookup(self, map_name: str, key: str) -> Answer | Deferred[Answer]:
        ...
