"""Asset key rules, shared by the producer (fail at decoration) and the consumers
(an event with a bad key goes to the dead-letter topic).

They match Prefect 3's: checked in this order, the first failing rule names the problem.
"""

from __future__ import annotations

import re

RESTRICTED_ASSET_CHARACTERS = (
    "\n", "\r", "\t", "\x00", " ", "#", "?", "&", "%", '"', "'", "<", ">",
    "[", "]", "{", "}", "|", "\\", "^", "`",
)
MAX_ASSET_KEY_LENGTH = 512
VALID_ASSET_KEY = re.compile(r"^[a-z0-9]+://")


def validate_asset_key(value: object) -> str:
    """Return `value` unchanged (keys are stored verbatim) or raise ValueError saying what is wrong."""
    if not isinstance(value, str):
        raise ValueError(f"Asset key must be a string, got {type(value).__name__}")
    for char in RESTRICTED_ASSET_CHARACTERS:
        if char in value:
            raise ValueError(f"Asset key cannot contain '{char}'")
    if len(value) > MAX_ASSET_KEY_LENGTH:
        raise ValueError(f"Asset key cannot exceed {MAX_ASSET_KEY_LENGTH} characters")
    if not VALID_ASSET_KEY.match(value):
        raise ValueError("Key must be a valid URI, e.g. storage://bucket/folder/asset.csv")
    return value
