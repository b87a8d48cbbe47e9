"""The Avro contracts the producer and the consumers share.

`.avsc` files (one per event type and version), single-object encoding by
fingerprint, and the asset key rules. Nothing here does I/O beyond reading the
packaged schema files.
"""

from assetlog.schemas.codec import (
    DEPENDENCY,
    EVENT_TYPES,
    MATERIALIZATION,
    METADATA,
    DecodeError,
    SchemaRegistry,
    decode,
    encode,
    registry,
)
from assetlog.schemas.keys import MAX_ASSET_KEY_LENGTH, RESTRICTED_ASSET_CHARACTERS, validate_asset_key

__all__ = [
    "DEPENDENCY",
    "EVENT_TYPES",
    "MATERIALIZATION",
    "MAX_ASSET_KEY_LENGTH",
    "METADATA",
    "RESTRICTED_ASSET_CHARACTERS",
    "DecodeError",
    "SchemaRegistry",
    "decode",
    "encode",
    "registry",
    "validate_asset_key",
]
