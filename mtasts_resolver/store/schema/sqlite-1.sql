-- Version 1: the MTA-STS policy cache (RFC 8461 §5.1: the cache must survive restarts).
CREATE TABLE sts_policy (
    domain      TEXT PRIMARY KEY,   -- A-label, lower case
    txt_id      TEXT NOT NULL,      -- id= of the _mta-sts TXT record the policy was fetched for
    policy      TEXT NOT NULL,      -- the policy lines as published, joined with LF
    fetched_at  REAL NOT NULL       -- seconds since the epoch
);
