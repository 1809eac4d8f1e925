"""reads.bundle_marker: what the API's resolve cache compares (api_service/flow_control.py). Every change
that can change a start's resolution changes it; reading it again without a change does not."""

from __future__ import annotations

from pathlib import Path

from shared_store import bundles as b
from shared_store.reads import bundle_marker


def test_the_marker_changes_with_every_change_that_can_change_a_resolution(db, flows: Path) -> None:
    assert b.import_flows_dir(db, flows) == []
    first = bundle_marker(db, "bench-loop")
    assert first == bundle_marker(db, "bench-loop"), "the same state, the same marker"
    assert first[0] and first[0][0][0] == "1.0.0" and first[1] == ()
    assert b.import_flows_dir(db, flows) == []
    assert bundle_marker(db, "bench-loop") == first, "a re-import of the same bytes changes nothing"

    b.deprecate(db, "bench-loop", flow_id="loop", reason="old")
    flagged = bundle_marker(db, "bench-loop")
    assert flagged != first and flagged[1] == (("loop", "old"),)
    b.deprecate(db, "bench-loop", flow_id="loop", reason="older")
    assert bundle_marker(db, "bench-loop") != flagged, "another reason is another answer"
    b.undeprecate(db, "bench-loop", flow_id="loop")
    assert bundle_marker(db, "bench-loop") == first

    b.delete_bundle(db, "bench-loop", "1.0.0")
    assert bundle_marker(db, "bench-loop") == ((), ())
    assert bundle_marker(db, "no-such-bundle") == ((), ())
    assert bundle_marker(db, "bench-echo") != ((), ()), "other bundles keep theirs"
