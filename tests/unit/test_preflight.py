"""What --check-config, the start-up and every reload refuse before binding anything: a table."""

from __future__ import annotations

import pytest

from mtasts_resolver.app.exits import EX_CANTCREAT, EX_CONFIG
from mtasts_resolver.app.preflight import problems
from mtasts_resolver.config import config_from_dict


def settings(tmp_path, **sections) -> dict:
    return {"daemon": {"state_dir": str(tmp_path / "state")}, **sections}


@pytest.mark.parametrize("make,status,text", [
    (lambda t: {}, None, None),
    (lambda t: {"listen": [{"unix": str(t / "s.sock"), "owner": "no-such-user-x"}]},
     EX_CONFIG, "listen[0].owner: no such user 'no-such-user-x'"),
    (lambda t: {"listen": [{"unix": str(t / "s.sock"), "group": "no-such-group-x"}]},
     EX_CONFIG, "listen[0].group: no such group 'no-such-group-x'"),
    (lambda t: {"listen": [{"unix": str(t / "missing" / "s.sock")}]},
     EX_CONFIG, f"listen[0].unix: directory {{t}}/missing of {{t}}/missing/s.sock does not exist"),
    (lambda t: {"listen": [{"unix": str(t / "s.sock"), "owner": "root", "group": "root"}]}, None, None),
    (lambda t: {"mta_sts": {"ca_file": str(t / "ca.pem")}},
     EX_CONFIG, "mta_sts.ca_file: cannot read {t}/ca.pem: No such file or directory"),
    (lambda t: {"tlsrpt": {"collector_socket_group": "no-such-group-x"}},
     EX_CONFIG, "tlsrpt.collector_socket_group: no such group 'no-such-group-x'"),
    (lambda t: {"tlsrpt": {"collector_socket_owner": "no-such-user-x"}},
     EX_CONFIG, "tlsrpt.collector_socket_owner: no such user 'no-such-user-x'"),
    (lambda t: {"tlsrpt": {"exim_event_socket_owner": "no-such-user-x"}},
     EX_CONFIG, "tlsrpt.exim_event_socket_owner: no such user 'no-such-user-x'"),
    (lambda t: {"tlsrpt": {"exim_event_socket_group": "no-such-group-x"}},
     EX_CONFIG, "tlsrpt.exim_event_socket_group: no such group 'no-such-group-x'"),
    (lambda t: {"tlsrpt": {"exim_log": str(t / "mainlog")}}, None, None),   # a log may appear later
    (lambda t: {"tlsrpt": {"postfix_log": str(t / "nodir" / "mail.log")}},
     EX_CONFIG, "tlsrpt.postfix_log: directory {t}/nodir of {t}/nodir/mail.log does not exist"),
    (lambda t: {"tlsrpt": {"postfix_log": "journal"}}, None, None),
    (lambda t: {"cache": {"path": str(t / "afile" / "deeper" / "cache.sqlite3")}},
     EX_CANTCREAT, "cannot create the policy cache {t}/afile/deeper/cache.sqlite3: {t}/afile is not a directory"),
    (lambda t: {"cache": {"path": str(t)}}, EX_CANTCREAT, "policy cache {t} is not a regular file"),
])
def test_problems(tmp_path, make, status, text):
    (tmp_path / "afile").write_text("")
    found = problems(config_from_dict(settings(tmp_path, **make(tmp_path))))
    if status is None:
        assert found == []
    else:
        assert [(p.status, str(p)) for p in found] == [(status, text.format(t=tmp_path))]
