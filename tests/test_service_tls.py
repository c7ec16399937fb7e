"""Caller authentication by TLS client certificates: `slg serve --tls-cert --tls-key --tls-client-ca`."""

from __future__ import annotations

import datetime
import ssl
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.fixtures_service import SERVICE_POLICY, ServiceFactory

CHAT = {"body": {"model": "general", "messages": [{"role": "user", "content": "hi"}]}, "identity": {"team": "rnd"}}


def _cert(subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Certificate | None,
          issuer_key: ec.EllipticCurvePrivateKey | None, *, ca: bool = False, server: bool = False) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    b = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer.subject if issuer else name)
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if server:
        b = b.add_extension(x509.SubjectAlternativeName([x509.IPAddress(__import__("ipaddress").ip_address(
            "127.0.0.1"))]), critical=False)
        b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    elif not ca:
        b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    return b.sign(issuer_key or key, hashes.SHA256())


def _write(path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey | None = None) -> None:
    path.with_suffix(".crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    if key is not None:
        path.with_suffix(".key").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                               serialization.PrivateFormat.PKCS8,
                                                               serialization.NoEncryption()))


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("pki")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("slg-test-ca", ca_key, None, None, ca=True)
    _write(d / "ca", ca)
    for name, server in (("server", True), ("client", False)):
        k = ec.generate_private_key(ec.SECP256R1())
        _write(d / name, _cert(f"slg-{name}", k, ca, ca_key, server=server), k)
    rogue_key = ec.generate_private_key(ec.SECP256R1())
    _write(d / "rogue", _cert("rogue", rogue_key, None, None), rogue_key)  # self-signed, not from the CA
    return d


def test_client_certificates_authenticate_callers(guard_service_factory: ServiceFactory, pki: Path) -> None:
    svc = guard_service_factory(SERVICE_POLICY, args=("--tls-cert", str(pki / "server.crt"),
                                                      "--tls-key", str(pki / "server.key"),
                                                      "--tls-client-ca", str(pki / "ca.crt")))
    url = f"https://127.0.0.1:{svc.port}/v1/guard/request"

    def context(name: str | None) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        if name:
            ctx.load_cert_chain(str(pki / f"{name}.crt"), str(pki / f"{name}.key"))
        return ctx

    ok = httpx.post(url, json=CHAT, headers=svc.auth, timeout=30, verify=context("client"))
    assert ok.status_code == 200 and ok.json()["department"] == "rnd"
    for name in (None, "rogue"):  # no certificate, or one the CA did not sign: the handshake fails
        with pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)):
            httpx.post(url, json=CHAT, headers=svc.auth, timeout=30, verify=context(name)).raise_for_status()
