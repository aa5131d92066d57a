"""The server with TLS, client certificates and bearer tokens on, driven by the real clients:
tritonclient (gRPC and HTTP), curl and loadgen-client (its gRPC and its telemetry scrapes over
the same TLS and token). Certificates are made here with `cryptography`.
"""

import datetime
import ipaddress
import shutil
import subprocess

import numpy as np
import pytest

from harness import DIGITS_DATA, ROOT, running_server

TOKEN = "edge-box-token-0123456789abcdef"
FAKE_BOX = ROOT / "tests" / "data" / "telemetry" / "pi4-coral"


def _certificate(subject, issuer_name, issuer_key, key, *, ca, names=(), client=False):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (x509.CertificateBuilder()
               .subject_name(name)
               .issuer_name(issuer_name or name)
               .public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if names:
        sans = [x509.IPAddress(ipaddress.ip_address(n)) if n[0].isdigit() else x509.DNSName(n)
                for n in names]
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    if not ca:
        usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A CA, a server certificate for localhost/127.0.0.1, a client certificate, a token file."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    folder = tmp_path_factory.mktemp("pki")

    def save(name, data):
        path = folder / name
        path.write_bytes(data)
        return path

    def key_pem(key):
        return key.private_bytes(serialization.Encoding.PEM,
                                 serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("test CA", None, ca_key, ca_key, ca=True)  # self-signed
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = _certificate("localhost", ca.subject, ca_key, server_key, ca=False,
                          names=("localhost", "127.0.0.1"))
    client_key = ec.generate_private_key(ec.SECP256R1())
    client = _certificate("loadgen", ca.subject, ca_key, client_key, ca=False, client=True)
    pem = serialization.Encoding.PEM
    return {
        "ca": save("ca.pem", ca.public_bytes(pem)),
        "server_cert": save("server.pem", server.public_bytes(pem)),
        "server_key": save("server.key", key_pem(server_key)),
        "client_cert": save("client.pem", client.public_bytes(pem)),
        "client_key": save("client.key", key_pem(client_key)),
        "tokens": save("tokens", f"# loadgen and Prometheus\n{TOKEN}\n".encode()),
    }


@pytest.fixture(scope="module")
def secured(inference_server_bin, free_port, tmp_path_factory, pki):
    """The server with TLS, client certificates required and a token, on the fake Pi's sysfs."""
    grpc_tls = {"ssl": True, "root_certificates": str(pki["ca"]),
                "private_key": str(pki["client_key"]),
                "certificate_chain": str(pki["client_cert"])}
    log = tmp_path_factory.mktemp("secured") / "server.log"
    with running_server(inference_server_bin, "models/repository", "digits-cnn", free_port, log,
                        extra_args=["--tls-cert", str(pki["server_cert"]),
                                    "--tls-key", str(pki["server_key"]),
                                    "--tls-client-ca", str(pki["ca"]),
                                    "--auth-token-file", str(pki["tokens"]),
                                    "--telemetry-root", str(FAKE_BOX)],
                        tls=grpc_tls, headers={"authorization": f"Bearer {TOKEN}"}) as served:
        yield served, grpc_tls


def _digits_input(grpcclient):
    tensor = grpcclient.InferInput("input", [1, 1, 8, 8], "FP32")
    tensor.set_data_from_numpy(np.zeros((1, 1, 8, 8), dtype=np.float32))
    return tensor


def test_tritonclient_grpc_over_tls_with_a_client_certificate_and_token(secured):
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    (_, url, _), grpc_tls = secured
    auth = {"authorization": f"Bearer {TOKEN}"}
    with grpcclient.InferenceServerClient(url=url, **grpc_tls) as client:
        result = client.infer("digits-cnn", [_digits_input(grpcclient)], headers=auth)
        assert result.as_numpy("logits").shape == (1, 10)
        with pytest.raises(InferenceServerException) as refused:
            client.infer("digits-cnn", [_digits_input(grpcclient)])
        assert "UNAUTHENTICATED" in str(refused.value.status()), refused.value
        with pytest.raises(InferenceServerException) as wrong:
            client.infer("digits-cnn", [_digits_input(grpcclient)],
                         headers={"authorization": "Bearer not-the-token-0123456789"})
        assert "not valid" in wrong.value.message(), wrong.value
    # No client certificate: the connection is made, but only health checks are answered.
    anonymous = {"ssl": True, "root_certificates": grpc_tls["root_certificates"]}
    with grpcclient.InferenceServerClient(url=url, **anonymous) as client:
        with pytest.raises(InferenceServerException) as refused:
            client.get_model_metadata("digits-cnn", headers=auth)
        assert "client certificate" in refused.value.message(), refused.value


def test_tritonclient_http_over_https(secured, pki):
    import tritonclient.http as httpclient

    (server, url, metrics_url), _ = secured
    http_port = _http_port(server)
    options = {"ca_certs": str(pki["ca"]), "certfile": str(pki["client_cert"]),
               "keyfile": str(pki["client_key"])}
    with httpclient.InferenceServerClient(url=f"localhost:{http_port}", ssl=True,
                                          ssl_options=options) as client:
        tensor = httpclient.InferInput("input", [1, 1, 8, 8], "FP32")
        tensor.set_data_from_numpy(np.zeros((1, 1, 8, 8), dtype=np.float32))
        result = client.infer("digits-cnn", [tensor],
                              headers={"authorization": f"Bearer {TOKEN}"})
        assert result.as_numpy("logits").shape == (1, 10)


def _http_port(server):
    args = server.args
    return args[args.index("--http-addr") + 1].rsplit(":", 1)[1]


def _curl(*args):
    proc = subprocess.run(["curl", "-s", "--max-time", "10", "-w", "\n%{http_code}", *args],
                          capture_output=True, text=True, timeout=30)
    body, _, code = proc.stdout.rpartition("\n")
    return code, body


def test_curl_sees_health_open_and_the_rest_closed(secured, pki):
    (server, _, metrics_url), _ = secured
    base = f"https://localhost:{_http_port(server)}"
    ca = ["--cacert", str(pki["ca"])]
    identity = ["--cert", str(pki["client_cert"]), "--key", str(pki["client_key"])]
    assert _curl(*ca, f"{base}/v2/health/ready")[0] == "200"
    code, body = _curl(*ca, f"{base}/v2/models/digits-cnn")
    assert code == "401" and "client certificate" in body, body
    code, body = _curl(*ca, *identity, f"{base}/v2/models/digits-cnn")
    assert code == "401" and "bearer token" in body, body
    auth = ["-H", f"authorization: Bearer {TOKEN}"]
    code, body = _curl(*ca, *identity, *auth, f"{base}/v2/models/digits-cnn")
    assert code == "200" and '"digits-cnn"' in body, body
    code, page = _curl(*ca, *identity, *auth, metrics_url)
    assert code == "200" and "inference_requests_unauthenticated_total" in page, page
    # Plain HTTP on the TLS port is not answered.
    assert _curl(f"http://127.0.0.1:{_http_port(server)}/v2/health/ready")[0] != "200"


def _loadgen(loadgen_client, cwd, url, *extra):
    cmd = [str(loadgen_client), "--profile", "digits-cnn", "--dataset", "imagenet",
           "--dataset-path", str(DIGITS_DATA), "--endpoint", f"https://{url}",
           "--scenario", "Server", "--qps", "50", "--time", "2",
           "--output-dir", str(cwd / "out"), *extra]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=120)


def test_loadgen_client_benchmarks_and_scrapes_a_secured_server(loadgen_client, secured, pki,
                                                                 tmp_path):
    (_, url, metrics_url), _ = secured
    tls = ["--tls-ca", str(pki["ca"]), "--tls-cert", str(pki["client_cert"]),
           "--tls-key", str(pki["client_key"]), "--server-metrics", metrics_url]
    proc = _loadgen(loadgen_client, tmp_path, url, *tls, "--token", TOKEN)
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
    summary = (tmp_path / "out" / "mlperf_log_summary.txt").read_text()
    # Exit 0: every sample was answered (too short a run for a VALID result).
    assert "Completed samples per second" in summary, summary
    # The telemetry came through the same TLS and token.
    assert "Run during device trouble : OK" in summary, summary
    assert "SoC temperature thermal_zone0" in summary, summary

    shutil.rmtree(tmp_path / "out")
    proc = _loadgen(loadgen_client, tmp_path, url, *tls)
    assert proc.returncode != 0
    assert proc.returncode == 1, f"{proc.stdout}\n{proc.stderr}"
    assert "--token or LOADGEN_TOKEN" in proc.stderr, proc.stderr


def test_prometheus_scrapes_over_tls_with_the_token(secured, pki, tmp_path, free_port):
    """A real Prometheus with `scheme: https`, `tls_config` and `authorization`: the target is up;
    the same target without the token is down with the server's 401."""
    import json
    import time
    import urllib.parse
    import urllib.request

    import yaml

    prometheus = shutil.which("prometheus")
    if prometheus is None:
        pytest.fail("prometheus is not on PATH (apt-get install prometheus; scripts/setup.sh does)")
    (_, _, metrics_url), _ = secured
    target = urllib.parse.urlparse(metrics_url).netloc.replace("127.0.0.1", "localhost")
    credentials = tmp_path / "token"
    credentials.write_text(TOKEN)
    tls = {"ca_file": str(pki["ca"]), "cert_file": str(pki["client_cert"]),
           "key_file": str(pki["client_key"])}
    job = {"scheme": "https", "tls_config": tls, "static_configs": [{"targets": [target]}]}
    config = {"global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
              "scrape_configs": [
                  {**job, "job_name": "secured",
                   "authorization": {"type": "Bearer", "credentials_file": str(credentials)}},
                  {**job, "job_name": "no-token"}]}
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    web = f"127.0.0.1:{free_port()}"
    log = open(tmp_path / "prometheus.log", "w")
    process = subprocess.Popen([prometheus, f"--config.file={tmp_path / 'prometheus.yml'}",
                                f"--storage.tsdb.path={tmp_path / 'data'}",
                                f"--web.listen-address={web}"],
                               stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        health = {}
        while time.monotonic() < deadline and set(health) != {"secured", "no-token"}:
            time.sleep(0.5)
            try:
                with urllib.request.urlopen(f"http://{web}/api/v1/targets", timeout=5) as answer:
                    targets = json.loads(answer.read())["data"]["activeTargets"]
            except OSError:
                continue
            health = {t["labels"]["job"]: t for t in targets if t["health"] != "unknown"}
        assert health.get("secured", {}).get("health") == "up", (
            health, (tmp_path / "prometheus.log").read_text())
        refused = health.get("no-token", {})
        assert refused.get("health") == "down" and "401" in refused.get("lastError", ""), health
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()
