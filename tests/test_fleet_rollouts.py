"""Staged rollouts decided by each box from the signed documents in a real SeaweedFS store: the rules (properties),
canary then rest, a refused canary stopping the rollout, manual rollback of a rollout and of one box, a box
that was away catching up, a store that goes away mid-rollout, and the NG-rate health rule."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.fleet import publishing, rollouts
from appliance.fleet.contracts import BundleRef, RolloutAction, RolloutDocument, RolloutHealth, RolloutReport
from appliance.fleet.participant import Participant, deployed_model_id, load_row
from appliance.fleet.schemas import BundleCreate, RolloutCreate
from appliance.fleet.store import FleetStore
from tests.fleet_support import (
    Box,
    Seaweed,
    seaweed_store,  # noqa: F401 - the module's SeaweedFS fixture, `store`
)

# --- the rules, by properties ---------------------------------------------------------------------------------

BOXES = ["a", "b", "c", "d"]
STATES = ["waiting", "downloading", "soaking", "healthy", "failed", "refused", "rolled_back"]


def _doc(canary: list[str], box_ids: list[str]) -> RolloutDocument:
    ref = BundleRef(name="m", version=1, object_key="k", sha256="0" * 64, bytes=1)
    return RolloutDocument(
        id="r-20260101T000000-000000", created_at=0, created_by_box="a", created_by_user="admin", bundle=ref,
        box_ids=box_ids, canary=canary,
    )  # fmt: skip


def _report(box: str, state: str) -> RolloutReport:
    return RolloutReport(rollout_id="r", box_id=box, stage="rest", state=state, updated_at=0)  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None)
@given(
    canary=st.lists(st.sampled_from(BOXES), max_size=2, unique=True),
    states=st.dictionaries(st.sampled_from(BOXES), st.sampled_from(STATES)),
    box=st.sampled_from(BOXES),
    deployed=st.booleans(),
    stopped=st.booleans(),
)
def test_a_rest_box_never_starts_before_every_canary_is_healthy_nor_after_a_failure(
    canary, states, box, deployed, stopped
):
    doc = _doc(canary, BOXES)
    seen = rollouts.Observed(reports={b: _report(b, s) for b, s in states.items()})
    if stopped:
        seen.actions.append(RolloutAction(rollout_id=doc.id, action="stop", at=0, by_box="a", by_user="u"))
    step = rollouts.next_step(doc, box, [], seen, deployed)
    canary_healthy = all(states.get(c) == "healthy" for c in canary)
    failed_stage = [
        b for b, s in states.items() if s in ("failed", "refused") and (b in canary) == (box in canary)
    ]
    failed_canary = [c for c in canary if states.get(c) in ("failed", "refused")]
    if not deployed and step == "go":
        assert not stopped and not failed_canary and not failed_stage
        assert box in canary or canary_healthy
    if deployed and failed_stage:
        assert step == "rollback"  # the stage failed: every box of it that switched goes back
    state, _detail = rollouts.rollout_state(doc, seen, BOXES)
    if any(s in ("failed", "refused") for s in states.values()):
        assert state == "stopped"
    if state == "done":
        assert all(states.get(b) == "healthy" for b in canary)


def test_boxes_outside_the_rollout_ignore_it_and_tags_select_boxes():
    doc = _doc([], ["a"])
    doc.tags = ["press"]
    seen = rollouts.Observed()
    assert rollouts.next_step(doc, "z", ["paint"], seen, False) == "ignore"
    assert rollouts.next_step(doc, "z", ["press"], seen, False) == "go"
    assert rollouts.next_step(doc, "a", [], seen, False) == "go"


# --- boxes in this process on a real store ---------------------------------------------------------------------


@pytest.fixture
def fleet(tmp_path: Path, store: Seaweed, request: pytest.FixtureRequest):
    bucket = f"r-{request.node.name[5:40].replace('_', '-').lower().strip('-')}"
    boxes = {
        name: Box(tmp_path / name, name, **store.store_config(tmp_path / name, bucket))
        for name in ("a", "b", "c")
    }
    FleetStore(boxes["a"].config).ensure_bucket()
    for box in boxes.values():
        for other in boxes.values():
            if other is not box:
                box.trust(other)
    for box in boxes.values():
        box.colour_model("v1 here")  # each box serves its own first model
    yield boxes
    for box in boxes.values():
        box.close()


def publish(box: Box, name: str = "colour", swap: bool = False) -> int:
    model_id = box.colour_model(f"{name} {time.time()}", swap=swap, deploy=False)
    return publishing.publish_model(box.db, box.config, model_id, box.admin, BundleCreate(name=name)).version


def run_until(participants: dict[str, Participant], done, rounds: int = 60) -> None:
    for _ in range(rounds):
        for p in participants.values():
            p.poll()
        if done():
            return
        time.sleep(0.05)
    raise AssertionError("the rollout did not get there")


def state_of(box: Box, rollout_id: str) -> str | None:
    row = load_row(box.db, rollout_id)
    return row.state if row else None


def test_canary_first_then_the_rest_and_a_rollback_of_the_whole_rollout(fleet):
    a, b, c = fleet["a"], fleet["b"], fleet["c"]
    before = {name: deployed_model_id(box.db) for name, box in fleet.items()}
    publish(a)
    body = RolloutCreate(name="colour", box_ids=["a", "b", "c"], canary=["b"], soak_s=0)
    created = rollouts.create_rollout(a.db, a.config, body, a.admin)
    assert created.state == "canary" and created.document.canary == ["b"]
    parts = {name: Participant(box.config, box.db) for name, box in fleet.items()}
    # The rest waits while the canary has not reported healthy.
    parts["a"].poll()
    parts["c"].poll()
    assert state_of(a, created.id) == state_of(c, created.id) == "waiting"
    assert deployed_model_id(a.db) == before["a"]
    run_until({"b": parts["b"]}, lambda: state_of(b, created.id) == "healthy")
    assert state_of(c, created.id) == "waiting"
    run_until(parts, lambda: all(state_of(x, created.id) == "healthy" for x in fleet.values()))
    read = rollouts.read_rollout(a.db, a.config, created.id, a.admin)
    assert read.state == "done", read.detail
    serving = {name: deployed_model_id(box.db) for name, box in fleet.items()}
    assert all(serving[n] != before[n] for n in serving)
    # One box back by itself, then the whole rollout.
    rollouts.add_action(a.db, a.config, created.id, "rollback_box", a.admin, box="c")
    run_until(parts, lambda: state_of(c, created.id) == "rolled_back")
    assert deployed_model_id(c.db) == before["c"] and deployed_model_id(b.db) == serving["b"]
    rollouts.add_action(a.db, a.config, created.id, "rollback", a.admin)
    run_until(parts, lambda: all(state_of(x, created.id) == "rolled_back" for x in fleet.values()))
    assert {name: deployed_model_id(box.db) for name, box in fleet.items()} == before
    assert rollouts.read_rollout(a.db, a.config, created.id, a.admin).state == "rolled_back"


def test_a_canary_that_refuses_the_bundle_stops_the_rollout_and_the_rest_never_switch(fleet):
    a, b, c = fleet["a"], fleet["b"], fleet["c"]
    settings_ = {
        "source": "/dev/null",
        "rules": [{"name": "bolts", "classes": ["bolt"], "condition": "present"}],
    }
    b.db.execute(
        "INSERT INTO cameras (name, enabled, settings, created_at, updated_at) VALUES ('press', 0, ?, '', '')",
        [json.dumps(settings_)],
    )
    before = {name: deployed_model_id(box.db) for name, box in fleet.items()}
    publish(a)
    created = rollouts.create_rollout(
        a.db, a.config, RolloutCreate(name="colour", box_ids=["a", "b", "c"], canary=["b"], soak_s=0), a.admin
    )
    parts = {name: Participant(box.config, box.db) for name, box in fleet.items()}
    run_until(parts, lambda: state_of(b, created.id) == "refused")
    for _ in range(3):
        for part in parts.values():
            part.poll()
    # A box that waited is told the rollout stopped; one that never started takes no part.
    assert state_of(a, created.id) in (None, "superseded") and state_of(c, created.id) in (None, "superseded")
    read = rollouts.read_rollout(a.db, a.config, created.id, a.admin)
    assert read.state == "stopped" and "'bolt'" in read.detail
    assert {name: deployed_model_id(box.db) for name, box in fleet.items()} == before


def test_a_box_that_was_away_catches_up_and_a_store_outage_only_delays(fleet, store):
    a, b, c = fleet["a"], fleet["b"], fleet["c"]
    publish(a)
    created = rollouts.create_rollout(
        a.db,
        a.config,
        RolloutCreate(name="colour", box_ids=["a", "b", "c"], canary_count=0, soak_s=0),
        a.admin,
    )
    parts = {name: Participant(box.config, box.db) for name, box in fleet.items() if name != "c"}
    run_until(parts, lambda: state_of(a, created.id) == state_of(b, created.id) == "healthy")
    assert state_of(c, created.id) is None  # c was off
    store.stop()
    late = Participant(c.config, c.db)
    with pytest.raises(Exception, match="fleet store"):
        late.poll()
    assert state_of(c, created.id) is None and deployed_model_id(c.db) != load_row(a.db, created.id).model_id
    store.start()
    run_until({"c": late}, lambda: state_of(c, created.id) == "healthy")
    assert rollouts.read_rollout(a.db, a.config, created.id, a.admin).state == "done"


def test_a_newer_rollout_supersedes_one_a_box_has_not_started(fleet):
    a, b = fleet["a"], fleet["b"]
    publish(a)
    first = rollouts.create_rollout(
        a.db, a.config, RolloutCreate(name="colour", box_ids=["b"], canary_count=0, soak_s=0), a.admin
    )
    publish(a)
    time.sleep(1.1)  # rollout ids carry the second
    second = rollouts.create_rollout(
        a.db, a.config, RolloutCreate(name="colour", box_ids=["b"], canary_count=0, soak_s=0), a.admin
    )
    part = Participant(b.config, b.db)
    run_until({"b": part}, lambda: state_of(b, second.id) == "healthy")
    assert state_of(b, first.id) == "superseded"
    assert first.document.bundle.version == 1 and second.document.bundle.version == 2


def test_the_ng_rate_rule_compares_the_soak_with_the_previous_model(fleet):
    from appliance.fleet.health import judge_soak

    box = fleet["a"]
    db = box.db
    settings_ = json.dumps({"source": "/dev/null"})
    camera = db.execute(
        "INSERT INTO cameras (name, enabled, settings, created_at, updated_at) VALUES ('c', 1, ?, '', '')",
        [settings_],
    ).lastrowid

    def events(model_id: int, start: float, verdicts: str) -> None:
        for n, v in enumerate(verdicts):
            db.execute(
                "INSERT INTO inspection_events (camera_id, ts, mode, verdict, model_id) VALUES (?, ?, 'interval', ?, ?)",
                [camera, start + n * 0.1, "ng" if v == "x" else "ok", model_id],
            )

    events(1, 1000.0, "x." * 20)  # 50% NG before
    events(2, 2000.0, "xxxx." * 8)  # 80% NG after
    health = RolloutHealth()
    common = {
        "model_id": 2,
        "previous_model_id": 1,
        "deployed_at": 1500.0,
        "serving_at": 1900.0,
        "min_events": 20,
    }
    assert not judge_soak(db, health, margin=0.2, **common)
    assert health.ng_rate_before == 0.5 and health.ng_rate_after == 0.8 and "more than" in health.reason
    assert judge_soak(db, RolloutHealth(), margin=0.35, **common)
    few = RolloutHealth()
    assert judge_soak(db, few, margin=0.0, **{**common, "min_events": 100}) and "not compared" in few.reason


def test_a_bundle_altered_in_the_store_is_refused_by_the_rollout(fleet, store):
    a, b = fleet["a"], fleet["b"]
    before = deployed_model_id(b.db)
    publish(a)
    created = rollouts.create_rollout(
        a.db, a.config, RolloutCreate(name="colour", box_ids=["b"], canary_count=1, soak_s=0), a.admin
    )
    client, key = store.client(), created.document.bundle.object_key
    data = bytearray(client.get_object(Bucket=a.config.fleet_store_bucket, Key=key)["Body"].read())
    data[len(data) // 3] ^= 0x10
    client.put_object(Bucket=a.config.fleet_store_bucket, Key=key, Body=bytes(data))
    run_until({"b": Participant(b.config, b.db)}, lambda: state_of(b, created.id) == "refused")
    assert "altered" in load_row(b.db, created.id).detail and deployed_model_id(b.db) == before
    assert rollouts.read_rollout(a.db, a.config, created.id, a.admin).state == "stopped"


def test_junk_in_the_actions_folder_never_hides_a_rollback(fleet):
    """Anyone holding the store's credentials can write keys; a rollback written after 300 of them (unsigned,
    and named to sort first) is still seen, and every action is kept once per (action, box)."""
    a = fleet["a"]
    publish(a)
    created = rollouts.create_rollout(
        a.db, a.config, RolloutCreate(name="colour", box_ids=["a", "b"], canary=["b"], soak_s=0), a.admin
    )
    store = FleetStore(a.config)
    created_at = rollouts.RolloutReader(a.db, a.config).document(created.id).created_at
    for i in range(300):
        store.put_bytes(f"rollouts/{created.id}/actions/{created_at + i / 1000:017.6f}-x-{i}.json", b"{}")
        store.put_bytes(
            f"rollouts/{created.id}/actions/0000000000.{i:06d}-old.json", b"{}"
        )  # before the rollout
    for _ in range(2):
        rollouts.add_action(a.db, a.config, created.id, "rollback", a.admin)
    seen = rollouts.RolloutReader(a.db, a.config).observed(created.id)
    assert [x.action for x in seen.actions] == ["rollback"] and seen.rolled_back("b")
    assert rollouts.read_rollout(a.db, a.config, created.id, a.admin).state == "rolled_back"
