"""The head-end: asyncio server and client, transports, terminal sessions, collection, the control API.

Imports ``gridhead.protocols`` and ``gridhead.storage``; its simulator and demo are in ``headend.sim``.
"""

# the public API: these modules; the compiled kernels (_X) and their twins (_X_py) are private
__all__ = [
    "auth", "collect", "commands", "config", "control", "log", "metrics", "prepay_control",
    "profile", "records", "registry", "server", "shard", "sim", "terminal", "transport_mqtt",
    "transport_serial",
]
