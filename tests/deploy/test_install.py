"""deploy/install.sh and deploy/uninstall.sh, for real, into scratch roots: the runtimes come out
of their PyPI wheels, the unit passes `systemd-analyze verify` inside the installed system, and
the installed service runs there as its own user, exactly as the unit starts it, with the
repository read-only: it tells the notify socket READY=1, reloads on SIGHUP, answers inference
with the runtimes from /opt/inference-server/lib, and stops on SIGTERM. For arm64 the same is
done with the cross-built binary under qemu (INFERENCE_SERVER_ARM64_BIN, which scripts/test.sh
builds).

    .venv/bin/python -m pytest tests/deploy/test_install.py     (as root: mount namespaces)
"""

import os
import re
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from harness import DIGITS_DATA, ROOT

INSTALL = ROOT / "deploy" / "install.sh"
UNINSTALL = ROOT / "deploy" / "uninstall.sh"
IN_SYSTEM = ROOT / "tests" / "deploy" / "installed_system.sh"
UNIT = "/etc/systemd/system/inference-server.service"
PYTHON = ROOT / ".venv" / "bin" / "python"
# What install.sh puts outside /opt/inference-server, and from where in deploy/.
MANIFEST = {"/etc/systemd/system/inference-server.service": "systemd/inference-server.service",
            "/etc/sysusers.d/inference-server.conf": "systemd/inference-server.sysusers",
            "/etc/udev/rules.d/60-inference-server.rules": "udev/60-inference-server.rules"}
ELF_MACHINES = {"amd64": 62, "arm64": 183}
FAKE_PI_CPUINFO = ROOT / "tests" / "data" / "telemetry" / "pi4-coral" / "proc" / "cpuinfo"


def pins():
    text = (ROOT / "scripts" / "requirements.txt").read_text()
    return {name: re.search(rf"^{name}==(\S+)", text, re.M).group(1)
            for name in ("onnxruntime", "openvino", "ai-edge-litert")}


def install(root, *args):
    return subprocess.run(["bash", str(INSTALL), "--root", str(root), "--python", str(PYTHON),
                           *args], capture_output=True, text=True, timeout=900)


def output(proc):
    return f"exit {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"


def elf_machine(path):
    data = Path(path).read_bytes()[:20]
    assert data[:4] == b"\x7fELF", path
    return int.from_bytes(data[18:20], "little")


def service_uid(root):
    for line in (root / "etc" / "passwd").read_text().splitlines():
        name, _, uid, gid, *_ = line.split(":")
        if name == "inference-server":
            return int(uid), int(gid)
    pytest.fail(f"no inference-server user in {root}/etc/passwd")


def exec_start(root):
    """The unit's ExecStart command line."""
    unit = (root / UNIT.lstrip("/")).read_text()
    line = re.search(r"^ExecStart=(.+)$", unit, re.M).group(1)
    return shlex.split(line)


@pytest.fixture(scope="module")
def need_root():
    if os.geteuid() != 0:
        pytest.fail("tests/deploy/test_install.py runs the installed system in a mount namespace "
                    "and chroot, which needs root (CI runs as root)")


@pytest.fixture(scope="module")
def amd64_binary():
    path = ROOT / "target" / "debug" / "inference-server"
    if not path.is_file():
        pytest.fail(f"{path} is missing; run `cargo build -p inference-server`")
    return path


@pytest.fixture(scope="module")
def installed(need_root, amd64_binary, tmp_path_factory):
    """An amd64 install into a scratch root, its wheels downloaded from PyPI by install.sh."""
    root = tmp_path_factory.mktemp("amd64-root")
    proc = install(root, "--arch", "amd64", "--binary", str(amd64_binary))
    assert proc.returncode == 0, output(proc)
    assert "nothing activated" in proc.stdout, output(proc)
    return root


