"""The messages between the daemon and its resolver processes: pickled tuples in 32-bit length-prefixed frames.

Twisted's ``Int32StringReceiver`` does the framing.  Pickle carries the
values because both ends are this package, in processes the daemon itself
starts from the same installation, and the values are its own frozen
dataclasses (policies, TXT records, DANE results): nothing a stranger
wrote is unpickled, only what our own parsers made of it.

Messages, daemon to child: first the :class:`~mtasts_resolver.config.Config`,
then ``(call_id, method, domain)``, and ``(LOG_LEVEL, level, None)`` when a
reload changes the log level.  Child to daemon: first
``(HELLO, True, pid)``, then ``(call_id, True, result)`` or
``(call_id, False, (local, error_text))``, and ``(LIMIT, key, detail)``
for each limit hit in the child (policy size, header caps), so that the
daemon's one :data:`~mtasts_resolver.limits.LIMITS` counts and logs them all.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable

from twisted.internet.interfaces import IReactorTime
from twisted.protocols.basic import Int32StringReceiver

HELLO = "hello"
LIMIT = "limit"   # (LIMIT, limit, detail): a limit hit in the child, counted and logged by the daemon
LOG_LEVEL = "log_level"   # (LOG_LEVEL, level, None): a reload changed daemon.log_level
#: Methods a child serves; each takes a domain and returns a typed result.
METHODS = ("discover", "fetch", "dane")
#: A policy file is at most mta_sts.max_policy_bytes; its pickle a little more.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024


#: The daemon handles at most this many results of one child per event-loop turn (:class:`MessageChannel`).
MESSAGES_PER_TURN = 1


class MessageChannel(Int32StringReceiver):
    """Sends and receives whole Python values; what to do with one is ``on_message``'s.

    With a ``clock`` (the daemon's side), at most :data:`MESSAGES_PER_TURN`
    messages are handled per event-loop turn: each result finishes a
    resolution (decide, record, answer its waiting lookups), and a pipe read
    can bring dozens at once; handled back to back they would hold every
    cached answer behind them.  The rest wait in the buffer for the next
    turn (Twisted's pause/resume of the receiver: the pipe is not read
    meanwhile).
    """

    MAX_LENGTH = MAX_MESSAGE_BYTES

    def __init__(self, on_message: Callable[[object], None], on_lost: Callable[[], None],
                 clock: IReactorTime | None = None) -> None:
        self._on_message = on_message
        self._on_lost = on_lost
        self._clock = clock
        self._this_turn = 0

    def send(self, message: object) -> None:
        self.sendString(pickle.dumps(message, pickle.HIGHEST_PROTOCOL))

    def stringReceived(self, data: bytes) -> None:
        self._on_message(pickle.loads(data))
        if self._clock is None:
            return
        self._this_turn += 1
        if self._this_turn >= MESSAGES_PER_TURN and not self.paused:
            self.pauseProducing()
            self._clock.callLater(0, self._next_turn)

    def _next_turn(self) -> None:
        self._this_turn = 0
        self.resumeProducing()   # handles what is buffered, then reads the pipe again

    def lengthLimitExceeded(self, length: int) -> None:
        # Only a bug makes one: the peer is ours. Drop the channel; the daemon restarts the child.
        self.transport.loseConnection()

    def connectionLost(self, reason=None) -> None:
        self._on_lost()
