"""The fault timeline: each fault kind acts at its simulated time, and shows in the ledger and
in /metrics."""

from __future__ import annotations

import asyncio
import math
import statistics
import time

import httpx
import pytest
from aiohttp import web

from sim.formats.delivery import read_rows
from sim.gateways.faults import (
    NO_DIRECTIVES,
    FaultTimeline,
    SlidingWindowCounter,
    resolve_reason,
)
from sim.gateways.hooks import NO_FAULT, Outcome, Service
from sim.gateways.run import RunState
from sim.gateways.world import GatewayWorld
from sim.scenario.schema import Fault, LogNormal
from tests.gateways.worldkit import (
    answer,
    apns_token,
    control_client,
    fcm_token,
    push,
    run,
    run_config,
)

# At time_scale 600 one simulated hour is 6 wall seconds. Every fault below runs from simulated
# hour 1 to hour 3, which is wall +6 s to +18 s after the epoch's wall_t0.
SCALE = 600.0
HOUR = 3600.0
WALL_T0 = 1_700_000_003.7  # deliberately not on a minute boundary
START, END = WALL_T0 + 6.0, WALL_T0 + 18.0


def window(kind: str, **fields) -> Fault:
    return Fault(kind=kind, start=HOUR, duration=2 * HOUR, **fields)


def timeline(*faults: Fault, seed: int = 5, wall_t0: float = WALL_T0) -> FaultTimeline:
    state = RunState(run_config(wall_t0=wall_t0, time_scale=SCALE))
    return FaultTimeline(state, faults, seed=seed)


def test_latency_added_inside_window_only():
    faults = timeline(window("latency", latency=LogNormal(median=0.05, sigma=0.5)))

    before = faults.action(push(apns_token(1), received_at=START - 0.01))
    inside = [
        faults.action(push(apns_token(1), received_at=START + i * 0.005)) for i in range(2000)
    ]
    after = faults.action(push(apns_token(1), received_at=END))

    assert before is NO_FAULT
    assert after is NO_FAULT
    assert all(action.status is None for action in inside)
    assert all(action.fault == "latency" for action in inside)
    assert statistics.median(action.delay for action in inside) == pytest.approx(0.05, rel=0.1)


def test_errors_hit_their_share_with_service_reason():
    faults = timeline(window("errors", rate=0.3, reason="InternalServerError"))

    apns = [faults.action(push(apns_token(1), received_at=START + 1)) for _ in range(2000)]
    fcm = [
        faults.action(push(fcm_token(1), service=Service.FCM, received_at=START + 1))
        for _ in range(2000)
    ]
    outside = faults.action(push(apns_token(1), received_at=START - 1))

    apns_rejected = [action for action in apns if action.status is not None]
    fcm_rejected = [action for action in fcm if action.status is not None]
    assert 500 <= len(apns_rejected) <= 700
    assert 500 <= len(fcm_rejected) <= 700
    assert {(a.status, a.reason, a.fault) for a in apns_rejected} == {
        (500, "InternalServerError", "errors")
    }
    assert {(a.status, a.reason) for a in fcm_rejected} == {(500, "INTERNAL")}
    assert outside is NO_FAULT


def test_brownout_retry_after_is_time_left():
    faults = timeline(window("brownout"))

    early = faults.action(push(apns_token(1), received_at=START + 0.5))
    late = faults.action(push(fcm_token(1), service=Service.FCM, received_at=END - 0.2))
    after = faults.action(push(apns_token(1), received_at=END + 0.01))

    assert (early.status, early.reason, early.fault) == (503, "ServiceUnavailable", "brownout")
    assert early.retry_after == math.ceil(END - (START + 0.5)) == 12
    assert (late.status, late.reason) == (503, "UNAVAILABLE")
    assert late.retry_after == 1
    assert after is NO_FAULT


def test_quota_rolling_minute_from_fault_start():
    faults = timeline(Fault(service="fcm", kind="quota", start=HOUR, duration=20 * HOUR, limit=5))

    def send(at: float):
        return faults.action(push(fcm_token(2), service=Service.FCM, received_at=at))

    first_minute = [send(START + 50 + i * 0.1) for i in range(7)]
    # 61 s after the start, 59/60 of the first window's 5 pushes still count, so one more push
    # fits. A minute aligned to the clock would have admitted five.
    next_minute = [send(START + 61) for _ in range(5)]
    apns = faults.action(push(apns_token(2), received_at=START + 50))

    assert [action.status for action in first_minute] == [None] * 5 + [429, 429]
    assert first_minute[5].reason == "QUOTA_EXCEEDED"
    assert 1 <= first_minute[5].retry_after <= 60
    assert [action.status for action in next_minute] == [None, 429, 429, 429, 429]
    assert apns is NO_FAULT


