"""Assets, properties and decorators fail where the user made the mistake, with Prefect's messages."""

from __future__ import annotations

import pydantic
import pytest

from assetlog.producer import Asset, AssetProperties, flow, materialize, task
from assetlog.schemas import RESTRICTED_ASSET_CHARACTERS


@pytest.mark.parametrize("char", RESTRICTED_ASSET_CHARACTERS)
def test_each_restricted_character_is_named_in_the_error(char):
    with pytest.raises(ValueError) as info:
        Asset(key=f"s3://bucket/a{char}b")
    assert f"Asset key cannot contain '{char}'" in str(info.value)


def test_restricted_characters_are_exactly_prefects():
    assert set(RESTRICTED_ASSET_CHARACTERS) == set("\n\r\t\x00 #?&%\"'<>[]{}|\\^`")


def test_keys_up_to_512_characters_are_accepted_and_longer_ones_refused():
    key = "s3://" + "x" * 507
    assert Asset(key=key).key == key
    with pytest.raises(ValueError) as info:
        Asset(key=key + "x")
    assert "Asset key cannot exceed 512 characters" in str(info.value)


@pytest.mark.parametrize("key", ["bucket/file.csv", "S3://bucket/x", "s3:/bucket/x", "://x", "s_3://x", ""])
def test_a_key_must_start_with_a_lowercase_scheme(key):
    with pytest.raises(ValueError) as info:
        Asset(key=key)
    assert "Key must be a valid URI, e.g. storage://bucket/folder/asset.csv" in str(info.value)


def test_rules_are_checked_in_order_characters_length_then_uri():
    with pytest.raises(ValueError, match="cannot contain ' '"):
        Asset(key="no scheme" + "x" * 600)
    with pytest.raises(ValueError, match="cannot exceed 512"):
        Asset(key="noscheme" + "x" * 600)


@pytest.mark.parametrize("key", [
    "s3://my-bucket/data.csv", "postgres://prod-db/public/users", "snowflake://warehouse/analytics/sales",
    "0x://x", "s3://B/Üñí+code=1;a,b@c!$*()~", "file://",
])
def test_valid_keys_are_kept_verbatim(key):
    assert Asset(key=key).key == key


def test_repr_shows_only_the_key():
    assert repr(Asset(key="s3://x")) == "Asset(key='s3://x')"
    assert repr(Asset(key="s3://x", properties=AssetProperties(name="X"))) == "Asset(key='s3://x')"


def test_assets_and_properties_are_frozen():
    asset = Asset(key="s3://x", properties=AssetProperties(name="X"))
    with pytest.raises(pydantic.ValidationError):
        asset.key = "s3://y"  # type: ignore[misc]
    with pytest.raises(pydantic.ValidationError):
        asset.properties.name = "Y"  # type: ignore[union-attr,misc]


def test_assets_hash_by_key():
    assert hash(Asset(key="s3://x")) == hash(Asset(key="s3://x", properties=AssetProperties(name="X")))
    assert Asset(key="s3://x") == Asset(key="s3://x")
    assert len({Asset(key="s3://x"), Asset(key="s3://x"), Asset(key="s3://y")}) == 2


def test_description_is_limited_to_2500_characters():
    assert AssetProperties(description="d" * 2500).description == "d" * 2500
    with pytest.raises(ValueError):
        AssetProperties(description="d" * 2501)


def test_properties_have_all_four_fields_and_nothing_else():
    props = AssetProperties(name="n", description="d", owners=["a", "b"], url="https://x")
    assert (props.name, props.description, props.owners, props.url) == ("n", "d", ["a", "b"], "https://x")
    with pytest.raises(ValueError):
        AssetProperties(title="x")  # type: ignore[call-arg]


def test_materialize_needs_at_least_one_asset():
    with pytest.raises(TypeError, match="at least one asset"):
        materialize()
    with pytest.raises(TypeError, match="at least one asset"):
        materialize(by="dbt")


def test_bare_materialize_on_a_function_is_refused():
    def fn() -> None: ...

    with pytest.raises(TypeError, match="at least one asset"):
        materialize(fn)  # type: ignore[arg-type]


def test_a_bad_key_fails_when_the_decorator_runs():
    with pytest.raises(ValueError, match="Asset key cannot contain ' '"):
        materialize("s3://bad key")
    with pytest.raises(ValueError, match="Key must be a valid URI"):
        materialize("s3://ok", asset_deps=["not-a-uri"])
    with pytest.raises(ValueError, match="Key must be a valid URI"):
        task(asset_deps=["not-a-uri"])
    with pytest.raises(TypeError):
        materialize(42)  # type: ignore[arg-type]


def test_unknown_options_fail_at_decoration_and_prefect_only_options_are_accepted():
    with pytest.raises(TypeError, match="retires"):
        task(retires=3)
    with pytest.raises(TypeError, match="colour"):
        flow(colour="red")
    with pytest.raises(TypeError, match="retires"):
        materialize("s3://x", retires=3)

    @task(cache_policy=None, log_prints=True, timeout_seconds=5)
    def t() -> int:
        return 1

    assert t() == 1


def test_decorated_functions_keep_their_name_and_return_value():
    @materialize("s3://x")
    def build(a: int, b: int = 2) -> int:
        """Doc."""
        return a + b

    assert build.name == "build"
    assert build.__doc__ == "Doc."
    assert build.__name__ == "build"

    @flow
    def my_flow_name() -> int:
        return 7

    assert my_flow_name.name == "my-flow-name"
    assert flow(name="custom")(lambda: 1).name == "custom"


def test_with_options_replaces_assets_and_keeps_the_rest():
    @materialize("s3://a", "s3://b", by="dbt", retries=2)
    def build() -> None: ...

    other = build.with_options(assets=["s3://c"], name="other")
    assert [a.key for a in other.assets] == ["s3://c"]
    assert (other.name, other.retries, other.by) == ("other", 2, "dbt")
    assert [a.key for a in build.assets] == ["s3://a", "s3://b"]
    assert [a.key for a in build.with_options(by="spark").assets] == ["s3://a", "s3://b"]
    assert build.with_options(by="spark").by == "spark"
    with pytest.raises(ValueError, match="Key must be a valid URI"):
        build.with_options(assets=["nope"])


def test_duplicate_assets_are_one_asset_and_the_declaration_with_properties_wins():
    @materialize("s3://a", Asset(key="s3://a", properties=AssetProperties(name="A")), "s3://b")
    def build() -> None: ...

    assert [a.key for a in build.assets] == ["s3://a", "s3://a", "s3://b"]  # as given, like Prefect
    assert [a.key for a in build.materialized] == ["s3://a", "s3://b"]
    assert build.materialized[0].properties == AssetProperties(name="A")