def test_the_install_puts_every_piece_in_place(installed):
    root = installed
    opt = root / "opt" / "inference-server"
    versions = pins()
    binary = opt / "bin" / "inference-server"
    assert stat.S_IMODE(binary.stat().st_mode) == 0o755
    ort = opt / "lib" / "onnxruntime" / f"libonnxruntime.so.{versions['onnxruntime']}"
    ov = next((opt / "lib" / "openvino").glob("libopenvino_c.so*"))
    cpu_plugin = opt / "lib" / "openvino" / "libopenvino_intel_cpu_plugin.so"
    litert = opt / "lib" / "litert" / "libLiteRt.so"
    for library in (ort, ov, cpu_plugin, litert):
        assert elf_machine(library) == ELF_MACHINES["amd64"], library
    assert (opt / "share" / "runtimes.txt").read_text() == (
        f"onnxruntime {versions['onnxruntime']}\nopenvino {versions['openvino']}\n"
        f"ai-edge-litert {versions['ai-edge-litert']}\n")
    assert (opt / "share" / "install-manifest.txt").read_text().split() == list(MANIFEST)
    for path, source in MANIFEST.items():
        assert (root / path.lstrip("/")).read_bytes() == (ROOT / "deploy" / source).read_bytes()

    uid, gid = service_uid(root)
    assert uid < 1000, "a system user"
    config = root / "etc" / "inference-server" / "server.toml"
    models = root / "var" / "lib" / "inference-server" / "models"
    for path, mode in [(config, 0o640), (config.parent, 0o750), (models, 0o750)]:
        info = path.stat()
        assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (0, gid, mode), path
    assert (models / "digits-cnn" / "1" / "model.onnx").read_bytes() == (
        ROOT / "models" / "repository" / "digits-cnn" / "1" / "model.onnx").read_bytes()


