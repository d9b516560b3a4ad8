"""The head-end: asyncio server and client, transports, terminal sessions, collection, the control API.

Imports ``gridhead.protocols`` and ``gridhead.storage``; its simulator and demo are in ``headend.sim``.
"""
