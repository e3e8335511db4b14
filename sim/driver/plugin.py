"""pushsim inside Locust: command-line options, the run's epoch, shards, lanes and reporting.

Importing this module registers pushsim's Locust event handlers and defines ``ShopperLanes``,
the user class that ``locustfile.py`` exposes.

What ``-u`` means here: each Locust user is one device lane, a connection that sends SDK calls
for any device whose turn it is. The user count is therefore the number of SDK requests that may
be in flight at once, across all workers. The workload itself is open: the scenario, not the
user count, decides how many shoppers act and when. Too few lanes show up as schedule lag and
drops in the pushsim timing table, never as a slower population.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import gevent
from locust import User, events, task
from locust.exception import LocustError
from locust.runners import STATE_MISSING, LocalRunner, MasterRunner, WorkerRunner

from sim.commands.common import EXIT_PARTIAL
from sim.driver.checks import (
    DEFAULT_SCENARIO,
    MISSING_HOST,
    check_backend_journeys,
    host_problem,
    note_replaced_worker_options,
    pushsim_options_given,
    same_server,
)
from sim.driver.control import ControlClient, ControlError
from sim.driver.http import LaneClient, backend_url_problem
from sim.driver.live import LiveRun, RunPlan
from sim.driver.run_record import RunRecord
from sim.driver.timing import TimingTable
from sim.driver.webui import install_web_ui, print_summary, write_timing_csv
from sim.formats.epoch import Epoch
from sim.formats.gateway_config import GatewayConfig
from sim.run.preflight import same_seed_as_last_run
from sim.run.run_dir import EPOCH_FILE, STATUS_FILE, epoch_record, read_status, scenario_faults
from sim.scenario import ScenarioError, load_scenario

log = logging.getLogger(__name__)

# Lead time between announcing the epoch and its first action, in wall seconds, so that every
# worker has the plan before anything is due.
EPOCH_LEAD = 2.0
PLAN_MESSAGE = "pushsim_plan"
DONE_MESSAGE = "pushsim_done"
# Wall seconds between the master's checks for workers that went missing.
WORKER_WATCH_INTERVAL = 1.0


class DriverState:
    """State of the pushsim run in this Locust process: scenario, plan, shards and timing."""

    def __init__(self) -> None:
        self.timing = TimingTable()
        self.counters: dict[str, dict[str, int]] = {}
        self.run: LiveRun | None = None
        self.plan: RunPlan | None = None
        # A worker's plan from the master, kept until the master's options have arrived.
        self.pending_plan: RunPlan | None = None
        self.options_from_master = False
        # The scenario a worker's own pushsim options load, which the master's replace.
        self.worker_scenario = None
        self.assigned: dict[str, int] = {}
        self.done: set[str] = set()
        # Workers whose model reached its horizon, as opposed to being stopped early.
        self.completed: set[str] = set()
        # The run directory's records, written by the process that announces the epoch.
        self.record: RunRecord | None = None
        # Whether this process has started its one run: a test start after it is refused.
        self.epoch_announced = False
        self.scenario = None
        self.failure: str | None = None
        # The Locust environment of this process, for handlers that Locust does not give it to.
        self.environment = None


state = DriverState()


# Run directories that passed the check in this process.
_checked_run_dirs: set[str] = set()


def _earlier_run(run_dir: Path, record: str) -> str | None:
    """Return why ``run_dir`` cannot take a new run, or None when it contains no earlier run.

    An earlier run shows as its truth ledgers or as ``record``, one of the run's own files. The
    new run would mix its ledgers and report with that run's.
    """
    found = sorted(path.name for path in run_dir.glob("truth-*.jsonl"))
    # The status that `pushsim run` writes before it starts Locust is not final.
    provisional = record == STATUS_FILE and read_status(run_dir).get("final") is False
    if (run_dir / record).exists() and not provisional:
        found.insert(0, record)
    if not found:
        return None
    return (
        f"the run directory {run_dir} already contains a run ({', '.join(found[:3])}): give a "
        "new --run-dir, or remove that directory"
    )


def _fresh_run_dir(value: str) -> str:
    """Check, as the option is parsed, that ``--run-dir`` contains no finished or started run.

    Locust opens its --csv files before any pushsim handler runs, so a --csv prefix inside an
    earlier run's directory would empty that run's statistics before a later rejection. A run
    that pushsim run has only prepared (scenario.yaml and epoch.json, no truth ledger yet) is
    the one this Locust process is about to drive, and passes.
    """
    if not value:
        return value  # the default, a new directory named after the start time
    if value in _checked_run_dirs:
        # Locust's web UI parses the command line again to show its form, by which time this
        # process's own run has written to the directory.
        return value
    problem = _earlier_run(Path(value), STATUS_FILE)
    if problem is not None:
        raise argparse.ArgumentTypeError(problem)
    _checked_run_dirs.add(value)
    return value


@events.init_command_line_parser.add_listener
def add_arguments(parser) -> None:
    # Locust's own add_argument takes include_in_web_ui and is_secret; an argument group's
    # does not, so the options are added to the parser itself.
    parser.add_argument(
        "--scenario",
        type=str,
        env_var="PUSHSIM_SCENARIO",
        default=DEFAULT_SCENARIO,
        help=f"scenario YAML file, or the name of a bundled scenario (default: {DEFAULT_SCENARIO})",
    )
    parser.add_argument(
        "--time-scale",
        type=float,
        env_var="PUSHSIM_TIME_SCALE",
        default=None,
        help="simulated seconds per wall second; overrides the scenario's clock.time_scale",
    )
    parser.add_argument(
        "--seed",
        type=int,
        env_var="PUSHSIM_SEED",
        default=None,
        help="seed of every random stream; overrides the scenario's seed",
    )
    parser.add_argument(
        "--set",
        dest="pushsim_set",
        action="append",
        default=[],
        env_var="PUSHSIM_SET",
        include_in_web_ui=False,
        help="override one scenario value as key.path=value; repeatable",
    )
    parser.add_argument(
        "--gateways-config",
        type=str,
        env_var="PUSHSIM_GATEWAYS_CONFIG",
        default="",
        help="JSON file written by `pushsim gateways --config-out`; without it no push reaches "
        "the phones",
    )
    parser.add_argument(
        "--run-dir",
        type=_fresh_run_dir,
        env_var="PUSHSIM_RUN_DIR",
        default="",
        help="run directory for the truth ledgers and the records pushsim report reads (default: "
        "runs/locust-<start time>); on several machines, one that every worker and the master "
        "share",
    )
    parser.add_argument(
        "--backend-control",
        type=str,
        env_var="PUSHSIM_BACKEND_CONTROL",
        default="",
        help="control URL of the reference backend, which receives the run's epoch",
    )
    parser.add_argument(
        "--backend-control-token",
        type=str,
        env_var="PUSHSIM_BACKEND_CONTROL_TOKEN",
        default="",
        is_secret=True,
        help="bearer token of the reference backend's control URL",
    )
    parser.add_argument(
        "--epoch-file",
        type=str,
        env_var="PUSHSIM_EPOCH_FILE",
        default="",
        include_in_web_ui=False,
        help="JSON epoch already sent to every component (set by `pushsim run`)",
    )


def _options(environment):
    return environment.parsed_options


def _load(environment):
    options = _options(environment)
    overrides = list(getattr(options, "pushsim_set", []) or [])
    if getattr(options, "time_scale", None):
        overrides.append(f"clock.time_scale={options.time_scale}")
    if getattr(options, "seed", None) is not None:
        overrides.append(f"seed={options.seed}")
    return load_scenario(getattr(options, "scenario", None) or DEFAULT_SCENARIO, overrides).scenario


def _run_dir(environment) -> Path:
    """Return the run directory, choosing the default once so every worker gets the same one."""
    options = _options(environment)
    configured = getattr(options, "run_dir", "") or ""
    if not configured:
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        # Workers take the master's options, this one included, with the test's start.
        configured = options.run_dir = str(Path("runs") / f"locust-{stamp}")
    return Path(configured)


def _gateways(environment) -> ControlClient | None:
    path = getattr(_options(environment), "gateways_config", "") or ""
    if not path:
        return None
    config = GatewayConfig.read(path)
    return ControlClient(config.control_url, config.control_token)


@events.init.add_listener
def on_init(environment, **kwargs) -> None:
    state.environment = environment
    worker = isinstance(environment.runner, WorkerRunner)
    if worker:
        environment.runner.register_message(PLAN_MESSAGE, _on_plan)
    try:
        state.scenario = _load(environment)
    except (ScenarioError, FileNotFoundError) as error:
        if worker:
            # A worker runs with the master's options, which arrive when the test starts.
            log.info("pushsim: this worker's own options do not load (%s); it waits for the "
                     "master's", error)  # fmt: skip
            return
        _refuse_start(environment, str(error))
        return
    if worker and pushsim_options_given(_options(environment)):
        state.worker_scenario = state.scenario
    if not worker:
        try:
            _gateways(environment)
        except ValueError as error:
            _refuse_start(environment, str(error))
            return
        problem = _used_run_dir(environment)
        if problem is not None:
            _refuse_start(environment, problem)
            return
    if environment.web_ui is not None:
        install_web_ui(environment, state)
    if isinstance(environment.runner, MasterRunner):
        environment.runner.register_message(DONE_MESSAGE, _on_worker_done)


def _used_run_dir(environment) -> str | None:
    """Return why the run directory cannot take this run, or None when it can.

    A directory that contains an earlier run would mix its truth ledgers and report into this
    run's. ``pushsim run`` makes a new directory itself and passes --epoch-file.
    """
    if getattr(_options(environment), "epoch_file", ""):
        return None
    # Beyond the parse-time check: a run that stopped before its first truth ledger line.
    return _earlier_run(_run_dir(environment), EPOCH_FILE)


def _refuse_start(environment, message: str) -> None:
    """Record why pushsim cannot start, and quit Locust before any user runs."""
    log.error("pushsim cannot start: %s", message)
    state.failure = message
    environment.process_exit_code = 1
    if environment.runner is not None:
        environment.runner.quit()


def _announce_epoch(environment, shard_count: int) -> Epoch:
    """Make the run's epoch, or read the one ``pushsim run`` made, and send it to components."""
    options = _options(environment)
    epoch_file = getattr(options, "epoch_file", "") or ""
    if epoch_file:
        return Epoch.from_mapping(json.loads(Path(epoch_file).read_text())["epoch"])

    scenario = state.scenario
    epoch = Epoch(
        wall_t0=time.time() + EPOCH_LEAD,
        sim_t0=scenario.clock.start.timestamp(),
        time_scale=scenario.clock.time_scale,
    )
    record = epoch_record(epoch, scenario.seed, shard_count)
    config_path = getattr(options, "gateways_config", "") or ""
    gateways = GatewayConfig.read(config_path) if config_path else None
    run_record = RunRecord(_run_dir(environment), scenario, gateways, environment.host or "")
    if gateways is not None:
        repeated = same_seed_as_last_run(gateways, scenario.seed)
        if repeated is not None:
            log.warning("pushsim: %s", repeated)
        control = ControlClient(gateways.control_url, gateways.control_token)
        control.request("POST", "/control/run", {**record, "mode": scenario.gateways.mode})
        # Gateways started without this scenario still run an earlier run's faults, or none.
        control.request("POST", "/control/faults", scenario_faults(scenario))
    backend_url = getattr(options, "backend_control", "") or ""
    if backend_url:
        token = getattr(options, "backend_control_token", "") or ""
        # backend.json's control_url names the route itself; the option takes the base URL.
        backend_url = backend_url.rstrip("/").removesuffix("/control/epoch")
        try:
            response = ControlClient(backend_url, token).request(
                "POST", "/control/epoch", record["epoch"]
            )
        except ControlError as error:
            if error.status != 401:
                raise
            raise ControlError(
                f"{error}; pass --backend-control-token with the control_token that "
                "pushsim backend wrote to its --ready-file (backend.json)",
                error.status,
            ) from error
        check_backend_journeys(response, state.scenario)
        same = same_server(backend_url, environment.host or "")
        if not same:
            log.warning(
                "pushsim: --backend-control %s and --host %s are different servers, so the SDK "
                "calls do not go to the backend that received the epoch; the report names %s "
                "as the backend under test",
                backend_url,
                environment.host,
                environment.host,
            )
        if isinstance(response, dict) and "naive" in response and same:
            run_record.reference_backend(response["naive"])
        earlier = response.get("earlier") if isinstance(response, dict) else None
        if isinstance(earlier, dict) and earlier.get("warning"):
            log.warning("pushsim: the backend warns: %s", earlier["warning"])
    run_record.start(epoch, record)
    state.record = run_record
    return epoch


