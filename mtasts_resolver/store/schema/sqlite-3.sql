-- Version 3: a checksum per stored policy, so a changed byte that still parses is seen at load:
-- BLAKE2b-128 of domain, txt_id, policy and fetched_at. Rows of version 2 have none until rewritten.
-- (No semicolons in comments: the migration splits the script on them.)
ALTER TABLE sts_policy ADD COLUMN checksum TEXT
