"""The head-end: the only package with I/O (asyncio server and client, transports, sessions)."""
