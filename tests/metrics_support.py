"""Reading a process's Prometheus endpoint the way a scraper does (shared by the metrics tests)."""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families

Scraped = dict[str, list[tuple[dict[str, str], float]]]


def scrape(port: int) -> Scraped:
    """Every sample on 127.0.0.1:`port`/metrics, by sample name, with its labels."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    found: Scraped = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((sample.labels, sample.value))
    return found


def total(scraped: Scraped, name: str, **labels: str) -> float:
    """The sum of `name`'s samples whose labels include `labels`."""
    return sum(value for found, value in scraped.get(name, []) if all(found.get(k) == v for k, v in labels.items()))
