"""Fixtures of the deployment tests: the shared ones (binaries, free ports) from tests/harness.py."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from harness import free_port, inference_server_bin, loadgen_client  # noqa: E402,F401
