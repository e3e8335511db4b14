"""SDK calls the backend did not accept: their share of the calls sent, and their responses.

A backend that rejects SDK calls, or a ``--target`` that is no push backend at all, receives
none of the shoppers' activity. Every figure about its pushes then describes a backend that saw
nothing, so the report names these failures next to the gates.

The driver writes each sent call's last HTTP status as ``http_status``, after the SDK's own
retries of 429 and 5xx, and 0 when the request got no response (a connection error or a
timeout). A call counts as failed when that status is outside 200..299. A 429 counts as failed
too: the SDK call was not accepted, whatever the reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sim.oracle.ledger import TruthIndex

# Share of SDK calls sent without a 2xx response above which the report opens with a banner.
SDK_ERROR_SHARE_LIMIT = 0.01
# The driver's ``http_status`` of a request that got no response (``sim.driver.http``).
NO_RESPONSE = 0
NO_RESPONSE_LABEL = "no response"
# A ``sent`` line without ``http_status``, as hand-built ledgers write it, counts as accepted.
NOT_RECORDED_LABEL = "not recorded"


def response_label(http_status: int | None) -> str:
    """Return the label of a sent call's response: the status as text, or a label for none."""
    if http_status is None:
        return NOT_RECORDED_LABEL
    if http_status == NO_RESPONSE:
        return NO_RESPONSE_LABEL
    return str(http_status)


def is_failure(http_status: int | None) -> bool:
    """Tell whether a sent call's response means the backend did not accept the call."""
    return http_status is not None and not 200 <= http_status <= 299


@dataclass
class SdkErrors:
    """SDK calls sent to the backend, those without a 2xx response, and both by response."""

    sent: int = 0
    failed: int = 0
    # Failed over sent, or None when no call was sent, as in a virtual run.
    error_rate: float | None = None
    # Sent calls by response label, in ascending status order.
    responses: dict[str, int] = field(default_factory=dict)
    failed_responses: dict[str, int] = field(default_factory=dict)

    @property
    def over_limit(self) -> bool:
        return self.error_rate is not None and self.error_rate > SDK_ERROR_SHARE_LIMIT

    def describe_failures(self) -> str:
        """Return the failed calls by response, such as ``404: 6,941, no response: 3``."""
        return ", ".join(f"{label}: {count:,}" for label, count in self.failed_responses.items())

    def likely_fix(self) -> str:
        """Return the usual fix for the response that failed most calls, or "" when none fits."""
        if not self.failed_responses:
            return ""
        label = max(self.failed_responses, key=self.failed_responses.__getitem__)
        return FIXES.get(label, "")


# The usual cause of a response that fails most SDK calls, by response label. The backend's URL
# is pushsim run's --target, or Locust's --host when Locust runs alone.
FIXES = {
    "401": "the backend rejected the credentials: check target.site_id, target.api_key and "
    "target.write_key in the scenario",
    "403": "the backend rejected the credentials: check target.site_id, target.api_key and "
    "target.write_key in the scenario",
    "404": "the backend has no such route: check that --target (or Locust's --host) is the "
    "backend's base URL, without a path",
    "405": "the server at --target (or Locust's --host) does not take the SDK's POST and PUT "
    "requests: check that it is the push backend's base URL and not another server on that port",
    "501": "the server at --target (or Locust's --host) does not implement the SDK's POST and "
    "PUT requests: check that it is the push backend's base URL and not another server on that "
    "port",
    "no response": "the backend did not answer: check that it runs, and that --target (or "
    "Locust's --host) uses its scheme (http or https) and port",
}


def _order(http_status: int | None) -> tuple[int, int]:
    # Real statuses first in ascending order, then no response, then not recorded.
    if http_status is None:
        return (2, 0)
    if http_status == NO_RESPONSE:
        return (1, 0)
    return (0, http_status)


def judge_sdk_errors(index: TruthIndex) -> SdkErrors:
    """Count the sent SDK calls of ``index`` by response, and those the backend did not accept."""
    statuses = sorted(index.sent_responses, key=_order)
    responses = {response_label(s): index.sent_responses[s] for s in statuses}
    failed_responses = {
        response_label(s): index.sent_responses[s] for s in statuses if is_failure(s)
    }
    sent = sum(responses.values())
    failed = sum(failed_responses.values())
    return SdkErrors(
        sent=sent,
        failed=failed,
        error_rate=failed / sent if sent else None,
        responses=responses,
        failed_responses=failed_responses,
    )
