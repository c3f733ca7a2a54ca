"""mtasts-resolver: MTA-STS (RFC 8461) and DANE (RFC 7672) TLS policies for Postfix and Exim."""

__version__ = "0.1.0"
