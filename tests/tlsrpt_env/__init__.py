"""Test parts for the TLS-RPT suite: SMTP hosts, a private Postfix, an HTTPS report receiver."""