def test_sliding_counter_not_aligned_to_clock():
    counter = SlidingWindowCounter(60.0, origin=13.0)
    for _ in range(10):
        counter.estimate(70.0)
        counter.add()

    assert counter.estimate(72.0) == pytest.approx(10.0)
    assert counter.estimate(103.0) == pytest.approx(5.0)
    assert counter.estimate(200.0) == 0.0


def test_goaway_and_stream_limit_directives():
    faults = timeline(
        window("goaway", service="apns", rate=2.0),
        window("stream_limit", limit=50),
        Fault(kind="stream_limit", start=1.5 * HOUR, duration=HOUR, limit=10),
    )

    quiet = faults.connection_directives(Service.APNS, START - 1)
    apns = faults.connection_directives(Service.APNS, START + 1)
    overlap = faults.connection_directives(Service.APNS, START + 4)
    fcm = faults.connection_directives(Service.FCM, START + 1)
    draws = sum(faults.goaway_due(Service.APNS, START + 1, 0.1) for _ in range(4000))

    assert quiet is NO_DIRECTIVES
    assert (apns.goaway_rate, apns.max_streams) == (2.0, 50)
    assert overlap.max_streams == 10
    assert (fcm.goaway_rate, fcm.max_streams) == (0.0, 50)
    # P(GOAWAY in 0.1 s at 2/s) = 1 - exp(-0.2), about 0.181, so about 725 of 4000.
    assert 625 <= draws <= 825
    assert not faults.goaway_due(Service.FCM, START + 1, 0.1)


def test_same_seed_same_faults():
    def actions(seed: int) -> list:
        faults = timeline(window("errors", rate=0.5, reason="503"), window("latency"), seed=seed)
        return [faults.action(push(apns_token(1), received_at=START + 1)) for _ in range(200)]

    assert actions(11) == actions(11)
    assert actions(11) != actions(12)


def test_faults_follow_a_new_epoch():
    state = RunState(run_config(wall_t0=WALL_T0, time_scale=SCALE))
    faults = FaultTimeline(state, [window("brownout")])
    state.set(run_config(wall_t0=WALL_T0 + 100, time_scale=SCALE))

    assert faults.action(push(apns_token(1), received_at=START + 1)) is NO_FAULT
    assert faults.action(push(apns_token(1), received_at=START + 101)).status == 503


@pytest.mark.parametrize(
    ("service", "reason", "expected"),
    [
        (Service.APNS, "TooManyRequests", (429, "TooManyRequests")),
        (Service.FCM, "ServiceUnavailable", (503, "UNAVAILABLE")),
        (Service.APNS, "UNAVAILABLE", (503, "ServiceUnavailable")),
        (Service.APNS, "500", (500, "InternalServerError")),
        (Service.FCM, "QUOTA_EXCEEDED", (429, "QUOTA_EXCEEDED")),
    ],
)
def test_reason_resolves_per_service(service, reason, expected):
    assert resolve_reason(service, reason) == expected


def test_unknown_reason_names_allowed_values():
    with pytest.raises(ValueError, match="invalid reason 'Teapot' for apns: use one of"):
        resolve_reason(Service.APNS, "Teapot")
    with pytest.raises(ValueError, match=r"faults\[0\]"):
        timeline(window("errors", rate=0.1, reason="Teapot"))


