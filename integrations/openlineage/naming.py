"""OpenLineage dataset names (namespace, name) <-> Assetlog asset keys, both ways, losslessly.

The same table written by a Prefect flow and read by a Spark job must be one
asset, so the common shapes map to the plain URI a person would write:

- `s3://bucket` + `path/file.csv`        -> `s3://bucket/path/file.csv`
- `postgres://host:5432` + `db.schema.t`  -> `postgres://host:5432/db/schema/t` (dots become segments
  for the relational schemes in `RELATIONAL_SCHEMES`)
- `hdfs://nn:8020` + `/user/x`            -> `hdfs://nn:8020/user/x` (absolute-path schemes)
- `bigquery` + `proj.ds.t` (no scheme)   -> `bigquery:///proj/ds/t` (empty authority: "bare" namespace)
- `file` + `/tmp/x.csv`                  -> `file:///tmp/x.csv`

What does not fit Assetlog's key rules is escaped, never refused: each of the
characters keys forbid (space, `%`, `#`, `?`, quotes, ...), `~` itself, and a
`/` inside a relational segment or an authority become `~XX` (two upper-case
hex digits). A namespace that is not `scheme://authority` with a lower-case
scheme (e.g. `My Catalog`, `arn:aws:glue:...`, `s3://bucket/prefix`'s path is
fine, `S3://x` is not) becomes `openlineage://~n<escaped namespace>`.

The mapping is reversible: `dataset_for(asset_key_for(ns, name)) == (ns, name)`
for every pair (property-tested), and every Assetlog key maps to a pair that
maps back to it: keys no pair produces (e.g. one containing a raw `~`) are
named `assetlog` + the key itself. Only a key longer than Assetlog's limit
(512 characters) is refused.
"""

from __future__ import annotations

import re

from assetlog.schemas import MAX_ASSET_KEY_LENGTH, RESTRICTED_ASSET_CHARACTERS, validate_asset_key


class NamingError(ValueError):
    """A dataset name that cannot become an asset key (only: too long after mapping)."""


# Schemes whose dataset names are dotted relational names (database.schema.table, project.dataset.table).
RELATIONAL_SCHEMES = frozenset({
    "postgres", "postgresql", "mysql", "mariadb", "redshift", "snowflake", "bigquery", "trino", "presto",
    "mssql", "sqlserver", "oracle", "db2", "teradata", "athena", "hive", "clickhouse", "databricks",
    "spanner", "vertica", "duckdb", "cassandra", "mongodb", "awsathena", "azuresynapse", "dremio",
})
# Schemes whose dataset names are absolute paths (`/user/x`): joined without an extra slash.
ABSOLUTE_PATH_SCHEMES = frozenset({"file", "hdfs", "webhdfs", "dbfs", "viewfs"})
# Namespaces that are not `scheme://authority` go under this scheme, authority marked with `~n`.
OPAQUE_SCHEME = "openlineage"
OPAQUE_MARK = "~n"
# Marks a relative name under an absolute-path scheme (`hdfs://nn` + `x` -> `hdfs://nn/~rx`).
RELATIVE_MARK = "~r"
# Namespace of Assetlog keys that no (namespace, name) pair produces; the name is the key itself.
ASSETLOG_NAMESPACE = "assetlog"

_ESCAPED = frozenset(RESTRICTED_ASSET_CHARACTERS) | {"~"}
_URI_NAMESPACE = re.compile(r"([a-z0-9]+)://(.+)", re.DOTALL)
_BARE_NAMESPACE = re.compile(r"[a-z0-9]+")
_KEY = re.compile(r"([a-z0-9]+)://([^/]*)(.*)", re.DOTALL)
_ESCAPE_SEQUENCE = re.compile(r"~([0-9A-F]{2})")


def escape(text: str, also: str = "") -> str:
    """`text` with each character keys forbid, `~`, and those in `also` written as `~XX`."""
    if not any(c in _ESCAPED or c in also for c in text):
        return text
    return "".join(f"~{ord(c):02X}" if c in _ESCAPED or c in also else c for c in text)


