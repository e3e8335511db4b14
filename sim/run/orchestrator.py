"""The whole rehearsal in one call: components up, epoch out, Locust, drain, verdicts, report.

Each component runs as its own process on loopback. The run directory collects everything an
analyst needs afterwards: the resolved scenario, the epoch, the seed and plan hash, every
component's log, Locust's CSV and HTML, both ledgers, and the report.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from sim.commands.common import EXIT_PARTIAL
from sim.driver.control import ControlClient
from sim.formats.epoch import Epoch
from sim.formats.gateway_config import GatewayConfig
from sim.run.components import (
    STOP_GRACE,
    Component,
    ComponentError,
    ComponentGroup,
    answers_ok,
)
from sim.run.instructions import target_instructions
from sim.run.preflight import read_running_gateways, same_seed_as_last_run
from sim.run.progress import (
    LedgerTail,
    accepted_pushes,
    behind_warning,
    progress_line,
    rejection_warning,
)
from sim.run.run_dir import (
    epoch_record,
    read_epoch,
    scenario_faults,
    write_epoch,
    write_scenario,
    write_status,
)
from sim.scenario import LoadedScenario
from sim.scenario.types import format_duration

log = logging.getLogger(__name__)

# Wall seconds between announcing the epoch and its first action, so every worker is ready.
EPOCH_LEAD = 3.0
# Wall seconds Locust may run past the scenario's end and drain before it is interrupted.
END_SLACK = 60.0
PROGRESS_EVERY = 5.0
# Failed health checks in a row, one per progress line, after which gateways that pushsim run
# did not start count as stopped. Two tolerate one slow response on a busy machine.
SHARED_GATEWAYS_MISSES = 2

EXIT_PASSED = 0
EXIT_GATE_FAILED = 1


@dataclass
class RunOptions:
    """Options of one ``pushsim run``."""

    out: Path
    target: str | None = None
    # Config file of gateways started with `pushsim gateways`; None starts the run's own.
    gateways_config: Path | None = None
    processes: int = 1
    users: int = 0
    backend_naive: list[str] = field(default_factory=list)
    quiet: bool = False


class Interrupted(BaseException):
    """The run received SIGTERM or Ctrl-C.

    It derives from BaseException, as KeyboardInterrupt does, so that no ``except Exception``
    on the way up swallows it.
    """


def _python() -> list[str]:
    return [sys.executable, "-m", "sim.cli"]


def _wait_for_file(component: Component, path: Path, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not component.alive():
            raise ComponentError(
                f"{component.name} exited with status {component.exit_code()} while starting; "
                f"see {component.log_path}:\n{component.log_tail()}"
            )
        if path.exists():
            try:
                return json.loads(path.read_text())
            except json.JSONDecodeError:
                pass  # still being written
        time.sleep(0.1)
    raise ComponentError(
        f"{component.name} did not write {path} within {timeout:g} s; see {component.log_path}"
    )


class Rehearsal:
    """One run of ``pushsim run``."""

    def __init__(self, loaded: LoadedScenario, options: RunOptions) -> None:
        self.loaded = loaded
        self.scenario = loaded.scenario
        self.options = options
        self.run_dir = options.out
        self.logs = self.run_dir / "logs"
        self.group = ComponentGroup()
        self.partial_reason: str | None = None
        self.stop_notice_printed = False
        self.backend_url = options.target
        self.backend_control: ControlClient | None = None
        self.gateways: GatewayConfig | None = None

    def say(self, message: str) -> None:
        if not self.options.quiet:
            print(message, flush=True)

    # Preparation.

    def prepare(self) -> None:
        from sim.model.plan import run_plan

        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(exist_ok=True)
        write_scenario(self.run_dir, self.scenario)
        # Until finish() replaces it, this status marks the run partial, so a pushsim run that
        # is killed or crashes leaves a run that reads as partial, not as complete.
        write_status(
            self.run_dir,
            "no final status: pushsim run is still running or was killed",
            backend=self.options.target or "reference",
            naive=self.options.backend_naive,
            final=False,
        )

        started = time.monotonic()
        plan = run_plan(self.scenario)
        plan_info = {
            "seed": self.scenario.seed,
            "plan_hash": plan.summary.get("plan_hash"),
            "seconds": round(time.monotonic() - started, 2),
        }
        (self.run_dir / "plan.json").write_text(json.dumps(plan_info, indent=2))
        (self.run_dir / "plan-summary.json").write_text(json.dumps(plan.summary, indent=2))
        self.say(f"plan hash {plan_info['plan_hash']} (seed {self.scenario.seed})")
        calls = plan.summary.get("sdk_calls", {}).get("total", 0)
        wall = self.scenario.clock.duration / self.scenario.clock.time_scale
        # The load to expect: the install profile and spikes make the busiest seconds higher.
        self.say(
            f"plan: {calls:,} SDK calls over {wall:,.0f} wall seconds, {calls / wall:,.0f}/s "
            "on average"
        )

    # Components.

    def start_gateways(self) -> None:
        if self.options.gateways_config is not None:
            self.use_running_gateways(self.options.gateways_config)
            return
        ready = self.run_dir / "gateways.json"
        ready.unlink(missing_ok=True)
        component = Component(
            "gateways",
            [*_python(), "gateways", "--dir", str(self.run_dir / "gateways"),
             "--scenario", str(self.run_dir / "scenario.yaml"), "--ready-file", str(ready)],
            self.logs / "gateways.log",
        )  # fmt: skip
        self.group.components.append(component)
        component.start()
        _wait_for_file(component, ready, timeout=60)
        self.gateways = GatewayConfig.read(ready)
        component.health_url = f"{self.gateways.control_url}/healthz"
        component.wait_healthy()
        self.say(f"gateways ready: control {self.gateways.control_url}")

    def use_running_gateways(self, path: Path) -> None:
        """Check the health of the gateways of ``path`` and copy their config into the run."""
        config, problem = read_running_gateways(path)
        if problem is not None:
            raise ComponentError(problem)
        warning = same_seed_as_last_run(config, self.scenario.seed)
        if warning is not None:
            print(f"warning: {warning}", file=sys.stderr, flush=True)
        copy = self.run_dir / "gateways.json"
        shutil.copyfile(path, copy)
        copy.chmod(0o600)  # it contains the control token
        self.gateways = config
        self.say(f"gateways: the running gateways of {path} (control {config.control_url})")

    def start_backend(self) -> None:
        if self.options.target:
            return
        ready = self.run_dir / "backend.json"
        ready.unlink(missing_ok=True)
        command = [
            *_python(), "backend",
            "--scenario", str(self.run_dir / "scenario.yaml"),
            "--gateways-config", str(self.run_dir / "gateways.json"),
            "--db", str(self.run_dir / "backend.sqlite"),
            "--ready-file", str(ready),
        ]  # fmt: skip
        for switch in self.options.backend_naive:
            command.append("--" + switch.replace("_", "-"))
        component = Component("backend", command, self.logs / "backend.log")
        self.group.components.append(component)
        component.start()
        info = _wait_for_file(component, ready, timeout=60)
        self.backend_url = info["url"]
        component.health_url = f"{self.backend_url}/healthz"
        component.wait_healthy()
        self.backend_control = ControlClient(self.backend_url, info["control_token"])
        self.say(f"backend ready: {self.backend_url}")

    def announce_epoch(self) -> Epoch:
        scenario = self.scenario
        epoch = Epoch(
            wall_t0=time.time() + EPOCH_LEAD,
            sim_t0=scenario.clock.start.timestamp(),
            time_scale=scenario.clock.time_scale,
        )
        record = epoch_record(epoch, scenario.seed, max(1, self.options.processes))
        write_epoch(self.run_dir, record)

        gateways = ControlClient(self.gateways.control_url, self.gateways.control_token)
        gateways.request(
            "POST",
            "/control/run",
            {**record, "mode": scenario.gateways.mode},
        )
        if self.options.gateways_config is not None:
            gateways.request("POST", "/control/faults", scenario_faults(scenario))
        if self.backend_control is not None:
            self.backend_control.request("POST", "/control/epoch", record["epoch"])
        return epoch

    def locust_command(self) -> list[str]:
        import sim.driver

        locustfile = Path(sim.driver.__file__).parent / "locustfile.py"
        users = self.options.users or max(32, 32 * max(1, self.options.processes))
        command = [
            sys.executable, "-m", "locust", "-f", str(locustfile), "--headless",
            "-u", str(users), "-r", str(users), "--host", self.backend_url,
            "--scenario", str(self.run_dir / "scenario.yaml"),
            "--gateways-config", str(self.run_dir / "gateways.json"),
            "--run-dir", str(self.run_dir),
            "--epoch-file", str(self.run_dir / "epoch.json"),
            "--csv", str(self.run_dir / "locust"), "--csv-full-history",
            "--html", str(self.run_dir / "locust.html"),
            "--only-summary", "--loglevel", "INFO",
            # Locust exits 1 when any request failed. Failed SDK requests are the backend's
            # result, judged by the sdk_error_rate gate, so a non-zero exit means Locust failed.
            "--exit-code-on-error", "0",
        ]  # fmt: skip
        if self.options.processes > 1:
            command += ["--processes", str(self.options.processes)]
        return command

    def run_locust(self, epoch: Epoch) -> int | None:
        component = Component("locust", self.locust_command(), self.logs / "locust.log")
        self.group.components.append(component)
        component.start()

        run_start = self.scenario.clock.start.timestamp()
        sim_end = self.scenario.clock.duration + self.scenario.clock.drain
        deadline = epoch.wall_at(run_start + sim_end) + END_SLACK
        tail = LedgerTail(self.run_dir)
        metrics_url = f"{self.gateways.control_url}/metrics"
        # Gateways of --gateways-config count the accepted pushes of earlier runs too.
        pushes_before = accepted_pushes(metrics_url) or 0
        next_progress = time.time() + PROGRESS_EVERY
        health_misses = 0
        rejection_warned = behind_warned = False

        while component.alive():
            crashed = [c for c in self.group.crashed() if c is not component]
            if crashed:
                names = ", ".join(f"{c.name} (log {c.log_path})" for c in crashed)
                self.partial_reason = f"a component exited during the run: {names}"
                component.stop(sig=signal.SIGINT)
                break
            if time.time() > deadline:
                self.partial_reason = (
                    f"Locust ran {END_SLACK:g} s past the scenario's end and was interrupted"
                )
                component.stop(sig=signal.SIGINT)
                break
            if time.time() >= next_progress:
                health_misses = 0 if self.shared_gateways_healthy() else health_misses + 1
                if health_misses >= SHARED_GATEWAYS_MISSES:
                    self.partial_reason = (
                        f"the gateways of {self.options.gateways_config} stopped responding at "
                        f"{self.gateways.control_url}/healthz; see their own log"
                    )
                    component.stop(sig=signal.SIGINT)
                    break
                self.say(
                    progress_line(
                        epoch,
                        run_start,
                        sim_end,
                        self.run_dir,
                        tail,
                        metrics_url,
                        pushes_before=pushes_before,
                    )  # fmt: skip
                )
                if not rejection_warned:
                    warning = rejection_warning(self.run_dir)
                    if warning is not None:
                        print(f"warning: {warning}", file=sys.stderr, flush=True)
                        rejection_warned = True
                if not behind_warned:
                    warning = behind_warning(tail, self.run_dir)
                    if warning is not None:
                        print(f"warning: {warning}", file=sys.stderr, flush=True)
                        behind_warned = True
                next_progress += PROGRESS_EVERY
            time.sleep(0.2)
        code = component.exit_code()
        if code not in (0, None) and self.partial_reason is None:
            self.partial_reason = f"Locust exited with status {code}; see {component.log_path}"
        return code

    # The whole run.

    def execute(self) -> int:
        # The first Ctrl-C or SIGTERM interrupts the run. A second one, as from an impatient
        # double Ctrl-C, must not cut short the stop and status that follow: it lands before
        # stop_components takes over, and would leave the components running.
        interrupted = False

        def interrupt(signum, frame):
            nonlocal interrupted
            if interrupted:
                self.print_stop_notice()
                return
            interrupted = True
            raise Interrupted()

        previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            self.prepare()
            self.start_gateways()
            self.start_backend()
            if self.options.target:
                self.say(
                    target_instructions(
                        self.scenario, self.gateways, self.options.target,
                        self.options.gateways_config or self.run_dir / "gateways.json",
                        shared=self.options.gateways_config is not None,
                    )
                )  # fmt: skip
            epoch = self.announce_epoch()
            self.say(
                f"running {self.scenario.name}: {format_duration(self.scenario.clock.duration)} "
                f"of simulated time at time scale {self.scenario.clock.time_scale:g}"
            )
            self.run_locust(epoch)
        except (KeyboardInterrupt, Interrupted):
            self.partial_reason = "interrupted by the user"
            self.say("\ninterrupted: stopping every component and writing a partial report")
        except ComponentError as error:
            self.partial_reason = str(error).splitlines()[0]
            print(f"pushsim: {error}", file=sys.stderr)
        except Exception as error:  # any failure still ends with a partial report
            log.exception("the run failed")
            self.partial_reason = f"the run failed: {error}"
            print(f"pushsim: the run failed: {error}", file=sys.stderr)
        finally:
            self.stop_components()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return self.finish()

    def stop_components(self) -> None:
        """Stop every component, and let a repeated Ctrl-C or SIGTERM not cut that short.

        An interrupt raised inside the stop would leave the components running and no
        run-status.json, so the run would later read as complete.
        """

        def patience(signum, frame) -> None:
            self.print_stop_notice()

        previous = {sig: signal.signal(sig, patience) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            self.group.stop_all()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def print_stop_notice(self) -> None:
        """Print, once, that the run is still stopping, in reply to a repeated Ctrl-C or SIGTERM."""
        if self.stop_notice_printed:
            return
        self.stop_notice_printed = True
        print(
            f"pushsim: still stopping the components (up to {STOP_GRACE:g} s each); "
            "the partial report follows",
            file=sys.stderr,
            flush=True,
        )

    def shared_gateways_healthy(self) -> bool:
        """Check the health of gateways of --gateways-config; True for the run's own gateways.

        The run's own gateways are a component, so their exit is noticed as a crash.
        """
        if self.options.gateways_config is None:
            return True
        return answers_ok(f"{self.gateways.control_url}/healthz")

    def copy_run_ledger(self) -> None:
        """Copy this run's rows from the running gateways' ledger into the run directory."""
        from sim.run.run_ledger import copy_run_ledger

        ledger = Path(self.gateways.ledger)
        # Stopped gateways commit nothing more, so waiting for their writer is pointless.
        count, warning = copy_run_ledger(
            ledger, self.run_dir, read_epoch(self.run_dir), wait=self.shared_gateways_healthy()
        )
        if warning is not None:
            print(f"pushsim: {warning}", file=sys.stderr)
        self.say(f"copied {count} ledger rows of this run from {ledger}")

    def finish(self) -> int:
        write_status(
            self.run_dir,
            self.partial_reason,
            backend=self.options.target or "reference",
            naive=self.options.backend_naive,
        )
        if not (self.run_dir / "epoch.json").exists():
            print(
                f"pushsim: no report: the run stopped before its first action "
                f"({self.partial_reason}); logs are in {self.logs}",
                file=sys.stderr,
            )
            return EXIT_PARTIAL
        try:
            from reports.build import backend_load, write_report
            from sim.oracle import judge_run, load_run

            if self.options.gateways_config is not None:
                self.copy_run_ledger()
            result = judge_run(load_run(self.run_dir))
            html = write_report(result, self.run_dir)
        except Exception as error:  # a report of what was collected beats none at all
            log.exception("building the report failed")
            print(f"pushsim: building the report failed: {error}", file=sys.stderr)
            return EXIT_PARTIAL

        from sim.commands.report import print_verdict

        self.say("")
        gates_status = print_verdict(
            result, backend_load(self.run_dir), partial=self.partial_reason is not None
        )
        print(f"report: {html}", flush=True)
        if self.partial_reason is not None:
            print(f"pushsim: the run is partial: {self.partial_reason}", file=sys.stderr)
            return EXIT_PARTIAL
        return EXIT_PASSED if gates_status == 0 else EXIT_GATE_FAILED


def default_run_dir(name: str) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    return Path("runs") / f"{name}-{stamp}-{os.getpid()}"
