"""Push payloads in the shape Customer.io's SDKs read.

iOS gets an APNs payload with the alert in ``aps`` and the deep link under ``CIO.push``. Android
gets an FCM v1 data message whose values are all strings, as FCM requires. Both carry
``CIO-Delivery-ID`` and ``CIO-Delivery-Token``, which the SDK sends back with its push metrics.
"""

from __future__ import annotations

import json

from sim.backend.sender_jobs import PushJob

# APNs rejects alert payloads over 4096 bytes (PayloadTooLarge), and FCM rejects a message whose
# data is over 4096 bytes. The FCM check counts the UTF-8 keys and values of ``data``.
MAX_APNS_PAYLOAD_BYTES = 4096
MAX_FCM_DATA_BYTES = 4096


class PayloadTooLarge(ValueError):
    """The payload built for a job is over the service's size limit."""


def apns_payload(job: PushJob) -> dict:
    """Build the APNs JSON payload for ``job``, raising PayloadTooLarge over 4096 bytes."""
    alert = {"title": job.title, "body": job.body}
    push: dict[str, str] = {"link": job.link}
    if job.title:
        push["title"] = job.title
    if job.body:
        push["body"] = job.body
    payload = {
        "aps": {"alert": alert, "sound": "default"},
        "CIO": {"push": push},
        "CIO-Delivery-ID": job.delivery_id,
        "CIO-Delivery-Token": job.delivery_token,
    }

    # aioapns encodes with ensure_ascii=False and default separators, so measure the same way.
    size = len(json.dumps(payload, ensure_ascii=False).encode())
    if size > MAX_APNS_PAYLOAD_BYTES:
        raise PayloadTooLarge(
            f"APNs payload of job {job.job_id} is {size} bytes, over the "
            f"{MAX_APNS_PAYLOAD_BYTES}-byte limit: shorten the title, body or link"
        )
    return payload


def fcm_message(job: PushJob) -> dict:
    """Build the FCM v1 send request body for ``job``, raising PayloadTooLarge over 4096 bytes."""
    data = {
        "link": job.link,
        "title": job.title,
        "body": job.body,
        "CIO-Delivery-ID": job.delivery_id,
        "CIO-Delivery-Token": job.delivery_token,
    }

    size = sum(len(key.encode()) + len(value.encode()) for key, value in data.items())
    if size > MAX_FCM_DATA_BYTES:
        raise PayloadTooLarge(
            f"FCM data of job {job.job_id} is {size} bytes, over the "
            f"{MAX_FCM_DATA_BYTES}-byte limit: shorten the title, body or link"
        )
    return {"message": {"token": job.token, "data": data, "android": {"priority": "high"}}}
