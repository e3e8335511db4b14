"""The gateways' config file: where the mock APNs and FCM listen and how to authenticate.

``pushsim gateways`` writes it; the reference backend's sender, the Locust driver and a team's
own backend read it. It contains the control API's bearer token, so it is written with mode 0600.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

CONFIG_VERSION = 1


@dataclass
class ApnsEndpoint:
    """Address, ports and accepted provider credentials of the mock APNs."""

    host: str = "127.0.0.1"
    tls_port: int = 0
    tls_no_alpn_port: int = 0
    h2c_port: int = 0
    key_path: str = ""
    key_id: str = ""
    team_id: str = ""
    topic: str = ""
    client_cert: str = ""
    client_key: str = ""


@dataclass
class FcmEndpoint:
    """Address and ports of the mock FCM, and the service account whose token_uri points at it."""

    host: str = "127.0.0.1"
    tls_port: int = 0
    plain_port: int = 0
    project_id: str = ""
    service_account: str = ""
    token_uri: str = ""
    send_url: str = ""


@dataclass
class GatewayConfig:
    """Everything a client of the gateways needs, in one file."""

    ca_cert: str = ""
    control_url: str = ""
    control_token: str = ""
    proxy_url: str = ""
    mode: str = "registry"
    apns: ApnsEndpoint = field(default_factory=ApnsEndpoint)
    fcm: FcmEndpoint = field(default_factory=FcmEndpoint)
    recipes: dict = field(default_factory=dict)
    # Path of the delivery ledger (SQLite), which pushsim run reads after a run on these gateways.
    ledger: str = ""
    pid: int = 0  # process id of the pushsim gateways process that wrote the file
    version: int = CONFIG_VERSION

    def write(self, path: str | Path) -> None:
        """Write the config as JSON readable only by its owner."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            json.dump(asdict(self), handle, indent=2)
            handle.write("\n")

    @classmethod
    def read(cls, path: str | Path) -> GatewayConfig:
        """Read a config file, raising ValueError that names the file on bad content."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ValueError(
                f"gateways config {path} not found: start `pushsim gateways --config-out {path}`"
            ) from None
        except json.JSONDecodeError as error:
            raise ValueError(f"gateways config {path} is not valid JSON: {error}") from None
        hint = f"give the file that `pushsim gateways --config-out {path}` wrote"
        if not isinstance(data, dict):
            raise ValueError(
                f"invalid gateways config {path}: a JSON {type(data).__name__}, not an "
                f"object; {hint}"
            )
        version = data.get("version", CONFIG_VERSION)
        if not isinstance(version, int) or isinstance(version, bool):
            raise ValueError(
                f"gateways config {path} has an invalid version {version!r}: it must be an "
                f"integer such as {CONFIG_VERSION}; {hint}"
            )
        if version > CONFIG_VERSION:
            raise ValueError(f"gateways config {path} is newer than this pushsim: upgrade it")

        sections = {"apns": ApnsEndpoint, "fcm": FcmEndpoint}
        problems = _unknown_keys(data, cls, sections)
        for name, section in sections.items():
            if not isinstance(data.get(name, {}), dict):
                problems.append(f"{name!r} must be an object")
            else:
                problems += _unknown_keys(data.get(name, {}), section, {}, prefix=f"{name}.")
        if problems:
            if "url" in data and "control_url" not in data:
                hint += ", not a backend's ready file"
            raise ValueError(f"gateways config {path}: {'; '.join(problems)}; {hint}")
        return cls(
            **{k: v for k, v in data.items() if k not in sections},
            apns=ApnsEndpoint(**data.get("apns", {})),
            fcm=FcmEndpoint(**data.get("fcm", {})),
        )


def _unknown_keys(data: dict, kind: type, nested: dict, prefix: str = "") -> list[str]:
    """Return a problem for each key of ``data`` that ``kind`` has no field for."""
    known = {item.name for item in fields(kind)} | set(nested)
    unknown = sorted(key for key in data if key not in known)
    if not unknown:
        return []
    names = ", ".join(repr(f"{prefix}{key}") for key in unknown)
    return [f"unknown key {names}"]
