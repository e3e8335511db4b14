"""The control API over real HTTP: auth, input errors, and settings reaching the world."""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sim.formats.tokens import derive_run_key
from sim.gateways.hooks import Service, TokenState
from sim.gateways.world import GatewayWorld
from sim.scenario import load_scenario
from tests.gateways.worldkit import (
    PROJECT,
    RUN_KEY,
    SIM_T0,
    TOPIC,
    apns_token,
    control_client,
    fcm_token,
    push,
    run,
)


def run_body(**changes) -> dict:
    body = {
        "epoch": {"wall_t0": 1_700_000_000.0, "sim_t0": SIM_T0, "time_scale": 60.0},
        "run_key": RUN_KEY.hex(),
        "shard_count": 2,
        "mode": "registry",
        "topic": TOPIC,
        "project": PROJECT,
    }
    body.update(changes)
    return body


def call(world: GatewayWorld, requests: list[tuple], *, auth: bool = True) -> list:
    """Send ``(method, path, kwargs)`` requests in order; return the responses."""

    async def scenario():
        async with control_client(world, auth=auth) as client:
            return [await client.request(method, path, **kw) for method, path, kw in requests]

    return run(scenario())


def test_generated_control_token_is_hex(tmp_path):
    # A command line passes the token as an option's value, so it must never start with "-".
    tokens = [GatewayWorld(tmp_path / f"ledger-{n}.sqlite").control_token for n in range(3)]

    assert all(re.fullmatch(r"[0-9a-f]{64}", token) for token in tokens)
    assert len(set(tokens)) == 3


def test_bearer_token_required(tmp_path):
    world = GatewayWorld(tmp_path / "ledger.sqlite").start()

    anonymous = call(
        world,
        [
            ("POST", "/control/run", {"json": run_body()}),
            ("GET", "/inbox/0", {}),
            ("POST", "/control/faults", {"json": {"faults": []}}),
            ("GET", "/healthz", {}),
            ("GET", "/metrics", {}),
        ],
        auth=False,
    )
    wrong = call(
        world,
        [("POST", "/control/run", {"json": run_body(), "headers": {"Authorization": "Bearer x"}})],
        auth=False,
    )
    world.close()

    for response in anonymous[:3]:
        assert response.status_code == 401
        assert "Authorization: Bearer" in response.json()["error"]
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert anonymous[3].status_code == 200
    assert anonymous[3].json()["run_configured"] is False
    assert anonymous[4].status_code == 200
    assert wrong[0].status_code == 401
    assert world.run.config is None


def test_bad_json_is_400_with_message(tmp_path):
    world = GatewayWorld(tmp_path / "ledger.sqlite").start()
    headers = {"Content-Type": "application/json"}

    responses = call(
        world,
        [
            ("POST", "/control/run", {"content": b"{not json", "headers": headers}),
            ("POST", "/control/run", {"json": [1, 2]}),
            ("POST", "/control/invalidations", {"content": b"\xff\xfe", "headers": headers}),
            ("POST", "/control/faults", {"content": b"", "headers": headers}),
        ],
    )
    world.close()

    assert [response.status_code for response in responses] == [400, 400, 400, 400]
    assert "invalid JSON body" in responses[0].json()["error"]
    assert "invalid body of type list: send a JSON object" in responses[1].json()["error"]
    assert "invalid JSON body" in responses[2].json()["error"]


def test_bad_run_fields_named(tmp_path):
    world = GatewayWorld(tmp_path / "ledger.sqlite").start()
    cases = {
        "missing epoch": ({"run_key": RUN_KEY.hex(), "shard_count": 1}, "missing field 'epoch'"),
        "epoch key": (run_body(epoch={"wall_t0": 1}), "missing key 'sim_t0'"),
        "scale": (
            run_body(epoch={"wall_t0": 1, "sim_t0": 2, "time_scale": 0}),
            "invalid time_scale",
        ),
        "hex": (run_body(run_key="zz"), "invalid run_key: it is not hex"),
        "short key": (run_body(run_key="abcd"), "invalid run_key of 2 bytes"),
        "shards": (run_body(shard_count=0), "invalid shard_count 0"),
        "shard type": (run_body(shard_count="2"), "invalid shard_count '2': expected int"),
        "mode": (run_body(mode="closed"), "invalid mode 'closed': use one of registry, open"),
        "no key": (
            {"epoch": run_body()["epoch"], "shard_count": 1},
            "missing field 'run_key'",
        ),
    }

    responses = call(
        world, [("POST", "/control/run", {"json": body}) for body, _ in cases.values()]
    )
    world.close()

    for (name, (_, message)), response in zip(cases.items(), responses, strict=True):
        assert response.status_code == 400, name
        assert message in response.json()["error"], name
    assert world.run.config is None


