"""Find a journey's deep link in a push payload and read the cart, product or order back out.

The backend, the driver and the oracle all need to know which cart a push was about. The link
is at the journey's ``payload_path``, or where Customer.io puts it: ``CIO.push.link``
in an APNs payload and ``message.data.link`` in an FCM request.
"""

from __future__ import annotations

import re
from typing import Any

DEFAULT_LINK_PATHS = ("CIO.push.link", "message.data.link", "data.link", "link")
_PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")


def value_at(document: Any, dotted: str) -> Any:
    """Return the value at a dotted path such as ``CIO.push.link``, or None when absent."""
    node = document
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def find_link(payload: Any, payload_path: str = "") -> str | None:
    """Return the deep link of a decoded push payload, or None when it carries none."""
    paths = (payload_path,) if payload_path else DEFAULT_LINK_PATHS
    for path in paths:
        link = value_at(payload, path)
        if isinstance(link, str) and link:
            return link
    return None


def link_pattern(template: str) -> re.Pattern[str]:
    """Compile a link template such as ``shop://cart/{cart_id}`` into a matching pattern."""
    pattern, position = "", 0
    for match in _PLACEHOLDER.finditer(template):
        pattern += re.escape(template[position : match.start()])
        pattern += f"(?P<{match.group(1)}>[^/?#&]+)"
        position = match.end()
    pattern += re.escape(template[position:])
    return re.compile(f"^{pattern}$")


def fill_link(template: str, values: dict[str, Any]) -> str:
    """Fill a link template's placeholders; a missing value leaves its placeholder empty."""
    return _PLACEHOLDER.sub(lambda m: str(values.get(m.group(1), "")), template)


def link_fields(template: str, link: str | None) -> dict[str, str]:
    """Return the placeholder values that ``link`` carries, or an empty dict if it does not fit."""
    if not link:
        return {}
    match = link_pattern(template).match(link)
    return match.groupdict() if match else {}
