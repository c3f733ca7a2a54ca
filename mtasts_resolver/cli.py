"""Command line: the arguments, and which ``app/`` module runs each subcommand.

Every subcommand ends with a sysexits(3) status (:mod:`mtasts_resolver.app.exits`):
systemd, the report timer and monitoring see failures from it alone.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback

from mtasts_resolver import __version__
from mtasts_resolver.app.exits import EX_CONFIG, EX_SOFTWARE, EX_USAGE
from mtasts_resolver.config import ConfigError, load_config

# Where the configuration is looked for without -c; the environment variable
# moves it (a second instance, or tests that must ignore an installed one).
DEFAULT_CONFIG = os.environ.get("MTASTS_RESOLVER_CONFIG", "/etc/mtasts-resolver/config.toml")


class _Parser(argparse.ArgumentParser):
    """Usage errors exit EX_USAGE (64), not argparse's 2: ``audit`` exits 2 for errors it found."""

    def error(self, message: str):
        self.print_usage(sys.stderr)
        self.exit(EX_USAGE, f"{self.prog}: error: {message}\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="mtasts-resolver",
        description="MTA-STS TLS policy daemon for Postfix (socketmap and tcp_table).",
    )
    parser.add_argument("-c", "--config", help=f"TOML configuration file (default: {DEFAULT_CONFIG} if it "
                        "exists, else the embedded defaults)")
    parser.add_argument("--check-config", action="store_true",
                        help="check the configuration (users, groups, files, encodings) and exit")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("run", help="run the policy daemon (the default)")
    query = commands.add_parser("query", help="resolve one domain now and explain the answer")
    query.add_argument("domain")
    query.add_argument("--map", default="postfix", help="socketmap name to answer for (default: postfix)")
    query.add_argument("--json", action="store_true", help="print the resolution and the answer as JSON")
    status = commands.add_parser("status", help="show the daemon's state (workers, DANE, listeners, cache, "
                                 "spool backlog, last report run), running or not; exit 69 if it is not running")
    status.add_argument("--json", action="store_true", help="print JSON (for monitoring)")
    report = commands.add_parser("report", help="build TLS-RPT reports of finished UTC days and deliver "
                                 "what is due (RFC 8460)")
    report.add_argument("--status", action="store_true", help="show every report, delivery and attempt, and exit")
    report.add_argument("--day", action="append", default=[], metavar="YYYY-MM-DD",
                        help="also report this UTC day even if it is not over yet (repeatable)")
    audit = commands.add_parser("audit", help="check the inbound MTA-STS, DANE and TLS-RPT setup of domains as "
                                "a sender sees it; exit 0 clean, 1 warnings, 2 errors")
    audit.add_argument("domains", nargs="+", metavar="DOMAIN")
    audit.add_argument("--json", action="store_true", help="print JSON (for monitoring) instead of a table")
    audit.add_argument("--warn-days", type=int, default=21, metavar="N",
                       help="warn of certificates expiring within N days (default: 21)")
    commands.add_parser("salvage-cache", help="copy the readable rows of a damaged policy cache into a fresh "
                        "file, keeping the damaged one aside (with the daemon stopped)")
    copy = commands.add_parser("copy-to-postgresql", help="copy this host's SQLite cache and TLS-RPT spool into "
                               "the PostgreSQL store of [cache] (once per host, with the daemon stopped)")
    copy.add_argument("--from", dest="source", metavar="FILE", help="the SQLite file (default: [cache] path, "
                      "else STATE_DIR/cache.sqlite3)")
    return parser


def _config_path(arg: str | None) -> str | None:
    if arg is not None:
        return arg
    return DEFAULT_CONFIG if os.path.exists(DEFAULT_CONFIG) else None


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    config_path = _config_path(args.config)
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EX_CONFIG
    if args.check_config:
        from mtasts_resolver.app.preflight import check_config_command

        return check_config_command(config, config_path or "embedded defaults")
    if args.command == "salvage-cache":
        from mtasts_resolver.app.salvage import salvage_command

        return salvage_command(config)
    if args.command == "copy-to-postgresql":
        from mtasts_resolver.app.copy import copy_command

        return copy_command(config, args.source)
    if args.command == "status":
        from mtasts_resolver.app.status import status_command

        return status_command(config, config_path or "embedded defaults", args.json)
    if args.command not in ("query", "report", "audit") and config.daemon.workers > 1:
        from mtasts_resolver.app.workers import WorkerPool, inherited_fds

        if inherited_fds() is None:  # the parent: start the workers, which run the lines below
            return WorkerPool(config, [sys.executable, "-m", "mtasts_resolver", *sys.argv[1:]]).run()
    from mtasts_resolver.net.reactor import install_reactor

    install_reactor()
    if args.command == "query":
        from mtasts_resolver.app.query import query_command

        return _react(query_command, config, args.domain, args.map, args.json)
    if args.command == "report":
        from mtasts_resolver.app.report import report_command

        return _react(report_command, config, args.status, tuple(args.day))
    if args.command == "audit":
        from mtasts_resolver.app.audit import audit_command

        return _react(audit_command, config, tuple(args.domains), args.json, args.warn_days)
    from mtasts_resolver.app.daemon import run

    return _react(run, config, config_path)


def _react(command, *args) -> int:
    """Run ``command(reactor, *args)`` on the reactor and exit with the status it returns.

    ``task.react`` exits 0 whatever a coroutine returns; only SystemExit
    carries a status out of it.
    """
    from twisted.internet import task
    from twisted.internet.defer import Deferred

    async def with_status(reactor) -> None:
        try:
            status = await command(reactor, *args)
        except Exception:  # noqa: BLE001 - a bug: say so with the traceback, and exit EX_SOFTWARE
            traceback.print_exc()
            raise SystemExit(EX_SOFTWARE) from None
        raise SystemExit(status)

    task.react(lambda reactor: Deferred.fromCoroutine(with_status(reactor)))
    return EX_SOFTWARE   # not reached: react() exits the process