def second_start_message(environment) -> str:
    """Return why this process starts no second rehearsal, and what to do instead."""
    return (
        f"this Locust process already ran the rehearsal in {_run_dir(environment)}; restart "
        "Locust, with a new --run-dir, for another run"
    )


@events.test_start.add_listener
def on_test_start(environment, **kwargs) -> None:
    runner = environment.runner
    if isinstance(runner, WorkerRunner):
        _take_master_options(environment)
        return
    if state.failure or state.scenario is None:
        return
    if state.epoch_announced:
        # The model, its truth ledgers and the workers' shards belong to the first test, so a
        # second start from the web UI would overwrite that run's records.
        _fail(environment, second_start_message(environment))
        return
    state.epoch_announced = True
    # Checked before the epoch is announced, which uses up the run directory.
    problem = host_problem(environment.host or "")
    if problem is not None:
        _fail(environment, problem)
        return

    if isinstance(runner, MasterRunner):
        clients = sorted(runner.clients.keys())
        users = runner.target_user_count or 0
        if users < len(clients):
            # Locust would give some workers no user. A worker's users are its shard's lanes,
            # so those shards would send none of their SDK calls.
            _fail(
                environment,
                f"-u {users} is fewer users than the {len(clients)} workers, so "
                f"{len(clients) - users} worker(s) would get no user and their shoppers would "
                f"send no SDK call; start the run with -u {len(clients)} or more",
            )
            return
        try:
            epoch = _announce_epoch(environment, len(clients))
        except (ControlError, ValueError, OSError) as error:
            _fail(environment, f"cannot announce the run's epoch: {error}")
            return
        state.assigned.clear()
        state.done.clear()
        state.completed.clear()
        for index, client_id in enumerate(clients):
            plan = RunPlan(epoch, index, len(clients))
            state.assigned[client_id] = index
            runner.send_message(PLAN_MESSAGE, plan.to_message(), client_id=client_id)
        log.info("pushsim: epoch sent to %d workers", len(clients))
        gevent.spawn(_watch_workers, environment)
        return

    # A single process: a LocalRunner, or run_single_user with no runner at all.
    try:
        epoch = _announce_epoch(environment, 1)
    except (ControlError, ValueError, OSError) as error:
        _fail(environment, f"cannot announce the run's epoch: {error}")
        return
    _start_shard(environment, RunPlan(epoch, 0, 1))


