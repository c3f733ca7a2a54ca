"""``mtasts-resolver report``: turn finished UTC days into reports and deliver what is due.

Meant to run often (a systemd timer); each run:

1. marks deliveries left in ``sending`` by a crashed run as ``uncertain``
   (never re-sent: a report may have gone out, and RFC 8460 reports are
   optional, so at-most-once beats a duplicate);
2. for each (day, report domain) of finished days with spooled outcomes,
   looks up ``_smtp._tls`` once: no record → ``no-record``; else the report
   is built, gzipped and stored with one ``pending`` delivery per rua, first
   due at a random moment within ``send_delay_max_s`` after the day ends;
3. delivers every due delivery: ``sending`` is committed before the attempt,
   ``sent`` (or a retry time) after; a failed attempt is retried with
   exponential back-off until ``retry_window_s`` after the first attempt
   (RFC 8460 §5.5), then ``failed``.  Every attempt is recorded for
   ``report --status``.

The store's report lock (a file lock for SQLite, an advisory lock for
PostgreSQL: one run at a time on the whole fleet) keeps two runs from
working at once, so ``sending`` seen at start is always a crashed run's.

One domain or destination never stops the others: a malformed record is
that domain's ``no-record`` (with the reason), an unusable rua is that
destination's ``failed`` (with an attempt saying why; the record's other
destinations still get the report), and an unexpected error while building
or sending is logged with its traceback and skipped.  :meth:`Reporter.run`
returns what failed in this run on our side or transiently (a DNS lookup, a
delivery attempt, an unexpected error) so the command exits non-zero;
a stranger's bad record is not such a failure (retrying cannot fix it).
"""

from __future__ import annotations

import datetime
import random
from dataclasses import dataclass, replace

from twisted.logger import Logger

from mtasts_resolver.config import TlsrptConfig
from mtasts_resolver.net.dns import DnsClient, DnsFailure
from mtasts_resolver.store import (FAILED, NO_RECORD, PENDING, READY, SENDING, SENT, SKIPPED, UNCERTAIN, AttemptRow,
                                   DeliveryRow, ReportRow, ReportStore)
from mtasts_resolver.tlsrpt.report.aggregate import all_successful, build_report
from mtasts_resolver.tlsrpt.report.deliver import DeliveryFailed, HttpsPoster, MailSubmitter
from mtasts_resolver.tlsrpt.report.dkim import DkimKey
from mtasts_resolver.tlsrpt.model import day_bounds, utc_day
from mtasts_resolver.tlsrpt.report.record import NoTlsrpt, parse_tlsrpt_records
from mtasts_resolver.tlsrpt.report.mail import new_report_id, report_body, report_mail

log = Logger()

class ReporterError(Exception):
    """The reporter cannot run (configuration)."""


class NotConfigured(ReporterError):
    """No report setting is set at all: reporting is off, which is the packaged default (exit status 0).

    The package enables the daily timer; until an admin sets up ``[tlsrpt]``
    the run must not fail every day.  Settings that are only partly there
    are a configuration error (78).
    """


REQUIRED_SETTINGS = ("organization_name", "contact_info", "dkim_selector", "dkim_key_file")


def check_settings(settings: TlsrptConfig) -> None:
    missing = [name for name in REQUIRED_SETTINGS if not getattr(settings, name)]
    if len(missing) == len(REQUIRED_SETTINGS):
        raise NotConfigured(f"TLS-RPT reporting is not configured ([tlsrpt] {', '.join(missing)}): nothing sent")
    if missing:
        raise ReporterError(f"[tlsrpt] needs {', '.join(missing)} to send reports")


def next_attempt(delivery: DeliveryRow, now: float, settings: TlsrptConfig) -> tuple[str, float]:
    """After a failed attempt: (state, when to try again) with exponential back-off inside the window."""
    first = delivery.first_attempt_at if delivery.first_attempt_at is not None else now
    deadline = first + settings.retry_window_s
    if now >= deadline:
        return FAILED, now
    delay = settings.retry_initial_s * 2 ** max(delivery.attempts - 1, 0)
    return PENDING, min(now + delay, deadline)


@dataclass
class Deliverers:
    mail: MailSubmitter
    https: HttpsPoster
    dkim: DkimKey


