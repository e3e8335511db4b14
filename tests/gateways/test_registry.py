"""The token registry as the wire servers call it: one verdict per push."""

from __future__ import annotations

import dataclasses

import pytest

from sim.formats.tokens import derive_run_key
from sim.gateways.hooks import Service, TokenState
from sim.gateways.registry import DeviceThrottle, Invalidation, TokenRegistry
from sim.gateways.run import RunState
from tests.gateways.worldkit import RUN_KEY, SIM_T0, apns_token, fcm_token, push, run_config

WALL_T0 = 1_700_000_000.0


def registry(**kwargs) -> TokenRegistry:
    return TokenRegistry(RunState(run_config(wall_t0=WALL_T0, time_scale=60.0)), **kwargs)


def test_issued_token_alive_and_unknown_rejected():
    tokens = registry()

    issued = tokens.check(push(apns_token(12), received_at=WALL_T0))
    foreign = tokens.check(push(apns_token(12, run_key=derive_run_key(8)), received_at=WALL_T0))
    android = tokens.check(push(fcm_token(12), service=Service.FCM, received_at=WALL_T0))

    assert issued.state is TokenState.ALIVE
    assert foreign.state is TokenState.UNKNOWN
    assert android.state is TokenState.ALIVE


def test_token_of_other_platform_unknown():
    tokens = registry()
    apns_on_fcm = push(apns_token(3), service=Service.FCM, received_at=WALL_T0)
    fcm_on_apns = push(fcm_token(3), service=Service.APNS, received_at=WALL_T0)

    assert tokens.check(apns_on_fcm).state is TokenState.UNKNOWN
    assert tokens.check(fcm_on_apns).state is TokenState.UNKNOWN


def test_token_of_other_apns_environment_refused():
    tokens = registry()
    store_build = apns_token(5)
    development_build = apns_token(6, environment="sandbox")

    def state(token: str, environment: str | None) -> TokenState:
        return tokens.check(push(token, received_at=WALL_T0, environment=environment)).state

    assert state(store_build, "production") is TokenState.ALIVE
    assert state(store_build, "sandbox") is TokenState.WRONG_ENVIRONMENT
    assert state(development_build, "sandbox") is TokenState.ALIVE
    assert state(development_build, "production") is TokenState.WRONG_ENVIRONMENT
    # A host that is not Apple's names no environment, so either token passes.
    assert state(store_build, None) is TokenState.ALIVE
    assert state(development_build, None) is TokenState.ALIVE


def test_service_policy_rejects_other_service():
    tokens = registry()
    policy = tokens.for_service(Service.FCM)

    assert policy.check(push(apns_token(3), received_at=WALL_T0)).state is TokenState.UNKNOWN
    fcm_push = push(fcm_token(3), service=Service.FCM, received_at=WALL_T0)
    assert policy.check(fcm_push).state is TokenState.ALIVE


def test_dead_token_alive_until_reported():
    tokens = registry()
    token = apns_token(40, 2)
    # Died one simulated hour in, reported two hours in: at time_scale 60 that is wall +60 s
    # and +120 s.
    tokens.report([Invalidation(token, "uninstall", SIM_T0 + 3600, SIM_T0 + 7200)])

    before = tokens.check(push(token, received_at=WALL_T0 + 119.9))
    after = tokens.check(push(token, received_at=WALL_T0 + 120.0))

    assert before.state is TokenState.ALIVE
    assert before.died_at_ms is None
    assert after.state is TokenState.DEAD
    assert after.died_at_ms == round((WALL_T0 + 60.0) * 1000)


def test_later_report_replaces_earlier():
    tokens = registry()
    token = fcm_token(41)
    tokens.report([Invalidation(token, "rotation", SIM_T0, SIM_T0 + 60)])
    tokens.report([Invalidation(token, "rotation", SIM_T0, SIM_T0 + 6000)])

    verdict = tokens.check(push(token, service=Service.FCM, received_at=WALL_T0 + 2))

    assert verdict.state is TokenState.ALIVE


def test_wrong_topic_and_project_rejected():
    tokens = registry()

    topic = tokens.check(push(apns_token(5), audience="com.other.app", received_at=WALL_T0))
    project = tokens.check(
        push(fcm_token(5), service=Service.FCM, audience="other-project", received_at=WALL_T0)
    )

    assert topic.state is TokenState.WRONG_AUDIENCE
    assert project.state is TokenState.WRONG_AUDIENCE


def test_too_many_pushes_throttled():
    tokens = registry(throttle_limit=3, throttle_window=10.0)
    token, other = apns_token(6), apns_token(7)

    states = [tokens.check(push(token, received_at=WALL_T0 + i * 0.1)).state for i in range(5)]
    neighbour = tokens.check(push(other, received_at=WALL_T0 + 0.5))
    much_later = tokens.check(push(token, received_at=WALL_T0 + 25.0))

    assert states[:3] == [TokenState.ALIVE] * 3
    assert states[3:] == [TokenState.THROTTLED] * 2
    assert neighbour.state is TokenState.ALIVE
    assert much_later.state is TokenState.ALIVE


