"""Two described assets: properties travel with each materialization.

Both tasks declare an `Asset` with `AssetProperties` (name, description,
owners, url), so each materialization event carries them and the stored
properties of both assets are set by this flow.
"""

from assetlog.producer import Asset, AssetProperties, flow, materialize

customer_data = Asset(
    key="s3://my-bucket/processed-data.csv",
    properties=AssetProperties(
        name="Processed Customer Data",
        description="Customer records with personal data removed",
        owners=["data-team@company.com", "alice@company.com"],
        url="https://dashboard.company.com/datasets/customer-data",
    ),
)

sales_properties = AssetProperties(
    name="Sales Analytics Dataset",
    description="Daily sales per region, joined with customer segments",
    owners=["analytics-team", "john.doe@company.com"],
    url="https://analytics.company.com/sales-dashboard",
)

sales_summary = Asset(key="snowflake://warehouse/analytics/sales_summary", properties=sales_properties)


@materialize(customer_data)
def process_customer_data() -> list[dict[str, str]]:
    return [{"customer": "c-1", "segment": "retail"}, {"customer": "c-2", "segment": "pro"}]


@materialize(sales_summary)
def generate_sales_report() -> dict[str, float]:
    return {"emea": 1250.0, "amer": 980.5}


@flow
def analytics_pipeline() -> None:
    process_customer_data()
    generate_sales_report()


if __name__ == "__main__":
    analytics_pipeline()
