"""Runtime metadata: `Asset.add_metadata`, `add_asset_metadata`, and several calls
merged (later top-level keys win) into one metadata event per asset and run."""

from assetlog.producer import Asset, AssetProperties, add_asset_metadata, flow, materialize

customer_data = Asset(
    key="s3://my-bucket/customer-data.csv",
    properties=AssetProperties(name="Customer Data", owners=["data-team@company.com"]),
)


def extract_data() -> list[dict[str, object]]:
    return [{"id": i, "email": f"user{i}@example.com" if i % 4 else None} for i in range(20)]


def clean_data(rows: list[dict[str, object]]) -> list[dict[str, object]]:
    return [row for row in rows if row["email"] is not None]


def enrich_data(rows: list[dict[str, object]]) -> list[dict[str, object]]:
    return [{**row, "domain": str(row["email"]).split("@")[1]} for row in rows]


@materialize(customer_data)
def process_customers() -> list[dict[str, object]]:
    result = enrich_data(clean_data(extract_data()))
    customer_data.add_metadata({
        "record_count": len(result),
        "processing_duration_seconds": 45.2,
        "data_quality_score": 0.95,
        "last_updated": "2024-01-15T10:30:00Z",
    })
    return result


@materialize("s3://my-bucket/processed-data.csv")
def process_data() -> list[dict[str, object]]:
    result = clean_data(extract_data())
    add_asset_metadata("s3://my-bucket/processed-data.csv", {"rows_processed": len(result), "processing_time": "2.5s"})
    return result


@materialize(customer_data)
def comprehensive_processing() -> list[dict[str, object]]:
    raw_data = extract_data()
    customer_data.add_metadata({"raw_records": len(raw_data)})

    cleaned_data = clean_data(raw_data)
    customer_data.add_metadata({
        "cleaned_records": len(cleaned_data),
        "records_removed": len(raw_data) - len(cleaned_data),
    })

    final_data = enrich_data(cleaned_data)
    customer_data.add_metadata({"final_records": len(final_data), "enrichment_success_rate": 0.92})
    return final_data


@flow
def accumulating_metadata() -> None:
    process_customers()
    process_data()
    comprehensive_processing()


if __name__ == "__main__":
    accumulating_metadata()
