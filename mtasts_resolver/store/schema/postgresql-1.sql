-- Version 1 of the PostgreSQL store: what SQLite's versions 1 to 4 hold, for a fleet of MTAs.
-- (No semicolons in comments: the migration splits the script on them.)

-- The MTA-STS policy cache (RFC 8461 section 5.1), shared by every daemon of the fleet.
CREATE TABLE sts_policy (
    domain      TEXT PRIMARY KEY,          -- A-label, lower case
    txt_id      TEXT NOT NULL,             -- id= of the _mta-sts TXT record the policy was fetched for
    policy      TEXT NOT NULL,             -- the policy lines as published, joined with LF
    fetched_at  DOUBLE PRECISION NOT NULL, -- seconds since the epoch
    checksum    TEXT NOT NULL              -- BLAKE2b-128 of domain, txt_id, policy and fetched_at
);

-- Session counters per UTC day, report domain, policy and failure: every daemon adds to the same rows.
CREATE TABLE tlsrpt_outcome (
    day            TEXT NOT NULL,
    report_domain  TEXT NOT NULL,
    policy         TEXT NOT NULL,
    kind           TEXT NOT NULL,
    failure        TEXT NOT NULL,
    sessions       BIGINT NOT NULL,
    PRIMARY KEY (day, report_domain, policy, kind, failure)
);

-- How far each log feed of each host has read (feed is HOST/FEED).
CREATE TABLE tlsrpt_cursor (
    feed      TEXT PRIMARY KEY,
    position  TEXT NOT NULL
);

-- One row per (day, report domain) once a reporter, on any host, has decided about it.
CREATE TABLE tlsrpt_report (
    report_id      TEXT PRIMARY KEY,
    day            TEXT NOT NULL,
    report_domain  TEXT NOT NULL,
    state          TEXT NOT NULL,
    detail         TEXT NOT NULL,
    created_at     DOUBLE PRECISION NOT NULL,
    body           BYTEA,
    UNIQUE (day, report_domain)
);

CREATE TABLE tlsrpt_delivery (
    report_id         TEXT NOT NULL REFERENCES tlsrpt_report (report_id),
    destination       TEXT NOT NULL,
    state             TEXT NOT NULL,
    attempts          INTEGER NOT NULL DEFAULT 0,
    next_attempt_at   DOUBLE PRECISION NOT NULL,
    first_attempt_at  DOUBLE PRECISION,
    PRIMARY KEY (report_id, destination)
);

CREATE TABLE tlsrpt_attempt (
    seq          BIGSERIAL PRIMARY KEY,   -- insertion order within one instant
    report_id    TEXT NOT NULL,
    destination  TEXT NOT NULL,
    at           DOUBLE PRECISION NOT NULL,
    result       TEXT NOT NULL,
    detail       TEXT NOT NULL
);
CREATE INDEX tlsrpt_attempt_report ON tlsrpt_attempt (report_id, at);

-- The TLS-RPT policy in force per recipient domain, written with every resolution by every daemon.
CREATE TABLE tlsrpt_policy (
    domain      TEXT PRIMARY KEY,
    policy      TEXT NOT NULL,
    updated_at  DOUBLE PRECISION NOT NULL
);

-- Each host's SQLite file copied in by `mtasts-resolver copy-to-postgresql`, so that it is copied once.
CREATE TABLE store_copy (
    source     TEXT PRIMARY KEY,           -- HOST:PATH of the SQLite file
    copied_at  DOUBLE PRECISION NOT NULL
);
