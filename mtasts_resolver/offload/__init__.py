"""Cold resolutions in resolver processes, so that they cannot take the event loop that answers cached lookups.

A cached lookup is a dict access on the daemon's event loop; a cold one is
DNS answers to parse, a TLS handshake, an HTTP response and a policy file:
milliseconds of Python each.  On one event loop a storm of new names (a
queue flushed to thousands of domains, or a stranger asking on purpose)
made every cached lookup wait behind them: p99 of 26-261 ms in the hostile
bench.  So the network half of each resolution runs in
``daemon.resolver_processes`` child processes:

- :mod:`.child` is a child's main: its own reactor, DNS client, policy
  fetcher and DANE walk, serving calls from its stdin.
- :mod:`.processes` is the daemon's side: it starts the children, hands
  each call to the child of its domain and the typed result back, and
  restarts a child that dies.  A call that cannot be answered because of
  the children (gone, restarting, silent past a deadline) fails with
  :class:`~mtasts_resolver.net.local.LocalFailure`: TEMP, never a verdict.
- :mod:`.wire` frames the messages between them.

What stays in the daemon: the decisions (:mod:`~mtasts_resolver.policy`),
single flight and the caps, the cache and store, the DNSSEC validation
probe (one query per interval) and the gate it keeps in front of DANE.
"""
