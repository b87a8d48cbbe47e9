"""Runtime metadata for the assets a task run materializes.

Values are encoded as JSON when they are added, the way Prefect sends them
(pydantic's JSON mode: datetimes as ISO text, Decimals as text, sets and tuples
as lists, models and dataclasses as objects, non-string keys of nested dicts as
text), so a value that has no JSON form fails at the call that added it (naming
its key) and later mutations of the caller's objects cannot change what was
recorded. The merge is shallow: a later call's top-level keys replace earlier ones.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import orjson
from pydantic_core import PydanticSerializationError, to_json

from assetlog.producer.assets import Asset
from assetlog.producer.context import add_metadata_for_key


def encode_metadata(metadata: object) -> dict[str, str]:
    """Top-level key -> JSON text of its value; raises TypeError naming the offending key."""
    if type(metadata) is not dict and not isinstance(metadata, Mapping):  # (an ABC check is slow: dicts first)
        raise TypeError(f"metadata must be a dict of JSON-serialisable values, got {type(metadata).__name__}")
    encoded: dict[str, str] = {}
    for key, value in metadata.items():
        if not isinstance(key, str):
            raise TypeError(f"metadata keys must be strings, got {key!r} ({type(key).__name__})")
        try:
            encoded[key] = to_json(value, inf_nan_mode="null").decode()  # as Event.model_dump_json()
        except (PydanticSerializationError, TypeError, ValueError, RecursionError) as exc:
            raise TypeError(f"metadata value for key {key!r} is not JSON-serialisable: {exc}") from exc
    return encoded


def merged_metadata_json(values: Mapping[str, str]) -> str:
    """The JSON object text of already-encoded top-level values (it runs at the end of every
    materializing task run: orjson writes a key as `json.dumps(key, ensure_ascii=False)` does,
    several times faster)."""
    known = _KEY_JSON
    text, comma = "{", ""
    for key, value in values.items():  # (a loop: half the cost of joining a generator's items)
        text += comma + (known.get(key) or _json_key(key)) + ":" + value
        comma = ","
    return text + "}"


# A task adds the same few metadata keys at every run: their JSON text is kept (bounded).
_KEY_JSON: dict[str, str] = {}


def _json_key(key: str) -> str:
    try:
        text = orjson.dumps(key).decode()
    except TypeError:  # a lone surrogate, which orjson refuses: the standard library writes it as given
        text = json.dumps(key, ensure_ascii=False)
    if len(_KEY_JSON) >= 4096:
        _KEY_JSON.clear()
    _KEY_JSON[key] = text
    return text


def add_asset_metadata(asset: str | Asset, metadata: dict[str, Any]) -> None:
    """Attach runtime metadata to `asset`'s materialization in the running task.

    Raises RuntimeError outside a task run, and ValueError when the running task
    does not materialize `asset`.
    """
    if isinstance(asset, str):
        key = asset
    elif isinstance(asset, Asset):
        key = asset.key
    else:
        raise TypeError(f"expected an asset key (str) or an Asset, got {type(asset).__name__}")
    add_metadata_for_key(key, metadata, message_outside=(
        "Unable to call `add_asset_metadata` when not inside of an AssetContext"))
