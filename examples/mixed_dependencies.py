"""Mixed dependencies: one upstream inferred from the task graph, one from `asset_deps`."""

from assetlog.producer import Asset, flow, materialize

upstream_asset = Asset(key="s3://my-bucket/upstream.csv")
config_asset = Asset(key="s3://my-bucket/config.json")
downstream_asset = Asset(key="s3://my-bucket/downstream.csv")


@materialize(upstream_asset)
def create_upstream() -> str:
    return "upstream_data"


@materialize(downstream_asset, asset_deps=[config_asset])
def create_downstream(upstream_data: str) -> None:
    # Depends on upstream_asset (inferred: its result is the argument) and on
    # config_asset (explicit).
    pass


@flow
def mixed_dependencies() -> None:
    data = create_upstream()
    create_downstream(data)


if __name__ == "__main__":
    mixed_dependencies()
