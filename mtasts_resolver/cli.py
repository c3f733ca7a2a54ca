"""Command line: ``mtasts-resolver`` runs the daemon, ``mtasts-resolver query DOMAIN`` explains one domain."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time

from mtasts_resolver import __version__
from mtasts_resolver.config import Config, ConfigError, load_config

# Where the configuration is looked for without -c; the environment variable
# moves it (a second instance, or tests that must ignore an installed one).
DEFAULT_CONFIG = os.environ.get("MTASTS_RESOLVER_CONFIG", "/etc/mtasts-resolver/config.toml")
EX_CONFIG = 78  # sysexits.h EX_CONFIG: systemd shows it as a configuration error


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mtasts-resolver",
        description="MTA-STS TLS policy daemon for Postfix (socketmap and tcp_table).",
    )
    parser.add_argument("-c", "--config", help=f"TOML configuration file (default: {DEFAULT_CONFIG} if it "
                        "exists, else the embedded defaults)")
    parser.add_argument("--check-config", action="store_true", help="validate the configuration and exit")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("run", help="run the policy daemon (the default)")
    query = commands.add_parser("query", help="resolve one domain now and explain the answer")
    query.add_argument("domain")
    query.add_argument("--map", default="postfix", help="socketmap name to answer for (default: postfix)")
    report = commands.add_parser("report", help="build TLS-RPT reports of finished UTC days and deliver "
                                 "what is due (RFC 8460)")
    report.add_argument("--status", action="store_true", help="show every report, delivery and attempt, and exit")
    report.add_argument("--day", action="append", default=[], metavar="YYYY-MM-DD",
                        help="also report this UTC day even if it is not over yet (repeatable)")
    return parser


def _config_path(arg: str | None) -> str | None:
    if arg is not None:
        return arg
    return DEFAULT_CONFIG if os.path.exists(DEFAULT_CONFIG) else None


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = load_config(_config_path(args.config))
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EX_CONFIG
    if args.check_config:
        print(f"configuration OK ({args.config or _config_path(None) or 'embedded defaults'})")
        return 0
    if args.command not in ("query", "report") and config.daemon.workers > 1:
        from mtasts_resolver.app.workers import WorkerPool, inherited_fds

        if inherited_fds() is None:  # the parent: start the workers, which run the lines below
            return WorkerPool(config, [sys.executable, "-m", "mtasts_resolver", *sys.argv[1:]]).run()
    from twisted.internet import asyncioreactor

    asyncioreactor.install()  # dnspython's asyncio resolver runs on the same loop
    from twisted.internet import task

    if args.command == "query":
        return task.react(_query, (config, args.domain, args.map))
    if args.command == "report":
        from mtasts_resolver.app.report import report_command

        return task.react(report_command, (config, args.status, tuple(args.day)))
    return task.react(_run, (config, _config_path(args.config)))


async def _run(reactor, config: Config, config_path: str | None) -> int:
    from twisted.internet.defer import Deferred
    from twisted.logger import Logger

    from mtasts_resolver.app.daemon import Supervisor, make_service
    from mtasts_resolver.app.logs import start_logging
    from mtasts_resolver.store import StoreError

    start_logging(config.daemon.log_level)
    log = Logger(namespace="mtasts_resolver")
    try:
        daemon = make_service(config, reactor)
    except (StoreError, OSError, ValueError) as exc:
        log.critical("cannot start: {error}", error=exc)
        return 1
    supervisor = Supervisor(reactor, daemon)
    daemon.service.startService()
    try:
        await daemon.ready()
    except Exception as exc:  # FirstError from gatherResults: a listener could not bind
        log.critical("cannot listen: {error}", error=getattr(exc, "subFailure", exc))
        await daemon.service.stopService()
        return 1

    async def reload() -> None:
        supervisor.reloading()
        try:
            new = load_config(config_path)
        except ConfigError as exc:
            log.error("reload refused, still running the previous configuration: {error}", error=exc)
            supervisor.reloaded("last reload refused: configuration error")
            return
        restart_needed = await daemon.reload(new)
        log.info("configuration reloaded from {path}", path=config_path or "embedded defaults")
        supervisor.reloaded(f"restart needed for {', '.join(restart_needed)}" if restart_needed else "")

    # SIGHUP (systemctl reload): the handler only schedules, the reload runs on
    # the reactor. Installed before READY=1: until then SIGHUP would kill us.
    signal.signal(signal.SIGHUP, lambda *_: reactor.callFromThread(lambda: Deferred.fromCoroutine(reload())))
    supervisor.ready()
    log.info("mtasts-resolver {version} ready", version=__version__)
    stopped: Deferred[None] = Deferred()

    async def shutdown() -> None:
        supervisor.stopping()
        await daemon.service.stopService()
        stopped.callback(None)

    reactor.addSystemEventTrigger("before", "shutdown", lambda: Deferred.fromCoroutine(shutdown()))
    await stopped
    return 0


async def _query(reactor, config: Config, domain: str, map_name: str) -> int:
    from mtasts_resolver.app.daemon import build_policy_service
    from mtasts_resolver.app.explain import explain
    from mtasts_resolver.policy.keys import KeyKind, parse_key
    from mtasts_resolver.store import StoreError, open_store

    key = parse_key(domain)
    if key.kind is not KeyKind.DOMAIN:
        print(f"{domain}: answer NOTFOUND without any lookup ({key.reason})")
        return 0
    try:
        store = open_store(config.cache.backend, str(config.cache_path))
        cache_note = f"persistent cache {config.cache_path}"
    except StoreError as exc:
        store = open_store("sqlite", ":memory:")
        cache_note = f"no persistent cache ({exc})"
    policy = build_policy_service(config, reactor, store)
    policy.load()
    before = policy.cached_policy(key.domain)
    if policy.dane_probe is not None:
        await policy.dane_probe.check()  # DANE only with a validating resolver, as in the daemon
    resolution = await policy.resolve(key.domain)
    answer = policy.answer_now(map_name, key.domain)
    print(explain(resolution, before, answer, cache_note, time.time()))
    store.close()
    return 0