def test_posted_run_reaches_registry(tmp_path):
    world = GatewayWorld(tmp_path / "ledger.sqlite").start()
    token = apns_token(21)
    wall_t0 = 1_700_000_000.0
    invalidation = {
        "token": token,
        "reason": "reinstall",
        "died_at": SIM_T0 + 600,
        "reported_at": SIM_T0 + 1200,
    }

    responses = call(
        world,
        [
            ("POST", "/control/run", {"json": run_body()}),
            ("POST", "/control/invalidations", {"json": {"invalidations": [invalidation]}}),
            ("GET", "/healthz", {}),
        ],
    )
    policy = world.token_policy(Service.APNS)
    alive = policy.check(push(token, received_at=wall_t0 + 19.0))
    dead = policy.check(push(token, received_at=wall_t0 + 21.0))
    other = world.token_policy(Service.FCM).check(
        push(fcm_token(21), service=Service.FCM, received_at=wall_t0)
    )
    world.close()

    assert [response.status_code for response in responses] == [200, 200, 200]
    assert responses[0].json()["shard_count"] == 2
    assert responses[1].json() == {"accepted": 1}
    assert responses[2].json()["run_configured"] is True
    assert world.run.config.epoch.time_scale == 60.0
    assert alive.state is TokenState.ALIVE
    assert dead.state is TokenState.DEAD
    # Died at simulated +600 s, which is wall +10 s at time_scale 60.
    assert dead.died_at_ms == round((wall_t0 + 10.0) * 1000)
    assert other.state is TokenState.ALIVE


def test_seed_derives_run_key(tmp_path):
    world = GatewayWorld(tmp_path / "ledger.sqlite").start()
    body = run_body(seed=7)
    del body["run_key"]

    (response,) = call(world, [("POST", "/control/run", {"json": body})])
    world.close()

    assert response.status_code == 200
    assert world.run.config.run_key == derive_run_key(7)


def test_invalidation_batch_all_or_nothing(tmp_path):
    world = GatewayWorld(tmp_path / "ledger.sqlite").start()
    good = {"token": apns_token(1), "reason": "rotation", "died_at": SIM_T0, "reported_at": SIM_T0}
    foreign = dict(good, token=apns_token(2, run_key=derive_run_key(3)))
    batches = {
        "reason": [good, dict(good, reason="lost")],
        "foreign": [good, foreign],
        "shape": [dict(good, token="not-a-token")],
        "time": [dict(good, died_at="yesterday")],
        "order": [dict(good, reported_at=SIM_T0 - 1)],
        "item": [good, 5],
    }

    responses = call(
        world,
        [("POST", "/control/run", {"json": run_body()})]
        + [
            ("POST", "/control/invalidations", {"json": {"invalidations": batch}})
            for batch in batches.values()
        ],
    )
    world.close()
    by_name = dict(zip(batches, responses[1:], strict=True))

    assert all(response.status_code == 400 for response in by_name.values())
    assert "invalidations[1]: invalid reason 'lost'" in by_name["reason"].json()["error"]
    assert "was not issued under this run's key" in by_name["foreign"].json()["error"]
    assert "neither an APNs nor an FCM token" in by_name["shape"].json()["error"]
    assert "invalid died_at 'yesterday'" in by_name["time"].json()["error"]
    assert "must not be before died_at" in by_name["order"].json()["error"]
    assert "invalidations[1]: invalid invalidations[1]" not in by_name["item"].json()["error"]
    assert world.registry.invalidation(apns_token(1)) is None


def test_live_faults_replace_timeline(tmp_path):
    world = GatewayWorld(tmp_path / "ledger.sqlite").start()
    now = time.time()
    epoch = {"wall_t0": now - 10.0, "sim_t0": SIM_T0, "time_scale": 60.0}
    brownout = {"kind": "brownout", "service": "apns", "start": "1m", "duration": "1h"}

    responses = call(
        world,
        [
            ("POST", "/control/run", {"json": run_body(epoch=epoch)}),
            ("POST", "/control/faults", {"json": {"faults": [brownout]}}),
            ("GET", "/control/faults", {}),
            (
                "POST",
                "/control/faults",
                {"json": {"faults": [dict(brownout, kind="brownot")], "replace": False}},
            ),
            (
                "POST",
                "/control/faults",
                {"json": {"faults": [dict(brownout, start=0)], "anchor": "now", "replace": False}},
            ),
            ("POST", "/control/faults", {"json": {"faults": [], "anchor": "later"}}),
        ],
    )
    finished = time.time()
    faults = world.timeline.faults
    action = world.fault_policy.action(push(apns_token(1), received_at=time.time()))
    world.close()

    assert [response.status_code for response in responses] == [200, 200, 200, 400, 200, 400]
    assert responses[2].json()["faults"][0]["kind"] == "brownout"
    assert "faults[0].kind: invalid value 'brownot'" in responses[3].json()["error"]
    assert "did you mean 'brownout'" in responses[3].json()["error"]
    assert "invalid anchor 'later'" in responses[5].json()["error"]
    assert len(faults) == 2
    # Anchored at now, the second fault starts at the simulated time the request arrived,
    # 60 simulated seconds per wall second after wall_t0.
    assert 600.0 <= faults[1].start <= (finished - epoch["wall_t0"]) * 60.0
    # The first brown-out ends at wall_t0 + 61 s, the second one a wall minute after it was
    # posted, so Retry-After follows the later one.
    assert action.status == 503
    assert 58 <= action.retry_after <= 60