def test_throttle_window_slides():
    throttle = DeviceThrottle(limit=10, window=10.0)
    for i in range(10):
        assert not throttle.over_limit("t", 5.0 + i * 0.1)

    # At 15 s half of the previous window still counts: about 5 of the 10 pushes.
    assert throttle.over_limit("t", 9.9)
    allowed = sum(not throttle.over_limit("t", 15.0) for _ in range(10))

    assert allowed == 5


def test_throttle_late_push_counts_now():
    throttle = DeviceThrottle(limit=2, window=10.0)

    assert not throttle.over_limit("t", 25.0)
    assert not throttle.over_limit("t", 19.9)
    assert throttle.over_limit("t", 25.1)


def test_throttle_memory_bounded():
    throttle = DeviceThrottle(limit=5, window=1.0, max_tokens=1000)

    for i in range(20_000):
        throttle.over_limit(f"token-{i}", 100.0)

    assert throttle.active() <= 1000


def test_throttle_forgets_idle_tokens():
    throttle = DeviceThrottle(limit=5, window=1.0)
    for i in range(500):
        throttle.over_limit(f"token-{i}", 100.0)

    throttle.over_limit("late", 103.0)

    assert throttle.active() == 1


def test_open_mode_accepts_any_well_formed_token():
    config = dataclasses.replace(run_config(wall_t0=WALL_T0), mode="open")
    tokens = TokenRegistry(RunState(config))
    foreign = apns_token(1, run_key=derive_run_key(99))

    assert tokens.check(push(foreign, received_at=WALL_T0)).state is TokenState.ALIVE
    assert tokens.check(push("ab" * 32, received_at=WALL_T0)).state is TokenState.ALIVE


def test_open_mode_works_without_run():
    tokens = TokenRegistry(RunState(), default_mode="open", default_topic="com.example.shop")

    assert tokens.check(push(apns_token(1))).state is TokenState.ALIVE
    assert tokens.check(push(apns_token(1), audience="x")).state is TokenState.WRONG_AUDIENCE


def test_open_mode_reports_invalidated_token_dead():
    # A team's own test token, invalidated through the control API: 410 from reported_at on.
    token = "cd" * 32
    posted = dataclasses.replace(run_config(wall_t0=WALL_T0, time_scale=60.0), mode="open")
    with_run = TokenRegistry(RunState(posted))
    without_run = TokenRegistry(RunState(), default_mode="open")
    with_run.report([Invalidation(token, "uninstall", SIM_T0 + 3600, SIM_T0 + 7200)])
    # With no run posted, simulated Unix time is wall Unix time.
    without_run.report([Invalidation(token, "uninstall", WALL_T0 - 60, WALL_T0 - 30)])

    before = with_run.check(push(token, received_at=WALL_T0 + 119.9))
    after = with_run.check(push(token, received_at=WALL_T0 + 120.0))
    unposted = without_run.check(push(token, received_at=WALL_T0))

    assert before.state is TokenState.ALIVE
    assert after.state is TokenState.DEAD
    assert after.died_at_ms == round((WALL_T0 + 60.0) * 1000)
    assert unposted.state is TokenState.DEAD
    assert unposted.died_at_ms == round((WALL_T0 - 60) * 1000)


def test_unconfigured_run_returns_unknown():
    tokens = TokenRegistry(RunState())

    assert tokens.check(push(apns_token(1))).state is TokenState.UNKNOWN


def test_run_key_comes_from_run_state():
    state = RunState(run_config(wall_t0=WALL_T0))
    tokens = TokenRegistry(state)
    token = apns_token(9)
    assert tokens.check(push(token, received_at=WALL_T0)).state is TokenState.ALIVE

    state.set(dataclasses.replace(state.config, run_key=derive_run_key(1234)))

    assert tokens.check(push(token, received_at=WALL_T0)).state is TokenState.UNKNOWN
    assert RUN_KEY != derive_run_key(1234)


def test_repeated_report_counted_once():
    tokens = registry()
    invalidation = Invalidation(apns_token(1), "uninstall", SIM_T0, SIM_T0 + 60)
    tokens.report([invalidation])
    tokens.report([invalidation])

    counts = tokens.counts(WALL_T0 + 20.0)

    assert counts["dead"] == 1
    assert counts["dying"] == 0


def test_counts_dead_and_dying():
    tokens = registry()
    tokens.report(
        [
            Invalidation(apns_token(1), "rotation", SIM_T0, SIM_T0 + 60),
            Invalidation(apns_token(2), "reinstall", SIM_T0, SIM_T0 + 600),
            Invalidation(apns_token(3), "restore", SIM_T0, SIM_T0 + 6000),
        ]
    )

    # Wall +20 s is simulated +1200 s.
    counts = tokens.counts(WALL_T0 + 20.0)

    assert counts["dead"] == 2
    assert counts["dying"] == 1


@pytest.mark.parametrize(
    ("reason", "died_at", "reported_at", "message"),
    [
        ("stolen", SIM_T0, SIM_T0, "invalid reason 'stolen'"),
        ("rotation", SIM_T0 + 10, SIM_T0, "must not be before died_at"),
        ("rotation", float("nan"), SIM_T0, "invalid died_at"),
    ],
)
def test_invalidation_rejects_bad_values(reason, died_at, reported_at, message):
    with pytest.raises(ValueError, match=message):
        Invalidation(apns_token(1), reason, died_at, reported_at)
