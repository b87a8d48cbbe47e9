"""The OpenLineage dataset naming <-> asset key mapping: the documented shapes, escaping, reversibility."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from assetlog.integrations.openlineage.naming import NamingError, asset_key_for, dataset_for
from assetlog.producer import Asset
from assetlog.schemas import MAX_ASSET_KEY_LENGTH


@pytest.mark.parametrize(("namespace", "name", "key"), [
    ("s3://bucket", "path/file.csv", "s3://bucket/path/file.csv"),
    ("postgres://host:5432", "db.schema.table", "postgres://host:5432/db/schema/table"),
    ("snowflake://org-account", "db.schema.table", "snowflake://org-account/db/schema/table"),
    ("kafka://broker:9092", "orders.v1", "kafka://broker:9092/orders.v1"),
    ("hdfs://nn:8020", "/user/x/part.parquet", "hdfs://nn:8020/user/x/part.parquet"),
    ("file", "/tmp/data.csv", "file:///tmp/data.csv"),
    ("bigquery", "proj.dataset.table", "bigquery:///proj/dataset/table"),
    ("gs://bucket", "/abs/name", "gs://bucket/~2Fabs/name"),
    ("s3://bucket", "my file%20#1.csv", "s3://bucket/my~20file~2520~231.csv"),
    ("s3://bucket", "a~b", "s3://bucket/a~7Eb"),
    ("postgres://h:5432", 'db.public."odd/name"', "postgres://h:5432/db/public/~22odd~2Fname~22"),
    ("My Catalog", "x/y", "openlineage://~nMy~20Catalog/x/y"),
    ("S3://upper", "k", "openlineage://~nS3:~2F~2Fupper/k"),
    ("s3://bucket/prefix", "k.csv", "s3://bucket~2Fprefix/k.csv"),
    ("hdfs://nn", "relative", "hdfs://nn/~rrelative"),
])
def test_documented_shapes_map_to_these_keys_and_back(namespace: str, name: str, key: str) -> None:
    assert asset_key_for(namespace, name) == key
    Asset(key=key)  # a valid Assetlog key
    assert dataset_for(key) == (namespace, name)


def test_a_producer_key_that_no_pair_writes_exports_under_the_assetlog_namespace() -> None:
    for key in ("s3://b/~raw", "postgres://h/", "s3://b/x/../y~", "x://"):
        pair = dataset_for(key)
        assert asset_key_for(*pair) == key


def test_an_overlong_name_is_refused_with_the_limit() -> None:
    with pytest.raises(NamingError, match=str(MAX_ASSET_KEY_LENGTH)):
        asset_key_for("s3://bucket", "x" * 600)


_schemes = st.sampled_from(["s3", "postgres", "hdfs", "file", "bigquery", "kafka", "gs", "openlineage", "assetlog"])
_namespaces = st.one_of(
    st.builds(lambda s, a: f"{s}://{a}", _schemes, st.text(min_size=1, max_size=20)),
    _schemes,
    st.text(max_size=20),
)


@settings(max_examples=3000)
@given(_namespaces, st.text(max_size=60))
def test_every_pair_maps_to_a_valid_key_and_back(namespace: str, name: str) -> None:
    try:
        key = asset_key_for(namespace, name)
    except NamingError:
        return
    Asset(key=key)
    assert dataset_for(key) == (namespace, name)


_key_chars = st.text(st.characters(blacklist_characters="\n\r\t\x00 #?&%\"'<>[]{}|\\^`"), max_size=40)


@settings(max_examples=3000)
@given(_schemes, _key_chars)
def test_every_assetlog_key_maps_to_a_pair_and_back(scheme: str, rest: str) -> None:
    key = f"{scheme}://{rest}"
    if len(key) > MAX_ASSET_KEY_LENGTH:
        return
    assert asset_key_for(*dataset_for(key)) == key
