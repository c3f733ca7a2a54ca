"""Policy data and pure policy decisions: no I/O in this package."""
