"""Pure-unit test helpers shared by the service tests: scripted resolvers, a fake probe, Deferred results.

Nothing here touches the network: each resolver call returns a Deferred the
test fires by hand, so a test decides exactly when and how DNS, the policy
fetch and the DANE walk answer.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from twisted.internet.defer import Deferred

from mtasts_resolver.lookup import NOT_FOUND, Answer, AnswerKind
from mtasts_resolver.policy.sts import parse_policy

START = 1_700_000_000.0
POLICY = parse_policy(b"version: STSv1\nmode: enforce\nmx: mx.example.com\nmax_age: 86400\n")
ENFORCE = Answer(AnswerKind.FOUND, "secure match=mx.example.com servername=hostname")


class ScriptedResolver:
    """The MTA-STS resolver: records calls; each returns a Deferred the test fires."""

    def __init__(self) -> None:
        self.discovers: list[tuple[str, Deferred]] = []
        self.fetches: list[tuple[str, Deferred]] = []

    def discover(self, domain: str) -> Deferred:
        d: Deferred = Deferred()
        self.discovers.append((domain, d))
        return d

    def fetch(self, domain: str) -> Deferred:
        d: Deferred = Deferred()
        self.fetches.append((domain, d))
        return d


class FakeProbe:
    """The DNSSEC validation probe, flipped by the test."""

    def __init__(self, validating: bool = True) -> None:
        self.listeners = []
        self._set(validating)

    def _set(self, validating: bool) -> None:
        self.validating = validating
        self.status = "resolver validates" if validating else "resolver does not validate DNSSEC"

    def subscribe(self, listener) -> None:
        self.listeners.append(listener)

    def flip(self, validating: bool) -> None:
        self._set(validating)
        for listener in self.listeners:
            listener(validating)


class ScriptedDane:
    """The DANE resolver: records calls; each returns a Deferred the test fires."""

    def __init__(self, probe: FakeProbe | None = None) -> None:
        self.calls: list[tuple[str, Deferred]] = []
        self.probe = probe

    def resolve(self, domain: str) -> Deferred:
        d: Deferred = Deferred()
        self.calls.append((domain, d))
        return d


def results(deferreds) -> list:
    """A list that fills with each Deferred's result as it fires."""
    out: list = []
    for d in deferreds:
        d.addCallback(out.append)
    return out


class FakeService:
    """A LookupService for the protocol tests: answers from a table keyed by (map name, key); records every lookup.

    Keys in ``slow`` get a Deferred instead, kept in ``pending`` (one per
    key) for the test to fire when it wants the answer to arrive.
    """

    def __init__(self, answers: Mapping[tuple[str, str], Answer | Deferred[Answer]], slow: Iterable[str] = ()) -> None:
        self.answers = dict(answers)
        self.slow = set(slow)
        self.calls: list[tuple[str, str]] = []
        self.pending: dict[str, Deferred[Answer]] = {}

    def lookup(self, map_name: str, key: str) -> Answer | Deferred[Answer]:
        self.calls.append((map_name, key))
        if key in self.slow:
            return self.pending.setdefault(key, Deferred())
        return self.answers.get((map_name, key), NOT_FOUND)