def test_unknown_route_is_json_404(tmp_path):
    world = GatewayWorld(tmp_path / "ledger.sqlite").start()

    responses = call(world, [("GET", "/control/nothing", {}), ("DELETE", "/control/run", {})])
    world.close()

    assert responses[0].status_code == 404
    assert "Not Found on GET /control/nothing" in responses[0].json()["error"]
    assert responses[1].status_code == 405


def test_posted_throttle_applies(tmp_path):
    world = GatewayWorld(tmp_path / "ledger.sqlite").start()
    token = apns_token(8)

    responses = call(
        world,
        [
            ("POST", "/control/run", {"json": run_body(throttle={"limit": "many"})}),
            ("POST", "/control/run", {"json": run_body(throttle={"limit": 2, "window": 0})}),
            ("POST", "/control/run", {"json": run_body(throttle={"limit": 2, "window": 30})}),
        ],
    )
    policy = world.token_policy(Service.APNS)
    states = [policy.check(push(token)).state for _ in range(3)]
    world.close()

    assert [response.status_code for response in responses] == [400, 400, 200]
    assert "throttle: invalid limit 'many'" in responses[0].json()["error"]
    assert "invalid throttle limit 2 per 0.0 s" in responses[1].json()["error"]
    assert responses[2].json()["throttle"] == {"limit": 2, "window": 30.0}
    assert states == [TokenState.ALIVE, TokenState.ALIVE, TokenState.THROTTLED]


def test_run_without_throttle_gets_starting_one(tmp_path):
    world = GatewayWorld(tmp_path / "ledger.sqlite", throttle_limit=5, throttle_window=10).start()

    responses = call(
        world,
        [
            ("POST", "/control/run", {"json": run_body(throttle={"limit": 2, "window": 30})}),
            ("POST", "/control/run", {"json": run_body()}),
        ],
    )
    world.close()

    assert responses[0].json()["throttle"] == {"limit": 2, "window": 30.0}
    assert responses[1].json()["throttle"] == {"limit": 5, "window": 10.0}


def test_world_from_scenario(tmp_path):
    scenario = load_scenario(
        text="seed: 9\ngateways:\n  mode: open\n  faults:\n    - kind: brownout\n      start: 1h\n"
    ).scenario

    world = GatewayWorld.from_scenario(scenario, tmp_path / "ledger.sqlite")
    world.close()

    assert world.default_mode == "open"
    assert [fault.kind for fault in world.timeline.faults] == ["brownout"]


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(
        st.sampled_from(
            ["epoch", "run_key", "shard_count", "mode", "faults", "invalidations", "cursor",
             "wall_t0", "sim_t0", "time_scale", "token", "reason", "kind", "start", "throttle"]
        ) | st.text(max_size=8),
        children,
        max_size=6,
    ),
    max_leaves=12,
)  # fmt: skip


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bodies=st.lists(JSON_VALUES, min_size=5, max_size=5))
def test_random_json_never_crashes(tmp_path_factory, bodies):
    world = GatewayWorld(tmp_path_factory.mktemp("fuzz") / "ledger.sqlite").start()
    paths = [
        "/control/run",
        "/control/invalidations",
        "/control/faults",
        "/inbox/0/ack",
        "/control/run",
    ]
    requests = [
        ("POST", path, {"content": json.dumps(body, allow_nan=True).encode(),
                        "headers": {"Content-Type": "application/json"}})
        for path, body in zip(paths, bodies, strict=True)
    ]  # fmt: skip

    responses = call(world, requests + [("GET", "/metrics", {}), ("GET", "/inbox/0", {})])
    world.close()

    for response in responses:
        assert response.status_code in (200, 400, 404, 409), response.text
        if response.status_code != 200:
            assert response.json()["error"]


