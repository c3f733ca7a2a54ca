"""Shared fixtures: the real test world (DNS, HTTPS, CA) comes from tests.world."""

from tests.world.fixtures import *  # noqa: F401,F403  (pki, dns_world, policy_server)
