"""The run directory of a plain Locust run, written so that ``pushsim report`` can judge it.

``pushsim run`` writes its own run directory and passes ``--epoch-file``. Without that option,
the Locust process that announces the epoch (the master, or the only process) writes the same
records: the resolved scenario and the epoch before the first action, then, when Locust quits,
how the run ended and the run's rows of the gateways' delivery ledger. Workers add their truth
ledgers to the same directory.
"""

from __future__ import annotations

import logging
from pathlib import Path

from sim.formats.epoch import Epoch
from sim.formats.gateway_config import GatewayConfig
from sim.run.components import answers_ok
from sim.run.run_dir import write_epoch, write_scenario, write_status
from sim.run.run_ledger import copy_run_ledger
from sim.scenario.schema import Scenario

log = logging.getLogger(__name__)


class RunRecord:
    """The records that the Locust process announcing the epoch writes to the run directory."""

    def __init__(
        self, run_dir: Path, scenario: Scenario, gateways: GatewayConfig | None, host: str
    ) -> None:
        self.run_dir = run_dir
        self.scenario = scenario
        self.gateways = gateways
        # The backend under test as the report names it: its URL, unless its response to the
        # epoch shows that it is the reference backend.
        self.backend = host or "unknown"
        self.naive: list[str] = []
        self.epoch: Epoch | None = None
        # The last line Locust shows: the run directory's state and the command that judges it.
        self.closing_line = ""

    def start(self, epoch: Epoch, record: dict) -> None:
        """Write the resolved scenario and the epoch announcement ``record``."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        write_scenario(self.run_dir, self.scenario)
        write_epoch(self.run_dir, record)
        # finish() replaces this status, so a Locust that is killed leaves a partial run.
        write_status(
            self.run_dir,
            "no final status: Locust is still running or was killed",
            backend=self.backend,
            naive=self.naive,
            final=False,
        )
        self.epoch = epoch

    def reference_backend(self, naive: list[str]) -> None:
        """Name pushsim's reference backend, with its naive switches, as the backend under test."""
        self.backend = "reference"
        self.naive = list(naive)

    def finish(self, partial_reason: str | None) -> None:
        """Write how the run ended, copy its delivery rows and set the closing line.

        Does nothing when the epoch was never announced, since no shopper acted.
        """
        if self.epoch is None:
            return
        write_status(self.run_dir, partial_reason, backend=self.backend, naive=self.naive)

        if self.gateways is not None and self.gateways.ledger:
            self._copy_deliveries(Path(self.gateways.ledger))

        if not list(self.run_dir.glob("truth-*.jsonl")):
            self.closing_line = (
                f"pushsim: no truth ledger in {self.run_dir}: copy each worker's truth-*.jsonl "
                f"into it, then judge the run with: pushsim report {self.run_dir}"
            )
        elif partial_reason is not None:
            self.closing_line = (
                f"pushsim: {self.run_dir} contains a partial run ({partial_reason}); judge what "
                f"it has with: pushsim report {self.run_dir}"
            )
        else:
            self.closing_line = (
                f"pushsim: the run directory {self.run_dir} is complete; judge the run with: "
                f"pushsim report {self.run_dir}"
            )

    def _copy_deliveries(self, ledger: Path) -> None:
        """Copy the run's rows of the gateways' ledger into the run directory."""
        if not ledger.exists():
            log.warning(
                "pushsim: the gateways' delivery ledger %s is not on this machine, so the report "
                "will count no push: run the Locust master where the gateways run",
                ledger,
            )
            return
        # Stopped gateways commit nothing more, so waiting for their writer is pointless.
        running = answers_ok(f"{self.gateways.control_url}/healthz")
        count, warning = copy_run_ledger(ledger, self.run_dir, self.epoch, wait=running)
        if warning is not None:
            log.warning("pushsim: %s", warning)
        log.info("pushsim: copied %d rows of this run from the delivery ledger %s", count, ledger)
