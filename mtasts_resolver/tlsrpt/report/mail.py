"""The report as bytes: JSON, gzip, the RFC 8460 §5.3 mail, and its names.

The mail is ``multipart/report; report-type="tlsrpt"`` with a short text
part and the gzipped JSON as ``application/tlsrpt+gzip`` named
``submitter!policy-domain!begin!end!unique.json.gz``; headers
``TLS-Report-Domain``, ``TLS-Report-Submitter`` (the domain of
contact-info), ``Subject: Report Domain: D Submitter: S Report-ID: <id>``
and ``TLS-Required: No`` (RFC 8689: a report about broken TLS must still
get through).  The report-id is also the Message-ID, and carries the marker
the log feeds use to never count report mail.
"""

from __future__ import annotations

import email.policy
import email.utils
import gzip
import json
import secrets
from email.message import EmailMessage
from typing import Any

from mtasts_resolver.tlsrpt.model import day_bounds
from mtasts_resolver.tlsrpt.feeds.postfix_log import REPORT_MESSAGE_ID_MARKER

REPORT_MEDIA_TYPE = "application/tlsrpt+gzip"   # RFC 8460 §6.5
REPORT_TOKEN_BYTES = 6


def new_report_id(day: str, report_domain: str, submitter: str) -> str:
    """``YYYYMMDD.DOMAIN.RANDOM.tlsrpt@SUBMITTER``: a valid msg-id (RFC 5322 §3.6.4), unique per report."""
    left = f"{day.replace('-', '')}.{report_domain}.{secrets.token_hex(REPORT_TOKEN_BYTES)}"
    return f"{left}{REPORT_MESSAGE_ID_MARKER}{submitter}"


def report_body(report: dict[str, Any]) -> bytes:
    """The gzipped I-JSON (RFC 7493) text; mtime 0 so the bytes depend on the report only."""
    return gzip.compress(json.dumps(report, ensure_ascii=False).encode("utf-8"), mtime=0)


def report_filename(submitter: str, report_domain: str, day: str, report_id: str) -> str:
    begin, end = day_bounds(day)
    unique = report_id.rpartition("@")[0].removesuffix(REPORT_MESSAGE_ID_MARKER[:-1]).rpartition(".")[2]
    return f"{submitter}!{report_domain}!{begin}!{end - 1}!{unique}.json.gz"


def report_mail(body: bytes, *, report_id: str, day: str, report_domain: str, submitter: str, mail_from: str,
                to: str, organization_name: str, now: float) -> EmailMessage:
    message = EmailMessage(policy=email.policy.SMTP)
    message["From"] = mail_from
    message["To"] = to
    message["Date"] = email.utils.formatdate(now, usegmt=True)
    message["Subject"] = f"Report Domain: {report_domain} Submitter: {submitter} Report-ID: <{report_id}>"
    message["Message-ID"] = f"<{report_id}>"
    message["TLS-Report-Domain"] = report_domain
    message["TLS-Report-Submitter"] = submitter
    message["TLS-Required"] = "No"
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(f"This is an aggregate TLS report (RFC 8460) from {organization_name} "
                        f"({submitter}) for {report_domain}, UTC day {day}.\n")
    maintype, subtype = REPORT_MEDIA_TYPE.split("/")
    message.add_attachment(body, maintype=maintype, subtype=subtype,
                           filename=report_filename(submitter, report_domain, day, report_id))
    message.set_type("multipart/report")
    message.set_param("report-type", "tlsrpt")
    return message
