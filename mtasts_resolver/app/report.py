"""The ``mtasts-resolver report`` command: wiring of the reporter to the store, DNS and the MTA."""

from __future__ import annotations

import datetime
import sys

from mtasts_resolver.config import Config
from mtasts_resolver.net.dns import ConfiguredResolver, DnsClient
from mtasts_resolver.net.tls import trust_root
from mtasts_resolver.app.logs import start_logging
from mtasts_resolver.store import StoreError, open_store
from mtasts_resolver.tlsrpt.report.deliver import HttpsPoster, MailSubmitter
from mtasts_resolver.tlsrpt.report.dkim import DkimKey
from mtasts_resolver.tlsrpt.report.reporter import Deliverers, Reporter, ReporterError, RunLock, check_settings, status_text

EX_SOFTWARE = 70  # sysexits.h: the run failed (store, lock); systemd shows the timer's unit as failed
EX_TEMPFAIL = 75  # sysexits.h: a domain or delivery failed this run and is tried again at the next one


async def report_command(reactor, config: Config, status: bool, days: tuple[str, ...]) -> int:
    start_logging(config.daemon.log_level)
    try:
        store = open_store(config.cache.backend, str(config.cache_path))
    except StoreError as exc:
        print(f"cannot open the spool: {exc}", file=sys.stderr)
        return EX_SOFTWARE
    try:
        if status:
            print(status_text(store, reactor.seconds()))
            return 0
        for day in days:
            datetime.date.fromisoformat(day)
        settings = config.tlsrpt
        check_settings(settings)
        dns = DnsClient(config.dns.nameservers, config.dns.port, config.dns.timeout_s)
        reactor.installNameResolver(ConfiguredResolver(dns))  # rua hosts resolve like everything else
        deliverers = Deliverers(
            MailSubmitter(settings.mail_submission, settings.sendmail_command, settings.smtp_server,
                          settings.delivery_timeout_s),
            HttpsPoster(reactor, trust_root(settings.ca_file), settings.https_ignore_cert_errors,
                        settings.delivery_timeout_s),
            DkimKey(settings.dkim_selector, settings.submitter_domain, settings.dkim_key_file))
        with RunLock(config.cache_path.parent / "report.lock"):
            problems = await Reporter(reactor, store, dns, settings, deliverers).run(days)
    except (ReporterError, StoreError, ValueError, OSError) as exc:
        print(f"report: {exc}", file=sys.stderr)
        return EX_SOFTWARE
    finally:
        store.close()
    if problems:
        print(f"report: {len(problems)} failed this run (tried again at the next run):", *problems,
              sep="\n  ", file=sys.stderr)
        return EX_TEMPFAIL
    return 0