def test_out_of_range_numbers_rejected(tmp_path):
    world = GatewayWorld(tmp_path / "ledger.sqlite").start()
    headers = {"Content-Type": "application/json"}
    big = "1" + "0" * 400
    bodies = [
        ("/control/run", '{"epoch": {"wall_t0": ' + big + ', "sim_t0": 1}}'),
        ("/control/run", '{"epoch": {"wall_t0": 1e400, "sim_t0": 1}}'),
        ("/control/run", '{"epoch": {"wall_t0": NaN, "sim_t0": 1}}'),
        ("/control/invalidations", '{"invalidations": [{"died_at": ' + big + "}]}"),
    ]

    responses = call(
        world,
        [("POST", path, {"content": body.encode(), "headers": headers}) for path, body in bodies]
        + [
            ("POST", "/control/run", {"json": run_body()}),
            ("GET", f"/inbox/0?after={big}", {}),
            ("POST", "/control/run", {"json": run_body(shard_count=10**9)}),
        ],
    )
    world.close()

    assert [response.status_code for response in responses] == [400, 400, 400, 400, 200, 400, 400]
    assert "does not fit in 64 bits" in responses[0].json()["error"]
    assert "number 1e400 is out of range" in responses[1].json()["error"]
    assert "NaN is not a JSON number" in responses[2].json()["error"]
    assert "invalid after" in responses[5].json()["error"]
    assert "invalid shard_count 1000000000" in responses[6].json()["error"]


def test_metrics_text_format(tmp_path):
    world = GatewayWorld(tmp_path / "ledger.sqlite").start()
    world.metrics.connection_opened(Service.APNS)
    world.metrics.stream_started(Service.FCM)

    (response,) = call(world, [("GET", "/metrics", {})])
    world.close()
    sample = re.compile(r'^[a-z_]+(\{([a-z_]+="[^"]*",?)*\})? -?[0-9.e+-]+$')
    lines = response.text.splitlines()

    assert response.headers["Content-Type"].startswith("text/plain")
    for line in lines:
        assert line.startswith("# HELP ") or line.startswith("# TYPE ") or sample.match(line), line
    assert 'pushsim_gateway_connections{service="apns"} 1' in lines
    assert 'pushsim_gateway_streams_in_flight{service="fcm"} 1' in lines
    assert "pushsim_ledger_possible_gap_seconds 0" in lines
    assert 'pushsim_gateway_tokens{state="dead"} 0' in lines


def test_large_invalidation_batch(tmp_path):
    world = GatewayWorld(tmp_path / "ledger.sqlite").start()
    tokens = [apns_token(group) for group in range(2500)] + [
        fcm_token(group) for group in range(2500)
    ]
    batch = [
        {"token": token, "reason": "uninstall", "died_at": SIM_T0, "reported_at": SIM_T0}
        for token in tokens
    ]

    responses = call(
        world,
        [
            ("POST", "/control/run", {"json": run_body()}),
            ("POST", "/control/invalidations", {"json": {"invalidations": batch}}),
        ],
    )
    verdict = world.token_policy(Service.FCM).check(
        push(tokens[-1], service=Service.FCM, received_at=1_700_000_001.0)
    )
    counts = world.registry.counts(1_700_000_001.0)
    world.close()

    assert responses[1].json() == {"accepted": 5000}
    assert verdict.state is TokenState.DEAD
    assert counts["dead"] == 5000


def test_get_run_before_first_post_is_no_warning(tmp_path, caplog):
    world = GatewayWorld(tmp_path / "ledger.sqlite").start()

    with caplog.at_level(logging.INFO, logger="sim.gateways.control"):
        (before,) = call(world, [("GET", "/control/run", {})])
    world.close()

    assert before.status_code == 404
    warnings = [record for record in caplog.records if record.levelno >= logging.WARNING]
    assert warnings == []


def test_get_run_returns_epoch(tmp_path):
    world = GatewayWorld(tmp_path / "ledger.sqlite").start()

    before, posted, after = call(
        world,
        [
            ("GET", "/control/run", {}),
            ("POST", "/control/run", {"json": run_body()}),
            ("GET", "/control/run", {}),
        ],
    )
    world.close()

    assert before.status_code == 404
    assert "no run configured" in before.json()["error"]
    assert posted.status_code == 200
    assert after.status_code == 200
    assert after.json()["epoch"] == run_body()["epoch"]
    assert after.json()["shard_count"] == 2
    assert after.json()["posted_at"] <= time.time()
    assert after.json()["run_key_id"] == hashlib.sha256(RUN_KEY).hexdigest()[:16]
    assert RUN_KEY.hex() not in after.text
