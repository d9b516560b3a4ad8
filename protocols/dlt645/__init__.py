"""DL/T 645-2007, the meter protocol of RS-485 meters (also forwarded by concentrators).

Two levels, sans-I/O: :mod:`.frame` finds and checks frames in a byte stream (``Framer``, ``decode``),
:mod:`.messages` turns a frame into the message of its function and back, :mod:`.registry` knows what
each data identifier (数据标识) holds.  Build requests from intent::

    ReadRequest("000012345678", 0x00010000).to_bytes()
    RemoteControlRequest.build("000012345678", RemoteCommand.TRIP, valid_until, "02123456", "00000001")

and take decoded messages out of a byte stream, one kernel call per chunk::

    framer = Framer()
    framer.feed(chunk)                  # any size: TCP segments, serial reads
    for msg in framer.messages():       # ReadResponse(...).values -> typed Values with units
        ...

``framer.next_frame()`` + ``decode_message(frame)`` give the same messages one frame at a time
(slower: a Python-level call per step; use it when the frame itself is wanted).
"""

from .frame import BROADCAST, WILDCARD, Frame, Framer, decode
from .messages import (MESSAGES, BroadcastTimeSync, ChangeBaudRequest, ChangeBaudResponse,
                       ChangePasswordRequest, ChangePasswordResponse, DemandResetRequest,
                       DemandResetResponse, ErrorResponse, EventResetRequest, EventResetResponse,
                       FreezeRequest, FreezeResponse, Message, MeterResetRequest, MeterResetResponse,
                       ReadAddressRequest, ReadAddressResponse, ReadFollowUpRequest,
                       ReadFollowUpResponse, ReadRequest, ReadResponse, RemoteCommand,
                       RemoteControlRequest, RemoteControlResponse, TerminalOutputRequest,
                       TerminalOutputResponse, WriteAddressRequest, WriteAddressResponse,
                       WriteRequest, WriteResponse, decode_message)


def decode_frames(data: bytes) -> list[Message]:
    """Every message in ``data`` (a whole capture), in order; a damaged frame raises its FrameError."""
    fr = Framer()
    fr.feed(data)
    return list(fr.messages())