def test_the_unit_verifies_inside_the_installed_system(installed):
    proc = subprocess.run([str(IN_SYSTEM), str(installed), "systemd-analyze", "verify", UNIT],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stderr.strip() == "", output(proc)
    security = subprocess.run(
        [str(IN_SYSTEM), str(installed), "systemd-analyze", "security", "--offline=yes", UNIT],
        capture_output=True, text=True, timeout=120)
    assert security.returncode == 0, output(security)
    exposure = re.search(r"Overall exposure level for \S+: ([\d.]+)", security.stdout)
    assert exposure and float(exposure.group(1)) <= 4.0, security.stdout[-400:]


class NotifySocket:
    """A NOTIFY_SOCKET datagram socket, as systemd gives a Type=notify service."""

    def __init__(self, path):
        self.path = path
        self.process = None
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        os.chmod(path, 0o777)  # the service user sends to it

    def wait_for(self, state, timeout=60, log=None):
        deadline = time.monotonic() + timeout
        seen = []
        while time.monotonic() < deadline:
            self.sock.settimeout(min(1.0, max(0.01, deadline - time.monotonic())))
            try:
                message = self.sock.recv(4096).decode()
            except socket.timeout:
                if self.process is not None and self.process.poll() is not None:
                    break
                continue
            seen.append(message)
            if state in message.splitlines():
                return seen
        service_log = log.read_text() if log else ""
        pytest.fail(f"no {state} on the notify socket within {timeout} s: {seen}\n{service_log}")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_installed_service(root, tmp_path, runner=(), system_options=()):
    """The unit's ExecStart inside the installed system, as the service's user, with the notify
    protocol; ports moved off the defaults through the environment (which wins over server.toml).
    Returns (process, notify socket, gRPC address, log path)."""
    uid, gid = service_uid(root)
    # Where the service's user can reach it (pytest's tmp_path is private to root).
    shared = Path(tempfile.mkdtemp(prefix="notify-", dir="/tmp"))
    shared.chmod(0o755)
    notify = NotifySocket(shared / "notify.sock")
    grpc, http, metrics = (f"127.0.0.1:{free_port()}" for _ in range(3))
    env = [f"NOTIFY_SOCKET={notify.path}", "WATCHDOG_USEC=2000000",
           f"INFERENCE_SERVER_GRPC_ADDR={grpc}", f"INFERENCE_SERVER_HTTP_ADDR={http}",
           f"INFERENCE_SERVER_METRICS_ADDR={metrics}"]
    log_path = tmp_path / "service.log"
    command = [str(IN_SYSTEM), *system_options, str(root), "env", "-i", "PATH=/usr/bin:/bin", *env,
               "setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups",
               *runner, *exec_start(root)]
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    notify.process = process
    return process, notify, grpc, log_path


def service_pid(process):
    """The service's own process: the last of the wrapper's descendants (unshare, chroot, env and
    setpriv exec into each other down to it), to be signalled the way systemd signals it."""
    pid = process.pid
    while True:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        if not children:
            return pid
        pid = int(children[0])


def infer_digits(grpc):
    import tritonclient.grpc as grpcclient
    from PIL import Image

    name, label = (DIGITS_DATA / "val_map.txt").read_text().splitlines()[0].split()
    pixels = np.asarray(Image.open(DIGITS_DATA / name).convert("L"), dtype=np.float32) / 255.0
    client = grpcclient.InferenceServerClient(url=grpc)
    tensor = grpcclient.InferInput("input", [1, 1, 8, 8], "FP32")
    tensor.set_data_from_numpy(pixels[None, None])
    logits = client.infer("digits-cnn", [tensor]).as_numpy("logits")
    client.close()
    return int(np.argmax(logits)), int(label)


def stop(process, notify, log_path):
    os.kill(service_pid(process), signal.SIGTERM)
    notify.wait_for("STOPPING=1", log=log_path)
    assert process.wait(timeout=60) == 0, log_path.read_text()


def test_the_installed_service_runs_as_the_unit_starts_it(installed, tmp_path):
    process, notify, grpc, log_path = start_installed_service(installed, tmp_path)
    try:
        notify.wait_for("READY=1", log=log_path)
        notify.wait_for("WATCHDOG=1", timeout=10, log=log_path)
        predicted, label = infer_digits(grpc)
        assert predicted == label
        log = log_path.read_text()
        ort_version = pins()["onnxruntime"]
        assert (f"path=/opt/inference-server/lib/onnxruntime/libonnxruntime.so.{ort_version}"
                in log), log
        assert "repository=/var/lib/inference-server/models" in log, log
        os.kill(service_pid(process), signal.SIGHUP)
        notify.wait_for("RELOADING=1", log=log_path)
        notify.wait_for("READY=1", log=log_path)
        stop(process, notify, log_path)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def assert_private_runtimes_available(devices):
    """`inference-server devices` found ONNX Runtime, OpenVINO's CPU and LiteRT in
    /opt/inference-server/lib."""
    assert devices.returncode == 0, output(devices)
    for runtime, device, library in [("onnxruntime", "cpu", "onnxruntime/libonnxruntime.so"),
                                     ("openvino", "CPU", "openvino/libopenvino_c.so"),
                                     ("tflite", "cpu", "litert/libLiteRt.so")]:
        line = next((l for l in devices.stdout.splitlines()
                     if l.split()[:3] == [runtime, device, "available"]), None)
        assert line and f"/opt/inference-server/lib/{library}" in line, output(devices)


def test_the_installed_devices_command_finds_the_runtimes(installed):
    devices = subprocess.run(
        [str(IN_SYSTEM), str(installed), "/opt/inference-server/bin/inference-server", "devices",
         "--config", "/etc/inference-server/server.toml"],
        capture_output=True, text=True, timeout=120)
    assert_private_runtimes_available(devices)
    assert pins()["onnxruntime"] in devices.stdout, output(devices)


def test_a_binary_of_the_wrong_architecture_is_refused(need_root, amd64_binary, tmp_path):
    proc = install(tmp_path / "root", "--arch", "arm64", "--binary", str(amd64_binary))
    assert proc.returncode != 0, output(proc)
    assert "is not an arm64 executable" in proc.stderr, output(proc)
    assert not (tmp_path / "root" / "opt").exists(), "nothing installed"
    proc = install(tmp_path / "root", "--arch", "riscv64")
    assert proc.returncode != 0 and "give amd64 or arm64" in proc.stderr, output(proc)


def test_reinstall_keeps_settings_and_models_and_uninstall_removes_the_rest(
        need_root, amd64_binary, installed, tmp_path):
    root = tmp_path / "root"
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    # Offline install: the wheels the first install downloaded, from a folder.
    subprocess.run([str(PYTHON), "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                    "--dest", str(wheels), *(f"{k}=={v}" for k, v in pins().items())],
                   check=True, timeout=600)
    proc = install(root, "--binary", str(amd64_binary), "--wheels", str(wheels))
    assert proc.returncode == 0, output(proc)
    config = root / "etc" / "inference-server" / "server.toml"
    config.write_text(config.read_text().replace('log_level = "info"', 'log_level = "debug"'))
    extra = root / "var" / "lib" / "inference-server" / "models" / "mine"
    extra.mkdir()
    proc = install(root, "--binary", str(amd64_binary), "--wheels", str(wheels))
    assert proc.returncode == 0, output(proc)
    assert "keeping the existing /etc/inference-server/server.toml" in proc.stdout
    assert 'log_level = "debug"' in config.read_text() and extra.is_dir()

    proc = subprocess.run(["bash", str(UNINSTALL), "--root", str(root)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, output(proc)
    assert not (root / "opt" / "inference-server").exists()
    for path in MANIFEST:
        assert not (root / path.lstrip("/")).exists(), path
    assert config.is_file() and extra.is_dir(), "settings and models are kept without --purge"
    proc = subprocess.run(["bash", str(UNINSTALL), "--root", str(root)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode != 0 and "nothing installed" in proc.stderr, output(proc)

    proc = install(root, "--binary", str(amd64_binary), "--wheels", str(wheels))
    assert proc.returncode == 0, output(proc)
    proc = subprocess.run(["bash", str(UNINSTALL), "--root", str(root), "--purge"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, output(proc)
    assert not (root / "etc" / "inference-server").exists()
    assert not (root / "var" / "lib" / "inference-server").exists()
    assert "inference-server:" not in (root / "etc" / "passwd").read_text()


@pytest.fixture(scope="module")
def arm64_binary():
    value = os.environ.get("INFERENCE_SERVER_ARM64_BIN", "").strip()
    default = ROOT / "target" / "aarch64-unknown-linux-gnu" / "debug" / "inference-server"
    path = Path(value) if value else default
    if not path.is_file():
        pytest.fail(f"{path} is missing: scripts/test.sh cross-builds it (cargo build -p "
                    "inference-server --target aarch64-unknown-linux-gnu), or set "
                    "INFERENCE_SERVER_ARM64_BIN")
    return path


def test_an_arm64_install_serves_under_qemu(need_root, arm64_binary, tmp_path):
    if shutil.which("qemu-aarch64") is None:
        pytest.fail("qemu-aarch64 is missing: apt-get install qemu-user (scripts/setup.sh does)")
    root = tmp_path / "arm64-root"
    proc = install(root, "--arch", "arm64", "--binary", str(arm64_binary))
    assert proc.returncode == 0, output(proc)
    opt = root / "opt" / "inference-server"
    for library in [opt / "bin" / "inference-server",
                    opt / "lib" / "onnxruntime" / f"libonnxruntime.so.{pins()['onnxruntime']}",
                    next((opt / "lib" / "openvino").glob("libopenvino_c.so*"))]:
        assert elf_machine(library) == ELF_MACHINES["arm64"], library
    # A Raspberry Pi 4's /proc/cpuinfo: the runtimes read the CPU's description as they load.
    system = [str(IN_SYSTEM), "--cpuinfo", str(FAKE_PI_CPUINFO), str(root)]
    qemu = ["qemu-aarch64", "-L", "/usr/aarch64-linux-gnu"]
    devices = subprocess.run([*system, *qemu, "/opt/inference-server/bin/inference-server",
                              "devices", "--config", "/etc/inference-server/server.toml"],
                             capture_output=True, text=True, timeout=300)
    assert_private_runtimes_available(devices)
    process, notify, grpc, log_path = start_installed_service(
        root, tmp_path, runner=qemu,
        system_options=["--cpuinfo", str(FAKE_PI_CPUINFO)])
    try:
        notify.wait_for("READY=1", timeout=300, log=log_path)
        predicted, label = infer_digits(grpc)
        assert predicted == label, log_path.read_text()
        stop(process, notify, log_path)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
