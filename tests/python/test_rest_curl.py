"""The README's curl examples of the REST protocol, run as written (host and port swapped for the
test server's), so the documentation cannot drift from what the server answers.
"""

import json
import shutil
import subprocess

import pytest

from harness import ROOT


def readme_examples():
    text = (ROOT / "README.md").read_text()
    block = text.split("<!-- curl-examples -->", 1)[1].split("<!-- /curl-examples -->", 1)[0]
    return [line for line in block.splitlines() if line.startswith("curl ")]


def test_the_readme_has_curl_examples():
    assert len(readme_examples()) >= 4


@pytest.mark.parametrize("line", readme_examples())
def test_readme_curl_example(http_url, client, line):  # `client` waits until the server is live
    if shutil.which("curl") is None:
        pytest.fail("curl is missing; scripts/setup.sh installs it")
    command = line.replace("localhost:8000", http_url)
    proc = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.strip()
    if "/health/ready" in line:
        assert out == "200"
        return
    answer = json.loads(out)
    assert "error" not in answer, answer
    if line.endswith("/stats"):
        assert answer["model_stats"][0]["name"] == "digits-cnn"
    elif "/infer" in line:
        assert answer["outputs"][0]["name"] == "logits"
        assert len(answer["outputs"][0]["data"]) == 10
    else:
        assert answer["name"] == "digits-cnn"