def _fail(environment, message: str) -> None:
    """Record why the run cannot go on, and stop Locust with a non-zero exit code."""
    log.error("pushsim: %s", message)
    state.failure = message
    environment.process_exit_code = 1
    if environment.runner is not None:
        gevent.spawn_later(0.1, environment.runner.quit)


def _take_master_options(environment) -> None:
    """Load the scenario from the master's options, then start a plan that came before them.

    Locust copies the master's own command-line options into a worker's options with its
    spawn message, which arrives after the master's plan message and just before the worker's
    test_start. So a worker started with only ``--worker`` runs the master's scenario, seed,
    overrides, gateways config and run directory.
    """
    try:
        state.scenario = _load(environment)
    except (ScenarioError, FileNotFoundError) as error:
        state.failure = f"the worker cannot load the master's scenario: {error}"
        log.error("pushsim: %s", state.failure)
        environment.runner.send_message(DONE_MESSAGE, {"failure": state.failure})
        return
    state.options_from_master = True
    note_replaced_worker_options(state.worker_scenario, state.scenario)
    if state.pending_plan is not None and state.plan is None:
        _start_shard(environment, state.pending_plan)


def _on_plan(environment, msg, **kwargs) -> None:
    plan = RunPlan.from_message(msg.data)
    if state.plan is not None and state.plan.shard_index != plan.shard_index:
        state.failure = (
            f"this worker already runs shard {state.plan.shard_index} of {state.plan.shard_count} "
            f"and was given shard {plan.shard_index}: it reconnected mid-run, so shoppers would "
            "be duplicated or lost. Restart the whole run."
        )
        log.error("pushsim: %s", state.failure)
        environment.runner.send_message(DONE_MESSAGE, {"failure": state.failure})
        return
    if state.plan is None and state.options_from_master:
        _start_shard(environment, plan)
    elif state.plan is None:
        state.pending_plan = plan


