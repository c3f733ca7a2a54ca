"""One UTC day of spooled counters for one report domain → the RFC 8460 §4.4 report object. Pure."""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterable
from typing import Any

from mtasts_resolver.tlsrpt.model import CountKind

SUCCESS = "total-successful-session-count"
FAILURE = "total-failure-session-count"


def build_report(day: str, counts: Iterable[tuple[str, str, str, int]], *, organization_name: str,
                 contact_info: str, report_id: str) -> dict[str, Any]:
    """``counts`` are the spool's (policy JSON, kind, failure JSON, sessions) rows of the day."""
    policies: dict[str, dict[str, Any]] = {}
    for policy, kind, failure, sessions in counts:
        entry = policies.setdefault(policy, {"policy": json.loads(policy), "summary": {SUCCESS: 0, FAILURE: 0},
                                             "failure-details": []})
        if kind == CountKind.SUCCESS.value:
            entry["summary"][SUCCESS] += sessions
        elif kind == CountKind.FAILURE.value:
            entry["summary"][FAILURE] += sessions
        else:
            entry["failure-details"].append({**json.loads(failure), "failed-session-count": sessions})
    for entry in policies.values():
        if not entry["failure-details"]:
            del entry["failure-details"]
    start = datetime.datetime.strptime(day, "%Y-%m-%d")
    return {
        "organization-name": organization_name,
        "date-range": {
            "start-datetime": f"{start:%Y-%m-%d}T00:00:00Z",
            "end-datetime": f"{start:%Y-%m-%d}T23:59:59Z",  # as RFC 8460 §4.4's example
        },
        "contact-info": contact_info,
        "report-id": report_id,
        "policies": [policies[key] for key in sorted(policies)],
    }


def all_successful(counts: Iterable[tuple[str, str, str, int]]) -> bool:
    return all(kind == CountKind.SUCCESS.value for _, kind, _, _ in counts)
