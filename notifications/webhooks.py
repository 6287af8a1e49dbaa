"""Signed outgoing webhooks: HMAC-SHA256 over "{timestamp}.{body}" with the endpoint's secret.

A receiver recomputes the signature and refuses old timestamps, so a captured request cannot be
replayed later.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

import httpx

from notifications.email import PermanentFailure, TemporaryFailure


def signature(secret: str, timestamp: str, body: bytes) -> str:
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + digest.hexdigest()


def post(
    url: str,
    secret: str,
    *,
    topic: str,
    delivery_id: int,
    payload: dict[str, Any],
    timeout_s: float,
) -> int:
    """POST the event; 2xx is delivered, other answers and timeouts are retried."""
    body = json.dumps(
        {"topic": topic, "data": payload}, ensure_ascii=False, sort_keys=True
    ).encode()
    timestamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        "X-Labshare-Event": topic,
        "X-Labshare-Delivery": str(delivery_id),
        "X-Labshare-Timestamp": timestamp,
        "X-Labshare-Signature": signature(secret, timestamp, body),
    }
    try:
        response = httpx.post(url, content=body, headers=headers, timeout=timeout_s)
    except httpx.HTTPError as exc:
        raise TemporaryFailure(f"{type(exc).__name__}: {exc}") from exc
    if 200 <= response.status_code < 300:
        return response.status_code
    if response.status_code in (400, 404, 410):
        raise PermanentFailure(f"{response.status_code} from {url}")
    raise TemporaryFailure(f"{response.status_code} from {url}")
