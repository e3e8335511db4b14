"""Local credentials for the mock gateways: a CA, server and client certificates, an APNs
signing key and an FCM service account.

Real clients hard-code Apple's and Google's hosts, so the server certificate also names them.
Everything lives in one directory and is generated once, then reused, so a team can point its
backend at the same files across runs.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import logging
import os
import secrets
import ssl
from dataclasses import asdict, dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

log = logging.getLogger(__name__)

# Hosts that real clients hard-code. aioapns uses api.development.push.apple.com for sandbox.
PUBLIC_HOSTS = (
    "api.push.apple.com",
    "api.sandbox.push.apple.com",
    "api.development.push.apple.com",
    "fcm.googleapis.com",
    "oauth2.googleapis.com",
)
LOCAL_HOSTS = ("localhost",)
LOCAL_ADDRESSES = ("127.0.0.1", "::1")

DEFAULT_TEAM_ID = "PUSHSIM01"
DEFAULT_TOPIC = "com.example.shop"
DEFAULT_PROJECT_ID = "pushsim-shop"
_VALIDITY = datetime.timedelta(days=825)
_MANIFEST = "credentials.json"


@dataclass(frozen=True)
class Credentials:
    """Paths and identifiers of one credentials directory."""

    directory: Path
    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    apns_key: Path
    apns_key_id: str
    apns_team_id: str
    apns_topic: str
    fcm_service_account: Path
    fcm_project_id: str

    def to_json(self) -> dict:
        return {key: str(value) for key, value in asdict(self).items()}


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "pushsim local CA"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _write_private(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    os.chmod(path, 0o600)


def _pem_key(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _issue(
    ca_key,
    ca_name: x509.Name,
    subject: str,
    *,
    sans: list[x509.GeneralName],
    usage: x509.ObjectIdentifier,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def _generate(directory: Path, token_uri: str) -> Credentials:
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("pushsim local CA")
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )

    sans: list[x509.GeneralName] = [x509.DNSName(h) for h in LOCAL_HOSTS + PUBLIC_HOSTS]
    sans += [x509.IPAddress(ipaddress.ip_address(a)) for a in LOCAL_ADDRESSES]
    server_cert, server_key = _issue(
        ca_key, ca_name, "pushsim gateways", sans=sans, usage=ExtendedKeyUsageOID.SERVER_AUTH
    )
    # The client certificate stands for an APNs provider certificate; its CN names the topic.
    client_cert, client_key = _issue(
        ca_key,
        ca_name,
        f"Apple Push Services: {DEFAULT_TOPIC}",
        sans=[],
        usage=ExtendedKeyUsageOID.CLIENT_AUTH,
    )

    paths = {
        "ca_cert": directory / "ca.pem",
        "ca_key": directory / "ca.key",
        "server_cert": directory / "server.pem",
        "server_key": directory / "server.key",
        "client_cert": directory / "apns-client.pem",
        "client_key": directory / "apns-client.key",
    }
    paths["ca_cert"].write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    _write_private(paths["ca_key"], _pem_key(ca_key))
    paths["server_cert"].write_bytes(
        server_cert.public_bytes(serialization.Encoding.PEM)
        + ca_cert.public_bytes(serialization.Encoding.PEM)
    )
    _write_private(paths["server_key"], _pem_key(server_key))
    paths["client_cert"].write_bytes(client_cert.public_bytes(serialization.Encoding.PEM))
    _write_private(paths["client_key"], _pem_key(client_key))

    # APNs provider tokens are signed with an ES256 key delivered by Apple as a .p8 file.
    key_id = secrets.token_hex(5).upper()
    apns_key = directory / f"AuthKey_{key_id}.p8"
    _write_private(apns_key, _pem_key(ec.generate_private_key(ec.SECP256R1())))

    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    account = {
        "type": "service_account",
        "project_id": DEFAULT_PROJECT_ID,
        "private_key_id": secrets.token_hex(20),
        "private_key": _pem_key(rsa_key).decode(),
        "client_email": f"pushsim-sender@{DEFAULT_PROJECT_ID}.iam.gserviceaccount.com",
        "client_id": str(secrets.randbelow(10**20)),
        "token_uri": token_uri,
    }
    account_path = directory / "fcm-service-account.json"
    _write_private(account_path, json.dumps(account, indent=2).encode())

    credentials = Credentials(
        directory=directory,
        **paths,
        apns_key=apns_key,
        apns_key_id=key_id,
        apns_team_id=DEFAULT_TEAM_ID,
        apns_topic=DEFAULT_TOPIC,
        fcm_service_account=account_path,
        fcm_project_id=DEFAULT_PROJECT_ID,
    )
    (directory / _MANIFEST).write_text(json.dumps(credentials.to_json(), indent=2))
    log.info("generated gateway credentials in %s", directory)
    return credentials


def _load(directory: Path) -> Credentials | None:
    manifest = directory / _MANIFEST
    if not manifest.exists():
        return None
    data = json.loads(manifest.read_text())
    path_fields = {
        "directory",
        "ca_cert",
        "ca_key",
        "server_cert",
        "server_key",
        "client_cert",
        "client_key",
        "apns_key",
        "fcm_service_account",
    }
    values = {key: Path(value) if key in path_fields else value for key, value in data.items()}
    credentials = Credentials(**values)
    missing = [str(p) for k, p in values.items() if k in path_fields and not Path(p).exists()]
    if missing:
        log.warning(
            "credentials in %s are incomplete (missing %s); generating new ones",
            directory,
            ", ".join(missing),
        )
        return None
    return credentials


def ensure_credentials(directory: Path | str, *, token_uri: str | None = None) -> Credentials:
    """Return the credentials in ``directory``, generating them on first use.

    ``token_uri`` is written into the FCM service account so google-auth fetches its access
    tokens from the mock. Reused credentials get their ``token_uri`` updated when it changed,
    because the mock's port may differ from run to run.
    """
    directory = Path(directory)
    credentials = _load(directory)
    if credentials is None:
        return _generate(directory, token_uri or "https://oauth2.googleapis.com/token")

    if token_uri is not None:
        account = json.loads(credentials.fcm_service_account.read_text())
        if account.get("token_uri") != token_uri:
            account["token_uri"] = token_uri
            _write_private(credentials.fcm_service_account, json.dumps(account, indent=2).encode())
    return credentials


def server_ssl_context(
    credentials: Credentials,
    *,
    alpn: list[str] | None = ("h2",),
    request_client_cert: bool = False,
) -> ssl.SSLContext:
    """Return a TLS server context for the gateways.

    With ``alpn=None`` no protocol is negotiated, which is what aioapns's client offers.
    With ``request_client_cert`` the server asks for, but does not require, a client
    certificate signed by the local CA, for APNs certificate-based authentication.
    """
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(credentials.server_cert, credentials.server_key)
    if alpn:
        context.set_alpn_protocols(list(alpn))
    if request_client_cert:
        context.load_verify_locations(credentials.ca_cert)
        context.verify_mode = ssl.CERT_OPTIONAL
    return context


def client_ssl_context(
    credentials: Credentials, *, alpn: list[str] | None = ("h2",)
) -> ssl.SSLContext:
    """Return a TLS client context that trusts the local CA, for pushsim's clients and tests."""
    context = ssl.create_default_context(cafile=str(credentials.ca_cert))
    if alpn:
        context.set_alpn_protocols(list(alpn))
    return context


def issue_client_certificate(
    credentials: Credentials, directory: Path | str, common_name: str, *, name: str = "client"
) -> tuple[Path, Path]:
    """Issue another client certificate from the local CA and return its (cert, key) paths.

    APNs reads the certificate's kind and bundle id from ``common_name``, for example
    ``"Apple Development IOS Push Services: com.example.shop"``.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = serialization.load_pem_private_key(credentials.ca_key.read_bytes(), password=None)
    ca_cert = x509.load_pem_x509_certificate(credentials.ca_cert.read_bytes())
    certificate, key = _issue(
        ca_key, ca_cert.subject, common_name, sans=[], usage=ExtendedKeyUsageOID.CLIENT_AUTH
    )
    cert_path = directory / f"{name}.pem"
    key_path = directory / f"{name}.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    _write_private(key_path, _pem_key(key))
    return cert_path, key_path