def _start_shard(environment, plan: RunPlan) -> None:
    state.plan = plan
    run_dir = _run_dir(environment)
    state.run = LiveRun(
        state.scenario, plan, run_dir, timing=state.timing, gateways=_gateways(environment)
    )
    state.run.start()
    gevent.spawn(_watch_finish, environment)
    log.info(
        "pushsim: shard %d of %d starts at %s, truth ledger in %s",
        plan.shard_index,
        plan.shard_count,
        time.strftime("%H:%M:%S", time.localtime(plan.epoch.wall_t0)),
        run_dir,
    )


def _watch_finish(environment) -> None:
    """Stop this process's part of the run once the model reached its horizon and lanes drained."""
    run = state.run
    while run is not None and not run.finished:
        gevent.sleep(0.5)
    if run is None:
        return
    run.lanes.drain(timeout=max(5.0, state.scenario.clock.lag_budget * 4))
    run.stop()
    runner = environment.runner
    if isinstance(runner, WorkerRunner):
        runner.send_message(
            DONE_MESSAGE, {"shard": run.plan.shard_index, "completed": run.completed}
        )
    elif isinstance(runner, LocalRunner):
        _finish(environment)


def _watch_workers(environment) -> None:
    """End the run as partial once a worker whose shard has not finished goes missing.

    Locust marks a worker missing when its heartbeats stop, and a headless master would then
    wait for it forever, since only the worker's own message ends its shard.
    """
    runner = environment.runner
    while not state.failure and not state.done >= set(state.assigned):
        lost = sorted(
            client_id
            for client_id in state.assigned
            if client_id not in state.done
            and (
                client_id not in runner.clients or runner.clients[client_id].state == STATE_MISSING
            )
        )
        if lost:
            state.failure = (
                f"worker {lost[0]} stopped sending heartbeats before its shard's end, so its "
                "shoppers' SDK calls stopped there; judge what the run has with pushsim report, "
                "or restart the run"
            )
            log.error("pushsim: %s", state.failure)
            _finish(environment)
            return
        gevent.sleep(WORKER_WATCH_INTERVAL)


