"""The report mail (RFC 8460 §5.3): headers, the attachment's name and media type, CRLF line ends."""

from __future__ import annotations

import email
import email.policy
import gzip
import json
import re

from mtasts_resolver.tlsrpt.feeds.postfix_log import REPORT_MESSAGE_ID_MARKER
from mtasts_resolver.tlsrpt.model import day_bounds
from mtasts_resolver.tlsrpt.report.mail import (REPORT_MEDIA_TYPE, new_report_id, report_body, report_filename,
                                                report_mail)

REPORT = {"organization-name": "Org", "report-id": "x", "policies": [], "contact-info": "t@s.test",
          "date-range": {"start-datetime": "2026-03-01T00:00:00Z", "end-datetime": "2026-03-01T23:59:59Z"}}


def make(report_id: str) -> bytes:
    return report_mail(report_body(REPORT), report_id=report_id, day="2026-03-01", report_domain="a.test",
                       submitter="s.test", mail_from="t@s.test", to="r@a.test", organization_name="Org",
                       now=day_bounds("2026-03-02")[0]).as_bytes()


def test_report_id_is_a_msg_id_with_the_marker_and_unique():
    first, second = new_report_id("2026-03-01", "a.test", "s.test"), new_report_id("2026-03-01", "a.test", "s.test")
    assert first != second
    assert re.fullmatch(r"20260301\.a\.test\.[0-9a-f]{12}\.tlsrpt@s\.test", first)
    assert REPORT_MESSAGE_ID_MARKER in first


def test_body_is_deterministic_gzip_of_the_json():
    assert report_body(REPORT) == report_body(REPORT)
    assert json.loads(gzip.decompress(report_body(REPORT))) == REPORT


def test_filename_follows_rfc8460():
    report_id = "20260301.a.test.0123456789ab.tlsrpt@s.test"
    begin, end = day_bounds("2026-03-01")
    assert report_filename("s.test", "a.test", "2026-03-01", report_id) == \
        f"s.test!a.test!{begin}!{end - 1}!0123456789ab.json.gz"


def test_mail_headers_parts_and_line_ends():
    report_id = new_report_id("2026-03-01", "a.test", "s.test")
    raw = make(report_id)
    assert b"\r\r\n" not in raw and re.search(rb"(?<!\r)\n", raw) is None   # CRLF everywhere, once
    message = email.message_from_bytes(raw, policy=email.policy.SMTP)
    assert message.get_content_type() == "multipart/report" and message.get_param("report-type") == "tlsrpt"
    assert message["Message-ID"] == f"<{report_id}>"
    assert message["Subject"] == f"Report Domain: a.test Submitter: s.test Report-ID: <{report_id}>"
    assert (message["TLS-Report-Domain"], message["TLS-Report-Submitter"], message["TLS-Required"]) == \
        ("a.test", "s.test", "No")
    text, attachment = message.iter_parts()
    assert text.get_content_type() == "text/plain" and "a.test" in text.get_content()
    assert attachment.get_content_type() == REPORT_MEDIA_TYPE
    assert attachment.get_filename().startswith("s.test!a.test!") and attachment.get_filename().endswith(".json.gz")
    assert json.loads(gzip.decompress(attachment.get_content())) == REPORT
