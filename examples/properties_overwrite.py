"""Properties are replaced as a whole: the second materialization keeps name,
description and owners only because it repeats them, and leaves url empty."""

from assetlog.producer import Asset, AssetProperties, flow, materialize

initial_asset = Asset(
    key="s3://my-bucket/evolving-data.csv",
    properties=AssetProperties(
        name="Evolving Dataset",
        description="Initial description",
        owners=["team-a@company.com"],
        url="https://dashboard.company.com/evolving-data",
    ),
)


@materialize(initial_asset)
def initial_creation() -> None:
    pass


updated_asset = Asset(
    key="s3://my-bucket/evolving-data.csv",
    properties=AssetProperties(
        name="Evolving Dataset",
        description="Updated description with new insights",
        owners=["team-a@company.com"],
        # no url: it becomes null
    ),
)


@materialize(updated_asset)
def update_dataset() -> None:
    pass


@flow
def properties_overwrite() -> None:
    initial_creation()
    update_dataset()


if __name__ == "__main__":
    properties_overwrite()