def _on_worker_done(environment, msg, **kwargs) -> None:
    failure = (msg.data or {}).get("failure")
    if failure:
        state.failure = failure
        environment.process_exit_code = 1
    state.done.add(msg.node_id)
    if (msg.data or {}).get("completed"):
        state.completed.add(msg.node_id)
    if failure or state.done >= set(state.assigned):
        _finish(environment)


def _finish(environment) -> None:
    runner = environment.runner
    if environment.web_ui is None or getattr(_options(environment), "headless", False):
        gevent.spawn_later(0.5, runner.quit)
    else:
        gevent.spawn_later(0.5, runner.stop)


@events.worker_connect.add_listener
def on_worker_connect(client_id, **kwargs) -> None:
    if state.assigned and client_id not in state.assigned:
        # Locust would move lanes onto the late worker, which has no shard, so the run stops
        # now rather than go on with fewer lanes and fail at its end.
        # on_init stored the master's environment before any worker could connect.
        _fail(
            state.environment,
            f"worker {client_id} connected after the shards were assigned; its shoppers would "
            "be missing or duplicated. Start every worker before the test, then restart the run.",
        )


@events.report_to_master.add_listener
def on_report_to_master(client_id, data, **kwargs) -> None:
    data["pushsim_timing"] = state.timing.to_dict()
    state.timing.reset()
    if state.run is not None:
        data["pushsim_counters"] = state.run.live_counters()


@events.worker_report.add_listener
def on_worker_report(client_id, data, **kwargs) -> None:
    state.timing.merge_dict(data.get("pushsim_timing", {}))
    if "pushsim_counters" in data:
        state.counters[client_id] = data["pushsim_counters"]


def current_counters() -> dict[str, int]:
    """Return the live counters summed over every worker, or this process's own."""
    if state.run is not None and not state.counters:
        return state.run.live_counters()
    total: dict[str, int] = {}
    for counters in state.counters.values():
        for key, value in counters.items():
            total[key] = total.get(key, 0) + value
    return total