def test_each_fault_in_ledger_and_metrics(tmp_path):
    # The epoch puts "now" at simulated hour 1.5, inside every window, so /metrics, which reads
    # the wall clock, sees the connection faults active.
    wall_t0 = time.time() - 9.0
    start, end = wall_t0 + 6.0, wall_t0 + 18.0
    world = GatewayWorld(
        tmp_path / "ledger.sqlite",
        faults=[
            window("latency", service="apns", latency=LogNormal(median=0.02, sigma=0.1)),
            window("errors", service="apns", rate=1.0, reason="TooManyRequests"),
            window("brownout", service="fcm"),
            window("goaway", rate=0.5),
            window("stream_limit", limit=7),
        ],
        flush_interval=0.05,
    ).start()
    world.configure_run(run_config(wall_t0=wall_t0, time_scale=SCALE))
    quota_world = GatewayWorld(
        tmp_path / "quota.sqlite",
        faults=[Fault(service="fcm", kind="quota", start=HOUR, duration=2 * HOUR, limit=1)],
    ).start()
    quota_world.configure_run(run_config(wall_t0=wall_t0, time_scale=SCALE))

    before = answer(world, push(apns_token(1), received_at=start - 1))
    errors = answer(world, push(apns_token(1), received_at=start + 1))
    brownout = answer(world, push(fcm_token(1), service=Service.FCM, received_at=start + 2.5))
    after = answer(world, push(apns_token(1), received_at=end + 1))
    quota = [
        answer(quota_world, push(fcm_token(1), service=Service.FCM, received_at=start + 1))
        for _ in range(2)
    ]

    async def scrape(target: GatewayWorld) -> str:
        async with control_client(target) as client:
            response = await client.get("/metrics")
            assert response.status_code == 200
            return response.text

    metrics = run(scrape(world))
    quota_metrics = run(scrape(quota_world))
    world.close()
    quota_world.close()
    rows = list(read_rows(str(tmp_path / "ledger.sqlite")))
    quota_rows = list(read_rows(str(tmp_path / "quota.sqlite")))

    assert before.status == 200
    assert before.added_latency == 0.0
    assert (errors.status, errors.reason) == (429, "TooManyRequests")
    assert errors.added_latency == pytest.approx(0.02, rel=0.5)
    assert (brownout.status, brownout.retry_after) == (503, 10)
    assert after.status == 200
    assert [outcome.status for outcome in quota] == [200, 429]

    assert [(row.status, row.reason, row.fault) for row in rows] == [
        (200, None, None),
        (429, "TooManyRequests", "errors"),
        (503, "UNAVAILABLE", "brownout"),
        (200, None, None),
    ]
    assert rows[1].added_latency > 0
    assert rows[2].retry_after == 10
    assert rows[2].sim_time == pytest.approx(run_sim(wall_t0, start + 2.5))
    assert [(row.status, row.fault) for row in quota_rows] == [(200, None), (429, "quota")]

    assert (
        'pushsim_gateway_requests_total{service="apns",status="429",reason="TooManyRequests"} 1'
        in metrics
    )
    assert (
        'pushsim_gateway_requests_total{service="fcm",status="503",reason="UNAVAILABLE"} 1'
        in metrics
    )
    assert 'pushsim_gateway_faults_applied_total{service="apns",kind="errors"} 1' in metrics
    assert 'pushsim_gateway_faults_applied_total{service="fcm",kind="brownout"} 1' in metrics
    assert 'pushsim_gateway_added_latency_seconds_count{service="apns"} 1' in metrics
    assert 'pushsim_gateway_fault_active{service="apns",kind="latency"} 1' in metrics
    assert 'pushsim_gateway_goaway_rate{service="fcm"} 0.5' in metrics
    assert 'pushsim_gateway_max_streams{service="apns"} 7' in metrics
    assert 'pushsim_gateway_faults_applied_total{service="fcm",kind="quota"} 1' in quota_metrics
    assert (
        'pushsim_gateway_requests_total{service="fcm",status="429",reason="QUOTA_EXCEEDED"} 1'
        in quota_metrics
    )


def run_sim(wall_t0: float, wall: float) -> float:
    return run_config(wall_t0=wall_t0, time_scale=SCALE).epoch.sim_at(wall)


def test_latency_awaited_without_blocking(tmp_path):
    # A minimal server that calls the seams as a wire server does: concurrent pushes with 0.2 s
    # of added latency each must finish together, not one after another.
    world = GatewayWorld(
        tmp_path / "ledger.sqlite",
        faults=[Fault(kind="latency", start=0, duration=HOUR, latency=LogNormal(0.2, 0.0))],
    ).start()
    world.configure_run(run_config(wall_t0=time.time() - 1, time_scale=SCALE))

    async def handle(request: web.Request) -> web.Response:
        token = request.match_info["token"]
        pushed = push(token, received_at=time.time())
        action = world.fault_policy.action(pushed)
        await asyncio.sleep(action.delay)
        outcome = Outcome(200, delivery_id=f"d-{token[:8]}-{pushed.received_at}",
                          added_latency=action.delay, fault=action.fault)  # fmt: skip
        world.sink.record(pushed, outcome)
        return web.json_response({})

    async def scenario() -> float:
        app = web.Application()
        app.router.add_post("/3/device/{token}", handle)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                started = time.monotonic()
                await asyncio.gather(
                    *(client.post(f"/3/device/{apns_token(group)}") for group in range(20))
                )
                return time.monotonic() - started
        finally:
            await runner.cleanup()

    elapsed = run(scenario())
    world.close()
    rows = list(read_rows(str(tmp_path / "ledger.sqlite")))

    assert 0.2 <= elapsed < 2.0
    assert len(rows) == 20
    assert all(row.added_latency == pytest.approx(0.2) for row in rows)
    assert all(row.fault == "latency" for row in rows)
