"""An external asset: a full `Asset` in `asset_deps` gives a system outside the
workflows (a production database) its properties through the dependency event."""

from assetlog.producer import Asset, AssetProperties, flow, materialize

external_database = Asset(
    key="postgres://prod-db/public/users",
    properties=AssetProperties(
        name="Production Users Table",
        description="Main user database maintained by the platform team",
        owners=["platform-team@company.com"],
        url="https://internal-db-dashboard.com/users",
    ),
)


@materialize("s3://my-bucket/user-analytics.csv", asset_deps=[external_database])
def analyze_users() -> None:
    pass


@flow
def external_database_flow() -> None:
    analyze_users()


if __name__ == "__main__":
    external_database_flow()