@events.test_stop.add_listener
def on_test_stop(environment, **kwargs) -> None:
    if state.run is not None:
        state.run.stop()
    headless = getattr(_options(environment), "headless", False)
    if state.record is not None and environment.web_ui is not None and not headless:
        # Stopped from the web UI, Locust keeps running, and the run's final status and
        # delivery rows are written only when it quits.
        log.warning(
            "pushsim: the run is stopped; quit Locust (Ctrl-C) to finish %s, then judge it with "
            "pushsim report %s",
            _run_dir(environment),
            _run_dir(environment),
        )


@events.quit.add_listener
def on_quit(exit_code, **kwargs) -> None:
    # After Locust's closing statistics, so the way to the report is the last thing shown.
    if state.record is not None and state.record.closing_line:
        print(state.record.closing_line, file=sys.stderr, flush=True)


@events.quitting.add_listener
def on_quitting(environment, **kwargs) -> None:
    if isinstance(environment.runner, WorkerRunner):
        return
    print_summary(state.timing, current_counters())
    csv_prefix = getattr(_options(environment), "csv_prefix", None)
    if csv_prefix:
        write_timing_csv(state.timing, Path(f"{csv_prefix}_pushsim_timing.csv"))
    partial_reason = _partial_reason(environment)
    if state.failure:
        environment.process_exit_code = 1
    if state.record is not None:
        state.record.finish(partial_reason)

    runner = environment.runner
    if runner is not None and runner.exceptions and environment.process_exit_code is None:
        # Locust exits with --exit-code-on-error for failed requests and raised exceptions
        # alike. `pushsim run` sets it to 0, because failed requests are the backend's result.
        # An exception raised in a lane is the driver failing, so it still exits non-zero.
        raised = sum(row["count"] for row in runner.exceptions.values())
        log.error("pushsim: the lanes raised %d exception(s); see their tracebacks above", raised)
        environment.process_exit_code = getattr(_options(environment), "exit_code_on_error", 1) or 1

    if (
        partial_reason is not None
        and state.record is not None
        and not environment.process_exit_code
    ):
        # A CI job that runs Locust alone then gets an exit status that marks the run incomplete.
        environment.process_exit_code = EXIT_PARTIAL


def _partial_reason(environment) -> str | None:
    """Return why the run ended before the scenario's end, or None for a whole run."""
    if state.failure:
        return state.failure
    if isinstance(environment.runner, MasterRunner):
        stopped = len(set(state.assigned) - state.completed)
        if stopped:
            return f"{stopped} of {len(state.assigned)} worker(s) stopped before the scenario's end"
        return None
    run = state.run
    if run is None:
        return "Locust stopped before the run's first action"
    if not run.completed:
        clock = state.scenario.clock
        return (
            f"Locust stopped before the scenario's end, at simulated hour "
            f"{run.env.now / 3600:.1f} of {clock.duration / 3600:g} (plus "
            f"{clock.drain / 3600:g} h of drain)"
        )
    return None


class ShopperLanes(User):
    """One device lane: sends the next due SDK call of whichever device's turn it is."""

    abstract = False
    # Timeouts in seconds. A lane keeps its connection to --host for the whole run.
    network_timeout = 30.0
    connection_timeout = 10.0

    def __init__(self, environment) -> None:
        super().__init__(environment)
        self.client: LaneClient | None = None
        problem = MISSING_HOST if not self.host else backend_url_problem(self.host)
        if problem is not None:
            if state.failure:
                return  # the test start has stopped the run and logged why
            raise LocustError(problem)
        self.client = LaneClient(
            self.host,
            environment.events.request,
            connection_timeout=self.connection_timeout,
            network_timeout=self.network_timeout,
        )

    @task
    def serve(self) -> None:
        if self.client is None:
            raise gevent.GreenletExit("the backend URL is invalid")
        while state.run is None:
            if state.failure:
                raise gevent.GreenletExit(state.failure)
            gevent.sleep(0.1)
        run = state.run
        run.lanes.serve(self.client)
        gevent.sleep(0.5)

    def on_stop(self) -> None:
        if self.client is not None:
            self.client.close()
