"""Explicit dependencies: `asset_deps` names upstream assets no argument carries."""

from assetlog.producer import Asset, flow, materialize

raw_data_asset = Asset(key="s3://my-bucket/raw-data.csv")
config_asset = Asset(key="s3://my-bucket/processing-config.json")
processed_asset = Asset(key="s3://my-bucket/processed-data.csv")


@materialize(raw_data_asset)
def extract_raw_data() -> None:
    pass


@materialize(processed_asset, asset_deps=[raw_data_asset, config_asset])
def process_data() -> None:
    # Reads the raw data and the config from storage: no argument links them.
    pass


@materialize("s3://my-bucket/final-report.csv", asset_deps=["s3://my-bucket/data-from-other-workflow.csv"])
def create_report() -> None:
    # A string key: another workflow materializes that asset and owns its properties.
    pass


@flow
def explicit_dependencies_flow() -> None:
    extract_raw_data()
    process_data()
    create_report()


if __name__ == "__main__":
    explicit_dependencies_flow()
