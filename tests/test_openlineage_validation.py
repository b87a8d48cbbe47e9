"""The compiled validator (`jsonschema_rs`) and `jsonschema` agree on every schema the receiver checks.

The receiver accepts on the compiled validator's word and refuses only on
`jsonschema`'s (`spec._check`); if they disagreed on an event, the receiver
would accept what `jsonschema` refuses. Mutated events (the fuzz test's
mutations, over every event and facet shape of `pipeline()`) must get the
same answer from both, for the event's schema and for each known facet's.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema.exceptions import best_match
from openlineage_support import pipeline, to_dict
from test_openlineage_fuzz import _mutated

from assetlog.integrations.openlineage import spec
from assetlog.integrations.openlineage.spec import InvalidOpenLineage, validate_event


def _agree(event: object) -> int:
    """Compare both validators on the event's schema and, when the event is valid (as the receiver
    goes on only then), on each facet with a vendored schema; returns how many were compared."""
    if not isinstance(event, dict):
        return 0
    try:
        kind = spec.event_kind(event)
    except InvalidOpenLineage:
        return 0
    compared = 0
    if not _same(f"{spec.spec_for(event)}#/$defs/{kind}", event):
        return 1 if spec.spec_for(event) == spec.SPEC_2 else 0
    for _where, facet in spec._facets(event):
        url = facet.get("_schemaURL")
        if isinstance(url, str) and spec.known_schema(url):
            _same(url if "#" in url else url + "#", facet)
            compared += 1
    return compared + 1


def _same(ref: str, instance: object) -> bool:
    """Both validators' answer (asserted equal where the compiled one exists); True if valid."""
    slow_valid = best_match(spec._validator(ref).iter_errors(instance)) is None
    fast = spec._fast_validator(ref)
    if fast is not None:
        assert fast.is_valid(instance) == slow_valid, (ref, instance)
    return slow_valid


_BASES = [to_dict(e) for e in pipeline().events]


def test_the_compiled_validator_is_used_for_spec_2_and_facets():
    assert spec._fast_validator(f"{spec.SPEC_2}#/$defs/RunEvent") is not None
    assert spec._fast_validator(f"{spec.SPEC_1}#/$defs/RunEvent") is None
    assert sum(_agree(event) for event in _BASES) > len(_BASES)  # events and facets were compared


@settings(max_examples=600, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.data())
def test_compiled_validator_and_jsonschema_agree_on_mutated_events(data: st.DataObject):
    base = data.draw(st.sampled_from(_BASES))
    _agree(_mutated(base, data))


def test_a_schema_reference_that_cannot_be_resolved_is_a_refusal_with_a_reason():
    event = {**_BASES[0], "job": {**_BASES[0]["job"], "facets": {"odd": {
        "_producer": "p", "_schemaURL": "https://openlineage.io/spec/facets/1-2-0/SchemaDatasetFacet.json#/$defs/Nope"}}}}
    try:
        validate_event(event)
    except InvalidOpenLineage as exc:
        assert "job.facets.odd" in str(exc) and "cannot check it against" in str(exc)
    else:
        raise AssertionError("an unresolvable _schemaURL was accepted")
