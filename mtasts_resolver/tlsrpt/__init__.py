"""TLS reporting (RFC 8460): outcome feeds, the spool, and the daily reporter."""
