"""Exit statuses (sysexits(3)) and the one error type that carries one out of the process shell.

systemd, monitoring and the report timer learn about a failure from the exit
status alone, so each subcommand ends with one of these and the unit files
act on them (``RestartPreventExitStatus=78``: restarting cannot fix a
configuration).  The man page's EXIT STATUS section lists the same table.
"""

from __future__ import annotations

OK = 0
EX_USAGE = 64        # the command was used wrongly: an unknown option, a DOMAIN that is not one
EX_DATAERR = 65      # the input data was incorrect: report, another domain's TLS-RPT record or rua cannot be used
EX_NOINPUT = 66      # an input file did not exist or was not readable (salvage of a missing cache)
EX_UNAVAILABLE = 69  # a service could not be had: a listener could not bind (address in use)
EX_SOFTWARE = 70     # an internal error (a bug): see the log's traceback
EX_CANTCREAT = 73    # a file or directory could not be created (read-only or missing state dir)
EX_IOERR = 74        # reading or writing the state failed: a damaged cache, disk full, I/O error
EX_TEMPFAIL = 75     # try again later (report: another run holds the lock)
EX_CONFIG = 78       # the configuration is wrong: a bad key, an unknown user or group, an unreadable file


class Fatal(Exception):
    """Ends a subcommand with ``status``; the message names the thing that failed (address, path, user)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status