def unescape(text: str) -> str:
    return _ESCAPE_SEQUENCE.sub(lambda m: chr(int(m.group(1), 16)), text)


def _name_to_path(scheme: str, name: str) -> str:
    """The part of the key after the authority; empty for an empty name."""
    if not name:
        return ""
    if scheme in RELATIONAL_SCHEMES:
        return "/" + "/".join(escape(segment, also="/") for segment in name.split("."))
    if scheme in ABSOLUTE_PATH_SCHEMES:
        return escape(name) if name.startswith("/") else "/" + RELATIVE_MARK + escape(name)
    if name.startswith("/"):  # a leading slash is part of the name: keep it apart from the separator
        return "/~2F" + escape(name[1:])
    return "/" + escape(name)


def _path_to_name(scheme: str, path: str) -> str:
    if not path:
        return ""
    if scheme in RELATIONAL_SCHEMES:
        return ".".join(unescape(segment) for segment in path[1:].split("/"))
    if scheme in ABSOLUTE_PATH_SCHEMES:
        return unescape(path[3:]) if path.startswith("/" + RELATIVE_MARK) else unescape(path)
    return unescape(path[1:])


def _parts_for(namespace: str) -> tuple[str, str]:
    """(scheme, authority as it appears in the key) of a namespace."""
    uri = _URI_NAMESPACE.fullmatch(namespace)
    if uri is not None:
        return uri.group(1), escape(uri.group(2), also="/")
    if _BARE_NAMESPACE.fullmatch(namespace):
        return namespace, ""
    return OPAQUE_SCHEME, OPAQUE_MARK + escape(namespace, also="/")


def _canonical_key(namespace: str, name: str) -> str:
    scheme, authority = _parts_for(namespace)
    # Opaque namespaces carry any name as a generic path (they have no scheme to read it by).
    name_scheme = "" if authority.startswith(OPAQUE_MARK) else scheme
    return f"{scheme}://{authority}{_name_to_path(name_scheme, name)}"


def _canonical_dataset(key: str) -> tuple[str, str] | None:
    """The pair `_canonical_key` maps to `key`, or None if no pair does."""
    match = _KEY.fullmatch(key)
    if match is None:
        return None
    scheme, authority, path = match.groups()
    if path and not path.startswith("/"):
        return None
    if authority.startswith(OPAQUE_MARK):
        if scheme != OPAQUE_SCHEME:
            return None
        namespace, name_scheme = unescape(authority[len(OPAQUE_MARK):]), ""
    elif authority:
        namespace, name_scheme = f"{scheme}://{unescape(authority)}", scheme
    else:
        namespace, name_scheme = scheme, scheme
    pair = (namespace, _path_to_name(name_scheme, path))
    # Keys with a raw `~`, or spelled otherwise than the mapping writes them, are not canonical.
    return pair if _canonical_key(*pair) == key else None


def asset_key_for(namespace: str, name: str) -> str:
    """The Assetlog asset key of the OpenLineage dataset (namespace, name); see the module doc."""
    if namespace == ASSETLOG_NAMESPACE and _is_key(name) and _canonical_dataset(name) is None:
        return name
    key = _canonical_key(namespace, name)
    if len(key) > MAX_ASSET_KEY_LENGTH:
        raise NamingError(f"dataset {namespace!r} / {name[:80]!r}: its asset key would be {len(key)} "
                          f"characters, over Assetlog's limit of {MAX_ASSET_KEY_LENGTH}")
    validate_asset_key(key)  # cannot fail by construction; a broken rule must not pass silently
    return key


def dataset_for(key: str) -> tuple[str, str]:
    """The OpenLineage (namespace, name) of an Assetlog asset key: `asset_key_for`'s inverse."""
    pair = _canonical_dataset(key)
    return pair if pair is not None else (ASSETLOG_NAMESPACE, key)


def _is_key(text: str) -> bool:
    try:
        validate_asset_key(text)
    except ValueError:
        return False
    return True
