"""The driver's ``sdk_call`` records of the truth ledger, encoded straight to JSON lines.

A live run writes one record per SDK call that leaves a lane, so at a few thousand calls per
second the cost of a record counts. Building it as a dict and encoding that took 6.5 to 7.6 µs
per call, over the 32,660 calls of six simulated hours of the minimal scenario on 2 vCPUs of an
Intel Xeon. Writing the keys as constant text and encoding only the values took 4.2 µs. The
line is the text ``TruthWriter.write`` writes for the dict, key order included, which
tests/driver/test_sdk_records.py checks against the model's own calls.
"""

from __future__ import annotations

from sim.formats.truth import SCHEMA_VERSION, fragment
from sim.model.ports import SdkCall, SharedProperties

_HEAD = f'{{"v":{SCHEMA_VERSION},"kind":"sdk_call","status":'


def call_status(statuses: list[int]) -> int | None:
    """Return the ``http_status`` of a call sent as the requests with ``statuses``, in order.

    It is the first status outside 200..299, since the call failed when any of its requests
    did, else the last status. None when the call sent no request.
    """
    for status in statuses:
        if not 200 <= status <= 299:
            return status
    return statuses[-1] if statuses else None


def sdk_call_line(
    call: SdkCall,
    status: str,
    http_status: int | None = None,
    lag_ms: float | None = None,
    sent_wall: float | None = None,
) -> str:
    """Return the truth ledger line of ``call``, without the newline.

    ``status`` is sent, dropped or local. Each of the last three fields is left out of the line
    when it is None. ``lag_ms`` and ``sent_wall`` are written as given, so round them first.
    """
    properties = call.properties
    # A product's shared properties carry their JSON, made once with the same encoder.
    properties_text = (
        properties.json if type(properties) is SharedProperties else fragment(properties)
    )
    line = (
        f'{_HEAD}{fragment(status)},"at":{fragment(call.at)},"group":{fragment(call.group_id)},'
        f'"seq":{fragment(call.seq)},"method":{fragment(call.method)},'
        f'"device":{fragment(call.device)},"person":{fragment(call.person)},'
        f'"anonymous_id":{fragment(call.anonymous_id)},"user_id":{fragment(call.user_id)},'
        f'"token":{fragment(call.token)},"event":{fragment(call.event)},'
        f'"properties":{properties_text},"attributes":{fragment(call.attributes)},'
        f'"fault":{fragment(call.fault)}'
    )
    if http_status is not None:
        line += f',"http_status":{fragment(http_status)}'
    if lag_ms is not None:
        line += f',"lag_ms":{fragment(lag_ms)}'
    if sent_wall is not None:
        line += f',"sent_wall":{fragment(sent_wall)}'
    return line + "}"
