"""What a workflow materializes or depends on: `Asset` and its `AssetProperties`.

Both are frozen pydantic models so an asset declared at import time can be shared
by any number of task runs and threads. A bad key fails where the user wrote it
(at construction, hence at decoration), with Prefect's messages.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from assetlog.producer.context import add_metadata_for_key
from assetlog.schemas import validate_asset_key

MAX_DESCRIPTION_LENGTH = 2500


class AssetProperties(BaseModel):
    """Descriptive properties of an asset.

    When an asset is materialized (or referenced in `asset_deps`) with properties,
    they replace every stored property: a field left out becomes null.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str | None = Field(default=None, description="Human-readable name of the asset.")
    url: str | None = Field(default=None, description="Where a person can look at the asset.")
    description: str | None = Field(
        default=None, max_length=MAX_DESCRIPTION_LENGTH, description="Markdown description of the asset."
    )
    owners: list[str] | None = Field(default=None, description="Owners (people or teams) of the asset.")

    def __hash__(self) -> int:  # owners is a list: hash what identifies the value
        return hash((self.name, self.url, self.description, tuple(self.owners or ())))

    def is_empty(self) -> bool:
        """Every field None: in Prefect that means "no properties", never "clear them"."""
        return self.name is None and self.url is None and self.description is None and self.owners is None


class Asset(BaseModel):
    """A dataset, table, file, model... identified by a URI key, stored verbatim."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    key: str
    properties: AssetProperties | None = Field(
        default=None, description="Setting this overwrites the stored properties of the asset."
    )

    @field_validator("key", mode="before")
    @classmethod
    def _validate_key(cls, value: Any) -> str:
        return validate_asset_key(value)

    def __repr__(self) -> str:
        return f"Asset(key={self.key!r})"

    def __hash__(self) -> int:
        return hash(self.key)

    def add_metadata(self, metadata: dict[str, Any]) -> None:
        """Attach runtime metadata to this asset's materialization in the running task.

        Shallow-merged with earlier calls in the same task run (later keys win).
        """
        add_metadata_for_key(self.key, metadata,
                             message_outside="Unable add Asset metadata when not inside of an AssetContext")


def as_asset(value: str | Asset) -> Asset:
    """Normalise a key or an Asset; a bad key raises ValueError here (at decoration)."""
    if isinstance(value, Asset):
        return value
    if isinstance(value, str):
        return Asset(key=value)
    raise TypeError(f"expected an asset key (str) or an Asset, got {type(value).__name__}")


def distinct_assets(values: tuple[str | Asset, ...] | list[str | Asset]) -> tuple[Asset, ...]:
    """Assets in declaration order, one per key: the first declaration of a key that has
    properties wins, else the first. Prefect emits one event per distinct declaration,
    and one without properties never clears them, so the properties are kept either way."""
    seen: dict[str, Asset] = {}
    for value in values:
        asset = as_asset(value)
        known = seen.get(asset.key)
        if known is None or (not has_properties(known) and has_properties(asset)):
            seen[asset.key] = asset
    return tuple(seen.values())


def has_properties(asset: Asset) -> bool:
    return asset.properties is not None and not asset.properties.is_empty()
