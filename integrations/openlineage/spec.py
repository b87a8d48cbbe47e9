"""Validation of OpenLineage events against the spec's JSON schemas, vendored in `spec/`.

The schemas are looked up by their `$id` (never fetched): an event is checked
against the spec version its `schemaURL` names (1-0-x -> 1-0-5, anything else
-> 2-0-2), and each facet against its own `_schemaURL` when that exact facet
version is vendored; a facet whose schema is not known is kept as JSON
unchecked. Failures raise `InvalidOpenLineage` with one line saying where and why.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from functools import cache
from importlib import resources
from typing import Any

import orjson

SPEC_2 = "https://openlineage.io/spec/2-0-2/OpenLineage.json"
SPEC_1 = "https://openlineage.io/spec/1-0-5/OpenLineage.json"
_MAJOR_1 = re.compile(r"/spec/1-\d+-\d+/")
_VALID_FACETS: set[bytes] = set()
_VALID_FACETS_LIMIT = 20_000


class InvalidOpenLineage(ValueError):
    """An event Assetlog will not accept; the message is the reason a client is told."""


@cache
def _schemas() -> dict[str, Any]:
    found: dict[str, Any] = {}
    for entry in resources.files(__package__).joinpath("spec").iterdir():
        if entry.name.endswith(".json"):
            contents = json.loads(entry.read_text(encoding="utf-8"))
            found[contents["$id"]] = contents
    return found


@cache
def _registry() -> Any:
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT202012

    return Registry().with_resources(
        (uri, Resource.from_contents(contents, default_specification=DRAFT202012))
        for uri, contents in _schemas().items()
    )


@cache
def _validator(ref: str) -> Any:
    from jsonschema import Draft202012Validator

    return Draft202012Validator({"$ref": ref}, registry=_registry())


def known_schema(url: str) -> bool:
    """True when the schema document `url` points into is vendored."""
    return url.split("#", 1)[0] in _schemas()


def event_kind(event: Mapping[str, Any]) -> str:
    """RunEvent, DatasetEvent or JobEvent, by the fields the spec requires of each."""
    if "run" in event:
        return "RunEvent"
    if "dataset" in event:
        return "DatasetEvent"
    if "job" in event:
        return "JobEvent"
    raise InvalidOpenLineage("not an OpenLineage event: it has none of 'run', 'job', 'dataset'")


def spec_for(event: Mapping[str, Any]) -> str:
    url = event.get("schemaURL")
    return SPEC_1 if isinstance(url, str) and _MAJOR_1.search(url) else SPEC_2


def validate_event(event: Any) -> str:
    """Check `event` against its spec version and its known facets; returns its kind."""
    if not isinstance(event, dict):
        raise InvalidOpenLineage(f"an OpenLineage event is a JSON object, got {type(event).__name__}")
    kind = event_kind(event)
    spec = spec_for(event)
    if spec == SPEC_1 and kind != "RunEvent":
        raise InvalidOpenLineage(f"{kind} needs spec 2-0-x; the event names {event.get('schemaURL')!r}")
    _check(_validator(f"{spec}#/$defs/{kind}"), event, "event")
    for where, facet in _facets(event):
        url = facet.get("_schemaURL")
        if isinstance(url, str) and known_schema(url):
            # Facets repeat (a job's schema, its engine, its owners): each distinct one is checked once.
            seen = url.encode() + b"\n" + orjson.dumps(facet, option=orjson.OPT_SORT_KEYS)
            if seen in _VALID_FACETS:
                continue
            ref = url if "#" in url else url + "#"
            _check(_validator(ref), facet, where)
            if len(_VALID_FACETS) >= _VALID_FACETS_LIMIT:
                _VALID_FACETS.clear()
            _VALID_FACETS.add(seen)
    return kind


def _check(validator: Any, instance: Any, where: str) -> None:
    from jsonschema.exceptions import best_match

    error = best_match(validator.iter_errors(instance))
    if error is None:
        return
    path = "".join(f"[{p!r}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
    message = error.message if len(error.message) <= 300 else error.message[:299] + "\u2026"
    raise InvalidOpenLineage(f"{where}{path}: {message}")


def _facets(event: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """(where, facet) for every facet of the event that is an object."""
    holders: list[tuple[str, Any]] = [("run.facets", (event.get("run") or {}).get("facets")),
                                      ("job.facets", (event.get("job") or {}).get("facets"))]
    if isinstance(event.get("dataset"), dict):
        holders.append(("dataset.facets", event["dataset"].get("facets")))
    for side, extra in (("inputs", "inputFacets"), ("outputs", "outputFacets")):
        for index, dataset in enumerate(event.get(side) or ()):
            if isinstance(dataset, dict):
                holders.append((f"{side}[{index}].facets", dataset.get("facets")))
                holders.append((f"{side}[{index}].{extra}", dataset.get(extra)))
    for where, facets in holders:
        if isinstance(facets, dict):
            for name, facet in facets.items():
                if isinstance(facet, dict):
                    yield f"{where}.{name}", facet
