-- Version 2: the TLS-RPT outcome spool and the report delivery state (RFC 8460).

-- Session counters per UTC day, report domain, policy and failure: a burst of
-- identical outcomes is one row update, and a day's report is one range scan.
CREATE TABLE tlsrpt_outcome (
    day            TEXT NOT NULL,     -- UTC day of the sessions, YYYY-MM-DD
    report_domain  TEXT NOT NULL,     -- whose _smtp._tls record gets the report (A-label)
    policy         TEXT NOT NULL,     -- the RFC 8460 "policy" object as canonical JSON
    kind           TEXT NOT NULL,     -- success or failure (summary session counts), detail
    failure        TEXT NOT NULL,     -- for detail: a "failure-details" entry as canonical JSON, else empty
    sessions       INTEGER NOT NULL,
    PRIMARY KEY (day, report_domain, policy, kind, failure)
) WITHOUT ROWID;

-- How far each log feed has read, committed with the outcomes it produced.
CREATE TABLE tlsrpt_cursor (
    feed      TEXT PRIMARY KEY,
    position  TEXT NOT NULL
);

-- One row per (day, report domain) once the reporter has decided about it.
CREATE TABLE tlsrpt_report (
    report_id      TEXT PRIMARY KEY,  -- also the Message-ID and Subject Report-ID
    day            TEXT NOT NULL,
    report_domain  TEXT NOT NULL,
    state          TEXT NOT NULL,     -- ready, no-record, skipped
    detail         TEXT NOT NULL,
    created_at     REAL NOT NULL,
    body           BLOB,              -- the gzipped JSON, byte-identical on every attempt
    UNIQUE (day, report_domain)
);

-- One row per rua destination of a report.
CREATE TABLE tlsrpt_delivery (
    report_id         TEXT NOT NULL REFERENCES tlsrpt_report (report_id),
    destination       TEXT NOT NULL,  -- mailto:ADDRESS or the https URL
    state             TEXT NOT NULL,  -- pending, sending, sent, uncertain, failed
    attempts          INTEGER NOT NULL DEFAULT 0,
    next_attempt_at   REAL NOT NULL,
    first_attempt_at  REAL,
    PRIMARY KEY (report_id, destination)
);

-- Every delivery attempt, for report --status.
CREATE TABLE tlsrpt_attempt (
    report_id    TEXT NOT NULL,
    destination  TEXT NOT NULL,
    at           REAL NOT NULL,
    result       TEXT NOT NULL,
    detail       TEXT NOT NULL
);
CREATE INDEX tlsrpt_attempt_report ON tlsrpt_attempt (report_id, at)