class Reporter:
    def __init__(self, clock, store: ReportStore, dns: DnsClient, settings: TlsrptConfig,
                 deliverers: Deliverers, rng: random.Random | None = None) -> None:
        self._clock, self._store, self._dns, self._settings = clock, store, dns, settings
        self._deliverers = deliverers
        self._rng = rng or random.SystemRandom()
        self.problems: list[str] = []   # what failed in this run, one line each
        self.unusable: list[str] = []   # strangers' records and rua destinations that cannot be used: theirs to fix

    async def run(self, extra_days: tuple[str, ...] = ()) -> list[str]:
        """One run; returns :attr:`problems` (empty when everything is done or scheduled); see :attr:`unusable`."""
        self.problems, self.unusable = [], []
        self.recover()
        await self.build(extra_days)
        await self.deliver_due()
        self.prune()
        return self.problems

    def recover(self) -> None:
        for delivery in self._store.deliveries():
            if delivery.state == SENDING:
                log.warn("{report_id} to {destination}: a previous run stopped while sending; not sending "
                         "again (it may have arrived)", report_id=delivery.report_id, destination=delivery.destination)
                self._store.set_delivery(replace(delivery, state=UNCERTAIN), AttemptRow(
                    delivery.report_id, delivery.destination, self._clock.seconds(), UNCERTAIN,
                    "the reporter stopped during this attempt: not retried, to never send twice"))

    async def build(self, extra_days: tuple[str, ...] = ()) -> None:
        now = self._clock.seconds()
        today = utc_day(now)
        days = sorted({*(day for day in self._store.spooled_days() if day < today), *extra_days})
        for day, domain in self._store.unreported(days):
            try:
                await self._build_one(day, domain, now, at_once=day in extra_days)
            except Exception:
                log.failure("{domain} on {day}: building the report failed; trying again next run",
                            domain=domain, day=day)
                self.problems.append(f"{domain} {day}: building the report failed (see the log)")

    async def _build_one(self, day: str, domain: str, now: float, at_once: bool) -> None:
        settings = self._settings
        counts = self._store.outcome_counts(day, domain)
        report_id = new_report_id(day, domain, settings.submitter_domain)
        if not settings.report_all_success_days and all_successful(counts):
            self._store.add_report(ReportRow(report_id, day, domain, SKIPPED, "only successful sessions", now, None),
                                   (), now)
            return
        try:
            record = parse_tlsrpt_records(await self._dns.txt(f"_smtp._tls.{domain}"))
        except DnsFailure as exc:
            log.warn("{domain}: _smtp._tls lookup failed ({error}); trying again next run", domain=domain, error=exc)
            self.problems.append(f"{domain} {day}: _smtp._tls lookup failed: {exc}")
            return
        if isinstance(record, NoTlsrpt):
            log.info("{domain} on {day}: no report ({reason})", domain=domain, day=day, reason=record.reason)
            if not record.absent:
                self.unusable.append(f"{domain} {day}: {record.reason}")
            self._store.add_report(ReportRow(report_id, day, domain, NO_RECORD, record.reason, now, None), (), now)
            return
        for uri, reason in record.rejected:
            log.warn("{report_id} to {destination}: not used: {reason}", report_id=report_id, destination=uri,
                     reason=reason)
            self.unusable.append(f"{report_id} to {uri}: {reason}")
        body = report_body(build_report(day, counts, organization_name=settings.organization_name,
                                        contact_info=settings.contact_info, report_id=report_id))
        day_end = day_bounds(day)[1]
        # A day asked for (report --day), over or not, goes out now; others after a random delay.
        first = now if at_once or day_end > now else max(now, day_end + self._rng.uniform(0, settings.send_delay_max_s))
        self._store.add_report(ReportRow(report_id, day, domain, READY, record.record, now, body),
                               [d.uri for d in record.destinations], first, record.rejected)
        log.info("{report_id}: report for {domain} on {day}, first attempt {at}", report_id=report_id, domain=domain,
                 day=day, at=_iso(first))

    async def deliver_due(self) -> None:
        reports = {report.report_id: report for report in self._store.reports()}
        for delivery in self._store.deliveries():
            now = self._clock.seconds()
            if delivery.state == PENDING and delivery.next_attempt_at <= now:
                await self._attempt(reports[delivery.report_id], delivery, now)

    async def _attempt(self, report: ReportRow, delivery: DeliveryRow, now: float) -> None:
        delivery = replace(delivery, state=SENDING, attempts=delivery.attempts + 1,
                           first_attempt_at=delivery.first_attempt_at or now)
        if not self._store.claim_delivery(delivery):
            log.warn("{report_id} to {destination}: another report run took this attempt; not sending",
                     report_id=report.report_id, destination=delivery.destination)
            return
        try:
            try:
                detail = await self._send(report, delivery.destination)
            except DeliveryFailed:
                raise
            except Exception as exc:  # a bug or an input we did not foresee: never leave it in ``sending``
                log.failure("{report_id} to {destination}: unexpected error", report_id=report.report_id,
                            destination=delivery.destination)
                raise DeliveryFailed(f"unexpected error: {exc!r}") from exc
        except DeliveryFailed as exc:
            self.problems.append(f"{report.report_id} to {delivery.destination}: {exc}")
            finished = self._clock.seconds()
            state, at = next_attempt(delivery, finished, self._settings)
            log.warn("{report_id} to {destination}: attempt {n} failed: {error}; {what}", report_id=report.report_id,
                     destination=delivery.destination, n=delivery.attempts, error=exc,
                     what="giving up" if state == FAILED else f"next attempt {_iso(at)}")
            self._store.set_delivery(replace(delivery, state=state, next_attempt_at=at),
                                     AttemptRow(report.report_id, delivery.destination, finished, "error", str(exc)))
            return
        finished = self._clock.seconds()
        self._store.set_delivery(replace(delivery, state=SENT),
                                 AttemptRow(report.report_id, delivery.destination, finished, SENT, detail))
        log.info("{report_id} to {destination}: {detail}", report_id=report.report_id,
                 destination=delivery.destination, detail=detail)

    async def _send(self, report: ReportRow, destination: str) -> str:
        assert report.body is not None
        if destination.startswith("https:"):
            return await self._deliverers.https.post(destination, report.body)
        settings = self._settings
        rcpt = destination.removeprefix("mailto:")
        mail_from = settings.mail_from or settings.contact_info
        message = report_mail(report.body, report_id=report.report_id, day=report.day,
                              report_domain=report.report_domain, submitter=settings.submitter_domain,
                              mail_from=mail_from, to=rcpt, organization_name=settings.organization_name,
                              now=self._clock.seconds())
        signed = self._deliverers.dkim.sign(message.as_bytes())
        return await self._deliverers.mail.submit(mail_from, rcpt, signed)

    def prune(self) -> None:
        cutoff = utc_day(self._clock.seconds() - self._settings.retention_days * 86400)
        deleted = self._store.prune(cutoff)
        if deleted:
            log.info("pruned {count} spool and report rows older than {day}", count=deleted, day=cutoff)


def status_text(store: ReportStore, now: float) -> str:
    """Every report, each destination's state and every attempt, for ``report --status``."""
    lines: list[str] = []
    for report in store.reports():
        lines.append(f"{report.day}  {report.report_domain}  {report.state}  {report.report_id}")
        if report.state != READY:
            lines.append(f"    {report.detail}")
        for delivery in store.deliveries(report.report_id):
            due = f", next attempt {_iso(delivery.next_attempt_at)}" if delivery.state == PENDING else ""
            lines.append(f"    {delivery.destination}: {delivery.state}, {delivery.attempts} attempt(s){due}")
            for attempt in store.attempts(report.report_id):
                if attempt.destination == delivery.destination:
                    lines.append(f"        {_iso(attempt.at)}  {attempt.result}: {attempt.detail}")
    unreported = store.unreported(store.spooled_days())
    for day, domain in unreported:
        when = "after the day ends" if day >= utc_day(now) else "at the next run"
        lines.append(f"{day}  {domain}  spooled, report {when}")
    return "\n".join(lines) if lines else "no reports and nothing spooled"


def _iso(at: float) -> str:
    return datetime.datetime.fromtimestamp(at, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
