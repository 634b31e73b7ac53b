"""TLS on the API listener: with a certificate (self-signed, made here with the openssl CLI) the API speaks
HTTPS only; curl and Python's ssl verify it against that certificate, and plain HTTP gets no answer."""
import json
import socket
import ssl
import subprocess
import time

import pytest
import requests

from conftest import REDIS_DBS, START_TIMEOUT_S, Client, private_stack

KEY = "ck_tls_key_tenant_a"


@pytest.fixture(scope="module")
def tls_stack(tmp_path_factory):
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "tls.crt", d / "tls.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    s = private_stack("tls", REDIS_DBS["test_tls"], {"CREDITS_TLS_CERT_FILE": str(cert), "CREDITS_TLS_KEY_FILE": str(key),
                                  "CREDITS_API_KEYS": f"tls:{KEY}"})
    s.url = s.url.replace("http://", "https://")
    s.cert = cert
    s.projector.start()
    s.api.start()
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        assert s.api.alive(), f"credits-api exited, see {s.api.log_path}"
        try:
            if requests.get(s.url + "/healthz", timeout=1, verify=str(cert)).status_code == 200:
                break
        except requests.RequestException:
            pass
        assert time.monotonic() < deadline, "credits-api (TLS) not healthy in time"
        time.sleep(0.2)
    yield s
    s.stop()


def test_the_guide_flow_works_over_https(tls_stack):
    client = Client(tls_stack.url, KEY)
    client.session.verify = str(tls_stack.cert)
    client.session.trust_env = False  # else REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE would replace our certificate
    account = client.post("/v1/accounts/create", {"name": "T", "externalId": "tls_u1"}).json()["account"]["id"]
    assert client.post("/v1/accounts/credits/add", {"accountId": account, "amount": 10}).status_code == 200
    balance = client.get("/v1/accounts/balance", accountId=account)
    assert balance.status_code == 200 and balance.json()["balance"] == 10
    assert client.get("/v1/accounts/balance").status_code == 400  # errors travel over TLS the same way
    # curl, verifying the certificate, with keep-alive over two requests.
    out = subprocess.run(["curl", "-sS", "--cacert", str(tls_stack.cert), "-H", f"X-API-Key: {KEY}",
                          f"{tls_stack.url}/v1/accounts/balance?accountId={account}", "-w", "\n%{http_code}",
                          "--next", "--cacert", str(tls_stack.cert), f"{tls_stack.url}/healthz"],
                         capture_output=True, text=True, check=True, timeout=30).stdout
    assert json.loads(out.split("\n")[0])["balance"] == 10
    assert '"status":"ok"' in out


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
def test_python_ssl_negotiates_tls_1_2_or_newer_and_refuses_an_unknown_ca(tls_stack):
    port = int(tls_stack.url.rsplit(":", 1)[1])
    ctx = ssl.create_default_context(cafile=str(tls_stack.cert))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            assert tls.version() in ("TLSv1.2", "TLSv1.3")
            tls.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := tls.recv(4096):
                data += chunk
            assert data.startswith(b"HTTP/1.1 200")
    with pytest.raises(ssl.SSLCertVerificationError):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            ssl.create_default_context().wrap_socket(raw, server_hostname="127.0.0.1")
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.check_hostname, old.verify_mode = False, ssl.CERT_NONE
    old.minimum_version = old.maximum_version = ssl.TLSVersion.TLSv1_1
    with pytest.raises(ssl.SSLError):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            old.wrap_socket(raw)


def test_plain_http_gets_no_answer(tls_stack):
    with pytest.raises(requests.RequestException):
        requests.get(tls_stack.url.replace("https://", "http://") + "/healthz", timeout=5)
    assert tls_stack.api.alive()


def test_a_bad_tls_setting_fails_start_up_with_one_message(tmp_path):
    missing = tmp_path / "nope.pem"
    env = {"CREDITS_API_KEYS": f"tls:{KEY}", "CREDITS_TLS_CERT_FILE": str(missing), "CREDITS_TLS_KEY_FILE": str(missing),
           "ASAN_OPTIONS": "detect_leaks=0"}
    from conftest import BUILD
    done = subprocess.run([str(BUILD / "command-api" / "credits-api")], env=env, capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 2 and "cannot be read" in done.stderr
    env.pop("CREDITS_TLS_KEY_FILE")
    done = subprocess.run([str(BUILD / "command-api" / "credits-api")], env=env, capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 2 and "set both or neither" in done.stderr
