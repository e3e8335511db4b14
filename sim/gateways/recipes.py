"""Recipes that point known push clients at the mock gateways, as plain data.

Each function returns a JSON-ready dict for the gateways' config file: the settings to change,
the environment variables to set, and the proxy to use instead when a client cannot be
re-pointed. A recipe names a client's settings; it never imports the client.
"""

from __future__ import annotations

from pathlib import Path

from sim.gateways.proxy import APNS_HOSTS, FCM_HOSTS

FCM_SEND_PATH = "/v1/projects/{0}/messages:send"


def _proxy(proxy_port: int | None) -> dict | None:
    if proxy_port is None:
        return None
    return {"host": "127.0.0.1", "port": proxy_port, "url": f"http://127.0.0.1:{proxy_port}"}


def firebase_admin_recipe(
    *,
    fcm_base_url: str,
    service_account: Path | str,
    ca_cert: Path | str,
    proxy_port: int | None = None,
) -> dict:
    """Describe how firebase-admin (Python, 7.x) reaches the mock FCM gateway.

    firebase-admin builds its send URL from the class attribute ``_MessagingService.FCM_URL``
    and gets access tokens from the service account's ``token_uri`` through google-auth. Both
    clients use requests, which trusts the CA named by ``REQUESTS_CA_BUNDLE``. With a proxy
    the client needs no change at all: ``HTTPS_PROXY`` carries both hosts to the mock.
    """
    return {
        "client": "firebase-admin",
        "language": "python",
        "set": {
            "firebase_admin.messaging._MessagingService.FCM_URL": fcm_base_url + FCM_SEND_PATH,
            "service_account.token_uri": f"{fcm_base_url}/token",
        },
        "service_account_file": str(service_account),
        "env": {"REQUESTS_CA_BUNDLE": str(ca_cert)},
        "proxy": _proxy(proxy_port),
        "proxy_env": {"HTTPS_PROXY": f"http://127.0.0.1:{proxy_port}"} if proxy_port else None,
        "proxy_hosts": list(FCM_HOSTS),
        "notes": (
            "Set FCM_URL before the first messaging call of an app, because the messaging "
            "service copies it when it is created. send_each_async uses httpx, which does not "
            "read REQUESTS_CA_BUNDLE."
        ),
    }


def pyfcm_recipe(
    *,
    fcm_base_url: str,
    service_account: Path | str,
    ca_cert: Path | str,
    proxy_port: int | None = None,
) -> dict:
    """Describe how pyfcm (2.x) reaches the mock FCM gateway.

    pyfcm builds its send URL from the class attribute ``BaseAPI.FCM_END_POINT_BASE`` and
    fetches access tokens through google-auth from the service account's ``token_uri``.
    """
    return {
        "client": "pyfcm",
        "language": "python",
        "set": {
            "pyfcm.baseapi.BaseAPI.FCM_END_POINT_BASE": f"{fcm_base_url}/v1/projects",
            "service_account.token_uri": f"{fcm_base_url}/token",
        },
        "constructor": {"service_account_file": str(service_account)},
        "env": {"REQUESTS_CA_BUNDLE": str(ca_cert)},
        "proxy": _proxy(proxy_port),
        "constructor_with_proxy": (
            {"proxy_dict": {"https": f"http://127.0.0.1:{proxy_port}"}} if proxy_port else None
        ),
        "notes": (
            "pyfcm sleeps for Retry-After and sends again, with no limit on attempts, so a "
            "long brown-out stalls its caller."
        ),
    }


def aioapns_recipe(
    *,
    apns_host: str = "127.0.0.1",
    apns_port: int,
    ca_cert: Path | str,
    use_sandbox: bool = False,
) -> dict:
    """Describe how aioapns (4.x) reaches the mock APNs gateway.

    aioapns connects to ``APNsProductionClientProtocol.APNS_SERVER`` (or the development
    protocol's, with ``use_sandbox``) on ``APNsTLSClientProtocol.APNS_PORT``, with the
    ``ssl_context`` its constructor takes. The recipe offers no proxy: aioapns 4.0's
    ``proxy_host``/``proxy_port`` path fails on Python 3.11 before the TLS handshake, with
    "'TransportSocket' object has no attribute 'send'", because it hands asyncio the tunnel's
    socket wrapper where a socket is needed.
    """
    protocol = "APNsDevelopmentClientProtocol" if use_sandbox else "APNsProductionClientProtocol"
    return {
        "client": "aioapns",
        "language": "python",
        "set": {
            f"aioapns.connection.{protocol}.APNS_SERVER": apns_host,
            "aioapns.connection.APNsTLSClientProtocol.APNS_PORT": apns_port,
        },
        "constructor": {"use_sandbox": use_sandbox},
        "ssl_context_cafile": str(ca_cert),
        "notes": "aioapns offers no ALPN protocol, so the APNs gateway must accept TLS without "
        "it. aioapns 4.0's proxy_host/proxy_port fail on Python 3.11, so the recipe sets the "
        "server and port instead.",
    }


def node_apn_recipe(
    *,
    apns_host: str = "localhost",
    apns_port: int,
    ca_cert: Path | str,
    production: bool = True,
    proxy_port: int | None = None,
) -> dict:
    """Describe how Node's ``@parse/node-apn`` Provider reaches the mock APNs gateway.

    The Provider takes ``address``, ``port`` and ``ca`` (a path or PEM text) among its options,
    and ``proxy: {host, port}`` to tunnel with CONNECT to api.push.apple.com or
    api.sandbox.push.apple.com instead.
    """
    return {
        "client": "@parse/node-apn",
        "language": "javascript",
        "provider_options": {"address": apns_host, "port": apns_port, "ca": str(ca_cert)},
        "provider_options_with_proxy": (
            {
                "proxy": {"host": "127.0.0.1", "port": proxy_port},
                "ca": str(ca_cert),
                "production": production,
            }
            if proxy_port
            else None
        ),
        "proxy_hosts": [APNS_HOSTS[0] if production else APNS_HOSTS[2]],
        "notes": (
            "With an address set, node-apn sets production to true only for "
            "api.push.apple.com; production otherwise only picks the default address. "
            "Only a request to one of Apple's hosts tells the mock which environment it is "
            "for, so only then does a token of the other environment get BadDeviceToken."
        ),
    }


def all_recipes(
    *,
    fcm_base_url: str,
    service_account: Path | str,
    ca_cert: Path | str,
    apns_port: int | None = None,
    proxy_port: int | None = None,
) -> dict[str, dict]:
    """Collect every recipe for the gateways' config file, keyed by client name."""
    recipes = {
        "firebase-admin": firebase_admin_recipe(
            fcm_base_url=fcm_base_url,
            service_account=service_account,
            ca_cert=ca_cert,
            proxy_port=proxy_port,
        ),
        "pyfcm": pyfcm_recipe(
            fcm_base_url=fcm_base_url,
            service_account=service_account,
            ca_cert=ca_cert,
            proxy_port=proxy_port,
        ),
    }
    if apns_port is not None:
        recipes["aioapns"] = aioapns_recipe(apns_port=apns_port, ca_cert=ca_cert)
        recipes["@parse/node-apn"] = node_apn_recipe(
            apns_port=apns_port, ca_cert=ca_cert, proxy_port=proxy_port
        )
    return recipes
