"""Postfix table lookup protocols: framing only.

Each protocol turns requests into ``(map_name, key)`` pairs for a
:class:`~mtasts_resolver.lookup.LookupService` and encodes the
:class:`~mtasts_resolver.lookup.Answer` it returns, in request order.
"""

from ._limits import ConnectionBudget, ConnectionLimits
from ._ordered import DEFAULT_IDLE_TIMEOUT_S, LiveConnections
from .socketmap import (
    SOCKETMAP_MAX_REPLY,
    SOCKETMAP_MAX_REQUEST,
    SocketmapFactory,
    SocketmapProtocol,
)
from .readsocket import READSOCKET_MAX_REQUEST, ReadsocketFactory, ReadsocketProtocol
from .tcptable import TCP_TABLE_MAX_LINE, TcpTableFactory, TcpTableProtocol, decode_tcp, encode_tcp

__all__ = [
    "ConnectionBudget",
    "ConnectionLimits",
    "DEFAULT_IDLE_TIMEOUT_S",
    "LiveConnections",
    "READSOCKET_MAX_REQUEST",
    "ReadsocketFactory",
    "ReadsocketProtocol",
    "SOCKETMAP_MAX_REPLY",
    "SOCKETMAP_MAX_REQUEST",
    "SocketmapFactory",
    "SocketmapProtocol",
    "TCP_TABLE_MAX_LINE",
    "TcpTableFactory",
    "TcpTableProtocol",
    "decode_tcp",
    "encode_tcp",
]
