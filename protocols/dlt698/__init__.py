"""DL/T 698.45, the object-oriented protocol of current meters and concentrators.

``apdu`` — every application-layer service of clause 7 (decode_apdu / Apdu.to_bytes, constructors such
as ``apdu.get``); ``dar`` — data access results as named errors; ``objects`` — the object registry
(scaler and unit of each OAD); ``render`` — APDUs as JSON with OADs named and values scaled.
"""

from .frame import AddressType, Fragment, FragmentType, Frame, Framer, ServerAddress, decode_frame  # noqa: F401
