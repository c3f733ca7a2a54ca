"""The ``mtasts-resolver report`` command: wiring of the reporter to the store, DNS and the MTA."""

from __future__ import annotations

import datetime
import sys

from mtasts_resolver.app.exits import EX_CANTCREAT, EX_CONFIG, EX_DATAERR, EX_IOERR, EX_SOFTWARE, EX_TEMPFAIL, OK
from mtasts_resolver.app.logs import start_logging
from mtasts_resolver.config import Config
from mtasts_resolver.net.network import dns_on_reactor
from mtasts_resolver.net.tls import trust_root
from mtasts_resolver.store import CannotCreate, ReportLocked, StoreError, Unreachable, open_store
from mtasts_resolver.tlsrpt.report.deliver import HttpsPoster, MailSubmitter
from mtasts_resolver.tlsrpt.report.dkim import DkimKey
from mtasts_resolver.tlsrpt.report.reporter import (Deliverers, NotConfigured, Reporter, ReporterError, check_settings,
                                                     status_text)


async def report_command(reactor, config: Config, status: bool, days: tuple[str, ...]) -> int:
    """A sysexits status: 75 when a domain or delivery failed this run (tried again at the next one),
    0 when reporting is not configured at all, 78 for settings only partly there or a --day that cannot work, 74/73 for the spool, 75 too when another run holds the lock or the database
    is unreachable."""
    start_logging(config.daemon.log_level)
    try:
        for day in days:
            datetime.date.fromisoformat(day)
    except ValueError as exc:
        print(f"report: --day: {exc}", file=sys.stderr)
        return EX_CONFIG
    try:
        store = open_store(config.cache, config.cache_path)
    except StoreError as exc:
        print(f"cannot open the spool: {exc}", file=sys.stderr)
        if isinstance(exc, Unreachable):   # the fleet's database is down: the next run tries again
            return EX_TEMPFAIL
        return EX_CANTCREAT if isinstance(exc, CannotCreate) else EX_IOERR
    try:
        if status:
            print(status_text(store, reactor.seconds()))
            return 0
        settings = config.tlsrpt
        check_settings(settings)
        dns = dns_on_reactor(config, reactor)  # rua hosts resolve like everything else
        deliverers = Deliverers(
            MailSubmitter(settings.mail_submission, settings.sendmail_command, settings.smtp_server,
                          settings.delivery_timeout_s, reactor=reactor, tls_name=settings.smtp_tls_name,
                          tls_verify=settings.smtp_tls_verify, trust=trust_root(settings.ca_file)),
            HttpsPoster(reactor, trust_root(settings.ca_file), settings.https_ignore_cert_errors,
                        settings.delivery_timeout_s),
            DkimKey(settings.dkim_selector, settings.submitter_domain, settings.dkim_key_file))
        with store.report_lock():   # one run at a time, on this host (SQLite) or the whole fleet (PostgreSQL)
            reporter = Reporter(reactor, store, dns, settings, deliverers)
            problems = await reporter.run(days)
    except NotConfigured as exc:   # reporting off (the packaged default): nothing to do is no failure
        print(f"report: {exc}")
        return OK
    except ReporterError as exc:   # settings that cannot send
        print(f"report: {exc}", file=sys.stderr)
        return EX_CONFIG
    except ReportLocked as exc:    # another run is at work: this one is not needed
        print(f"report: {exc}", file=sys.stderr)
        return EX_TEMPFAIL
    except StoreError as exc:
        print(f"report: {exc}", file=sys.stderr)
        return EX_IOERR
    except (ValueError, OSError) as exc:
        print(f"report: {exc}", file=sys.stderr)
        return EX_SOFTWARE
    finally:
        store.close()
    if reporter.unusable:
        print(f"report: {len(reporter.unusable)} TLS-RPT record(s) or rua destination(s) of other domains "
              "cannot be used (theirs to fix; not retried):", *reporter.unusable, sep="\n  ", file=sys.stderr)
    if problems:
        print(f"report: {len(problems)} failed this run (tried again at the next run):", *problems,
              sep="\n  ", file=sys.stderr)
    return run_status(problems, reporter.unusable)


def run_status(problems: list[str], unusable: list[str]) -> int:
    """A finished run's exit status: ours to retry (75) before theirs to fix (65), else 0.

    A stranger's unusable record is never retried and not ours to fix: the
    packaged unit counts 65 as success (SuccessExitStatus=65), so someone
    else's DNS does not leave the daily timer failed; the status still says it.
    """
    if problems:
        return EX_TEMPFAIL
    return EX_DATAERR if unusable else OK
