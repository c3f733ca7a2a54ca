"""The integration-test world: real DNS (nsd + unbound), HTTPS and a test CA.

Everything listens on 127.0.0.0/8 and is started and stopped by the tests.
"""

from .dns import DnsWorld, Zone
from .pki import TestPKI
from .policy_server import PolicyServer, Route

__all__ = ["DnsWorld", "PolicyServer", "Route", "TestPKI", "Zone"]
