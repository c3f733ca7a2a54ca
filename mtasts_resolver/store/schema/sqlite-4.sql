-- Version 4: the TLS-RPT policy in force per recipient domain (RFC 8460 §4.4 "policy").

-- Written by every worker with each resolution (through its outcome spool), so
-- the log and event feeds, which only see sessions, report a session under the
-- policy the daemon applied (MTA-STS or DANE), whichever process resolved it.
CREATE TABLE IF NOT EXISTS tlsrpt_policy (
    domain      TEXT PRIMARY KEY,  -- recipient domain (A-label)
    policy      TEXT NOT NULL,     -- the "policy" object as canonical JSON
    updated_at  REAL NOT NULL
) WITHOUT ROWID;
