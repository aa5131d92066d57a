"""docker/ (the server and client images, the compose stack) and .dockerignore, checked without a
Docker engine:

- the Dockerfiles are parsed (dockerfile-parse); every COPY source exists in the build context and
  is not excluded by .dockerignore (whose patterns are matched as Docker matches them);
- the server image is assembled the way BuildKit would, from the real pieces: the install stage's
  COPYs from the build context (less .dockerignore) into a scratch stage, its exact
  `deploy/install.sh` command line run there for real (the binary: target/debug/inference-server,
  $TARGETARCH: amd64), the users stage's groupadd/useradd run with --prefix, and the final stage's
  COPYs with their --chown; then ENTRYPOINT + CMD run in that image root (a chroot in private
  mount, network and PID namespaces) as the image's USER, the HEALTHCHECK command must pass, the
  model answers ready, /metrics answers, and the compose loadgen service's command (shortened)
  runs against it;
- users, ports, entrypoint and probes agree with deploy/k8s and deploy/server.toml;
- compose.yaml validates against the Compose Specification (the schema check-jsonschema vendors),
  its bind-mounted paths exist and the services agree with each other; docker/prometheus.yml
  passes `promtool check config` and resolves its rule file to the same file on disk and in the
  container.

    .venv/bin/python -m pytest -q tests/deploy/test_docker.py       (as root, like CI)

Missing tools fail the tests (they do not skip): dockerfile-parse and check-jsonschema come from
scripts/requirements.txt, promtool from Debian's prometheus package, unshare/setpriv from
util-linux.
"""

from __future__ import annotations

import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
SERVER_DOCKERFILE = DOCKER / "server.Dockerfile"
CLIENT_DOCKERFILE = DOCKER / "client.Dockerfile"
COMPOSE = DOCKER / "compose.yaml"
PROMETHEUS_CONFIG = DOCKER / "prometheus.yml"
DEPLOY_PROMETHEUS_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
DOCKERIGNORE = ROOT / ".dockerignore"
INSTALL = ROOT / "deploy" / "install.sh"
SERVER_TOML = ROOT / "deploy" / "server.toml"
DAEMONSET = ROOT / "deploy" / "k8s" / "base" / "daemonset.yaml"
GRAFANA = ROOT / "deploy" / "grafana"
PYTHON = ROOT / ".venv" / "bin" / "python"
DEBUG_BINARIES = {"inference-server": ROOT / "target" / "debug" / "inference-server",
                  "loadgen-client": ROOT / "target" / "debug" / "loadgen-client"}
SERVICE_UID = SERVICE_GID = 10001
TEST_ARCH = "amd64"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def output(proc):
    return f"exit {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"


def need(tool, package):
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool} is not on PATH: apt-get install {package}")
    return path


# --- Dockerfiles


@dataclass
class Instruction:
    name: str          # upper case
    flags: dict        # --name=value options before the arguments
    rest: str          # the arguments after the flags, continuation lines joined
    line: int

    def exec_form(self):
        """The JSON (exec) form's list, or None for the shell form."""
        text = self.rest.strip()
        if text.startswith("["):
            return json.loads(text)
        return None


@dataclass
class Stage:
    name: str
    base: str
    platform: str | None
    instructions: list = field(default_factory=list)

    def all(self, name):
        return [i for i in self.instructions if i.name == name]

    def last(self, name):
        found = self.all(name)
        return found[-1] if found else None


@dataclass
class Dockerfile:
    path: Path
    global_args: dict
    stages: list

    def stage(self, name):
        for stage in self.stages:
            if stage.name == name:
                return stage
        pytest.fail(f"{self.path.name} has no stage named {name!r}")

    @property
    def final(self):
        return self.stages[-1]


FLAG = re.compile(r"--([a-z-]+)(?:=(\S*))?")


def split_flags(text):
    flags = {}
    rest = text.lstrip()
    while rest.startswith("--"):
        token, _, rest = rest.partition(" ")
        match = FLAG.fullmatch(token)
        assert match, f"cannot read the flag {token!r}"
        flags.setdefault(match.group(1), []).append(match.group(2) or "")
        rest = rest.lstrip()
    return {k: v if len(v) > 1 else v[0] for k, v in flags.items()}, rest


def substitute(text, values):
    """${NAME}, ${NAME:-default} and $NAME from `values` (build args), as the FROM line does."""
    def one(match):
        name = match.group(1) or match.group(3)
        default = match.group(2)
        if name in values and values[name] != "":
            return values[name]
        return default if default is not None else match.group(0)
    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)", one, text)


def parse_dockerfile(path, text=None):
    try:
        from dockerfile_parse import DockerfileParser
    except ImportError:
        pytest.fail("dockerfile-parse is missing: .venv/bin/pip install -r scripts/requirements.txt")
    data = (path.read_text() if text is None else text).encode()
    parser = DockerfileParser(fileobj=io.BytesIO(data), env_replace=False)
    global_args, stages = {}, []
    for entry in parser.structure:
        name = entry["instruction"].upper()
        if name == "COMMENT":
            continue
        flags, rest = split_flags(entry["value"])
        instruction = Instruction(name, flags, rest, entry["startline"] + 1)
        if name == "FROM":
            words = rest.split()
            base = substitute(words[0], global_args)
            stage_name = words[2] if len(words) == 3 and words[1].upper() == "AS" else str(len(stages))
            stages.append(Stage(stage_name, base, flags.get("platform")))
        elif not stages:
            assert name == "ARG", f"{path.name}:{instruction.line}: {name} before the first FROM"
            key, _, value = rest.partition("=")
            global_args[key.strip()] = value.strip()
        else:
            stages[-1].instructions.append(instruction)
    return Dockerfile(path, global_args, stages)


@pytest.fixture(scope="module")
def server_df():
    return parse_dockerfile(SERVER_DOCKERFILE)


@pytest.fixture(scope="module")
def client_df():
    return parse_dockerfile(CLIENT_DOCKERFILE)


def copy_args(instruction):
    """(sources, destination) of a COPY/ADD."""
    words = instruction.exec_form() or instruction.rest.split()
    assert len(words) >= 2, f"line {instruction.line}: COPY needs a source and a destination"
    return words[:-1], words[-1]


# --- .dockerignore, matched as Docker's patternmatcher does: patterns relative to the context
# root, `*` and `?` within one path element, `**` across elements, a pattern that matches a parent
# folder excludes everything under it, `!` re-includes, the last matching pattern wins.


class DockerIgnore:
    def __init__(self, text):
        self.patterns = []
        for line in text.splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            negate = line.startswith("!")
            pattern = os.path.normpath(line[1:] if negate else line).lstrip("/")
            self.patterns.append((negate, self._regex(pattern), line))

    @staticmethod
    def _regex(pattern):
        out, i = "", 0
        while i < len(pattern):
            c = pattern[i]
            if pattern.startswith("**", i):
                i += 2
                if pattern.startswith("/", i):
                    out += "(?:.*/)?"
                    i += 1
                else:
                    out += ".*"
                continue
            if c == "*":
                out += "[^/]*"
            elif c == "?":
                out += "[^/]"
            elif c == "[":
                end = pattern.index("]", i)
                out += pattern[i:end + 1]
                i = end
            elif c == "\\":
                i += 1
                out += re.escape(pattern[i])
            else:
                out += re.escape(c)
            i += 1
        return re.compile(out + r"\Z")

    def excluded(self, relpath):
        parts = PurePosixPath(relpath).parts
        prefixes = ["/".join(parts[:k]) for k in range(1, len(parts) + 1)]
        result = False
        for negate, regex, _ in self.patterns:
            if any(regex.match(p) for p in prefixes):
                result = not negate
        return result


@pytest.fixture(scope="module")
def dockerignore():
    assert DOCKERIGNORE.is_file(), ".dockerignore is missing at the repository root"
    return DockerIgnore(DOCKERIGNORE.read_text())


def context_files(relpath, ignore):
    """Files of the build context under `relpath` (a file or a folder), as Docker sends them."""
    path = ROOT / relpath
    if path.is_file():
        return [] if ignore.excluded(relpath) else [relpath]
    files = []
    for dirpath, dirnames, filenames in os.walk(path):
        base = Path(dirpath).relative_to(ROOT)
        for name in filenames:
            rel = (base / name).as_posix()
            if not ignore.excluded(rel):
                files.append(rel)
    return sorted(files)


def copy_source_errors(dockerfile, ignore):
    """What is wrong with the COPY/ADD sources of `dockerfile`: missing from the build context,
    outside it, excluded by .dockerignore, or naming a stage that does not come before."""
    errors = []
    seen_stages = []
    for stage in dockerfile.stages:
        for ins in stage.instructions:
            if ins.name not in ("COPY", "ADD"):
                continue
            where = f"{dockerfile.path.name}:{ins.line}"
            sources, _ = copy_args(ins)
            if "from" in ins.flags:
                if ins.flags["from"] not in seen_stages:
                    errors.append(f"{where}: --from={ins.flags['from']} is not an earlier stage")
                continue
            for source in sources:
                if re.match(r"[a-z]+://", source):
                    errors.append(f"{where}: {source}: remote sources are not reproducible")
                    continue
                rel = os.path.normpath(source).lstrip("/")
                if rel == ".." or rel.startswith("../"):
                    errors.append(f"{where}: {source} is outside the build context")
                    continue
                matches = sorted(ROOT.glob(rel)) if any(c in rel for c in "*?[") else [ROOT / rel]
                matches = [m for m in matches if m.exists()]
                if not matches:
                    errors.append(f"{where}: {source} does not exist in the build context")
                for match in matches:
                    relmatch = match.relative_to(ROOT).as_posix()
                    if ignore.excluded(relmatch):
                        errors.append(f"{where}: {source} is excluded by .dockerignore")
                    elif not context_files(relmatch, ignore):
                        errors.append(f"{where}: {source} has no file left after .dockerignore")
        seen_stages.append(stage.name)
    return errors


def test_dockerignore_keeps_builds_and_environments_out_and_the_sources_in(dockerignore):
    for path in [".git/HEAD", "target/debug/inference-server", ".venv/bin/python",
                 ".venv-perf/bin/python", "models/generated/x/config.toml",
                 "models/downloads/x.tar.gz", "output/quickstart/server.log",
                 "tests/__pycache__/x.pyc", "scripts/bench/__pycache__/y.cpython-311.pyc"]:
        assert dockerignore.excluded(path), f".dockerignore lets {path} into the build context"
    for path in ["Cargo.toml", "Cargo.lock", "server/src/main.rs", "proto/proto/grpc_service.proto",
                 "deploy/install.sh", "scripts/requirements.txt", "README.md",
                 "models/repository/digits-cnn/1/model.onnx",
                 "models/data/digits-val/val_map.txt"]:
        assert (ROOT / path).exists(), path
        assert not dockerignore.excluded(path), f".dockerignore excludes {path}, which the images need"


def test_the_dockerignore_matcher_follows_docker():
    ignore = DockerIgnore("target\n**/*.pyc\nmodels/gen*\n!models/generated/keep\n# comment\n/output/\n")
    assert ignore.excluded("target") and ignore.excluded("target/debug/x")
    assert not ignore.excluded("server/target/x"), "patterns are anchored at the context root"
    assert ignore.excluded("a.pyc") and ignore.excluded("a/b/c.pyc")
    assert ignore.excluded("models/generated/x") and not ignore.excluded("models/generated/keep")
    assert ignore.excluded("output/x") and not ignore.excluded("outputs/x")
    assert not ignore.excluded("models/repository/x")


@pytest.mark.parametrize("path", [SERVER_DOCKERFILE, CLIENT_DOCKERFILE], ids=lambda p: p.name)
def test_every_copy_source_is_in_the_build_context(path, dockerignore):
    errors = copy_source_errors(parse_dockerfile(path), dockerignore)
    assert not errors, "\n".join(errors)


def test_the_copy_check_catches_missing_ignored_and_unknown_sources(dockerignore):
    text = SERVER_DOCKERFILE.read_text() + (
        "\nCOPY models/generated /models\n"
        "COPY no/such/file /x\n"
        "COPY ../outside /y\n"
        "COPY --from=nowhere /a /b\n")
    errors = copy_source_errors(parse_dockerfile(SERVER_DOCKERFILE, text), dockerignore)
    assert len(errors) == 4, errors
    assert "excluded by .dockerignore" in errors[0]
    assert "does not exist" in errors[1]
    assert "outside the build context" in errors[2]
    assert "not an earlier stage" in errors[3]


# --- Base images, toolchain, stages


def workspace():
    return tomllib.loads((ROOT / "Cargo.toml").read_text())


def version_tuple(text):
    return tuple(int(x) for x in text.split("."))


@pytest.mark.parametrize("path", [SERVER_DOCKERFILE, CLIENT_DOCKERFILE], ids=lambda p: p.name)
def test_base_images_are_pinned_bookworm_and_the_rust_toolchain_matches(path):
    df = parse_dockerfile(path)
    stage_names = [s.name for s in df.stages]
    for stage in df.stages:
        if stage.base in stage_names:
            continue
        image, _, tag = stage.base.rpartition(":")
        assert image and tag and tag != "latest" and "$" not in stage.base, (
            f"{path.name}: stage {stage.name}: base image {stage.base!r} is not pinned to a tag")
        assert "bookworm" in tag, (f"{path.name}: {stage.base}: every stage is Debian bookworm "
                                   "(glibc 2.36: what the binary links against is what runs it)")
    build = df.stage("build")
    match = re.fullmatch(r"rust:(\d+\.\d+(?:\.\d+)?)-bookworm", build.base)
    assert match, f"{path.name}: the build stage's base {build.base} is not rust:<version>-bookworm"
    image_rust = version_tuple(match.group(1))
    minimum = version_tuple(workspace()["workspace"]["package"]["rust-version"])
    assert image_rust >= minimum, f"{build.base} is older than the workspace's rust-version"
    rustc = shutil.which("rustc") or str(Path.home() / ".cargo" / "bin" / "rustc")
    if not Path(rustc).exists():
        pytest.fail("rustc is not on PATH (the image's Rust must match the workspace's toolchain)")
    local = re.search(r"rustc (\d+)\.(\d+)", subprocess.run(
        [rustc, "--version"], capture_output=True, text=True, check=True).stdout)
    assert image_rust[:2] == (int(local.group(1)), int(local.group(2))), (
        f"{path.name}: RUST_VERSION {match.group(1)} is not the toolchain the workspace is built "
        f"and tested with ({local.group(0)}): change ARG RUST_VERSION")


@pytest.mark.parametrize("path,package", [(SERVER_DOCKERFILE, "inference-server"),
                                          (CLIENT_DOCKERFILE, "loadgen-client")],
                         ids=lambda p: getattr(p, "name", p))
def test_the_build_stage_cross_compiles_the_workspace_for_targetarch(path, package):
    df = parse_dockerfile(path)
    build = df.stage("build")
    assert build.platform == "$BUILDPLATFORM", "the build stage runs on the build machine's platform"
    assert "TARGETARCH" in [i.rest.strip() for i in build.all("ARG")]
    # The whole workspace is copied: cargo loads every member to build one.
    copied = set()
    for ins in build.all("COPY"):
        sources, _ = copy_args(ins)
        copied.update(os.path.normpath(s) for s in sources)
    members = workspace()["workspace"]["members"]
    missing = {"Cargo.toml", "Cargo.lock", *members} - copied
    assert not missing, f"{path.name}: the build stage does not copy {sorted(missing)}"
    run = " ".join(i.rest for i in build.all("RUN"))
    assert re.search(rf"cargo build --release --locked -p {package} --target \"\$triple\"", run), run
    for triple, arch, linker in [("aarch64-unknown-linux-gnu", "arm64", "aarch64-linux-gnu-gcc"),
                                 ("x86_64-unknown-linux-gnu", "amd64", "x86_64-linux-gnu-gcc")]:
        assert re.search(rf"{arch}\) triple={triple}", run), f"no triple for {arch}"
        env = " ".join(i.rest for i in build.all("ENV"))
        var = "CARGO_TARGET_" + triple.upper().replace("-", "_") + "_LINKER"
        assert f"{var}={linker}" in env, f"{path.name}: {var} is not set to {linker}"
        assert f"CC_{triple.replace('-', '_')}={linker}" in env, "zstd-sys compiles C for the target"
    # No stage but the final one runs on the target platform, and that one runs nothing: no QEMU.
    for stage in df.stages[:-1]:
        assert stage.platform == "$BUILDPLATFORM", f"{path.name}: stage {stage.name} would be emulated"
    assert df.final.platform is None
    assert not df.final.all("RUN"), f"{path.name}: the final stage has a RUN (it would need emulation)"


def built_binary(df, destination):
    """The host binary standing in for the build stage's output at `destination`."""
    run = " ".join(i.rest for i in df.stage("build").all("RUN"))
    match = re.search(rf'install -D -m 0755 "target/\$triple/release/([a-z-]+)" '
                      rf'{re.escape(destination)}\b', run)
    assert match, f"{df.path.name}: the build stage does not install a release binary at {destination}"
    binary = DEBUG_BINARIES[match.group(1)]
    if not binary.is_file():
        pytest.fail(f"{binary} is missing: cargo build -p {match.group(1)}")
    return binary


# --- install.sh's options


def install_options():
    proc = subprocess.run(["bash", str(INSTALL), "--help"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, output(proc)
    return set(re.findall(r"\[(--[a-z-]+)", proc.stdout))


def install_command(df):
    """The install stage's install.sh argv (shell words) and its RUN instruction."""
    runs = [i for i in df.stage("install").all("RUN") if "install.sh" in i.rest]
    assert len(runs) == 1, "the install stage runs deploy/install.sh exactly once"
    argv = shlex.split(runs[0].rest)
    assert not {"&&", "||", ";", "|"} & set(argv) and not any(";" in a for a in argv), (
        f"the install.sh RUN is one command, with nothing before or after it: {runs[0].rest}")
    return argv, runs[0]


def option_errors(argv, accepted):
    errors = []
    for word in argv[1:]:
        if word.startswith("--") and word not in accepted:
            errors.append(f"install.sh does not accept {word} (it accepts {sorted(accepted)})")
    return errors


def test_the_install_stage_runs_install_sh_with_options_it_accepts(server_df):
    accepted = install_options()
    assert {"--root", "--arch", "--binary", "--wheels", "--python"} <= accepted, accepted
    argv, _ = install_command(server_df)
    assert argv[0] == "deploy/install.sh", argv
    assert not option_errors(argv, accepted), option_errors(argv, accepted)
    options = dict(zip(argv[1::2], argv[2::2]))
    assert options.get("--root") == "/staging", argv
    assert options.get("--arch") == "$TARGETARCH", "the wheels and the ELF check follow TARGETARCH"
    assert "TARGETARCH" in [i.rest.strip() for i in server_df.stage("install").all("ARG")]
    # --binary is what the build stage produced, copied in.
    copies = {copy_args(i)[1]: copy_args(i)[0] for i in server_df.stage("install").all("COPY")
              if i.flags.get("from") == "build"}
    assert options.get("--binary") in copies, f"--binary is not a COPY --from=build destination: {copies}"
    built_binary(server_df, copies[options["--binary"]][0])
    # What install.sh needs to run at all in a slim image.
    apt = " ".join(i.rest for i in server_df.stage("install").all("RUN") if "apt-get" in i.rest)
    for package in ("python3", "python3-pip", "systemd-standalone-sysusers", "ca-certificates"):
        assert re.search(rf"(?<![\w-]){re.escape(package)}(?![\w-])", apt), f"{package} is not installed"


def test_the_option_check_rejects_what_install_sh_does_not_know():
    assert option_errors(["deploy/install.sh", "--root", "/s", "--target", "x"], install_options())


# --- The server image, assembled


def own(path, chown, source):
    if os.geteuid() != 0:
        return
    if chown is not None:
        uid, gid = chown
    else:
        info = source.lstat()
        uid, gid = info.st_uid, info.st_gid
    os.lchown(path, uid, gid)


def copy_entry(source, dest, chown, keep=lambda p: True):
    """Copies `source` (a file, link or folder) to `dest` as COPY does: modes kept, ownership
    `chown` or else the source's; `keep(source)` filters (.dockerignore)."""
    if not keep(source):
        return
    if source.is_symlink():
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.readlink(source), dest)
    elif source.is_dir():
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copystat(source, dest)
        for child in sorted(source.iterdir()):
            copy_entry(child, dest / child.name, chown, keep)
    else:
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, dest)
    own(dest, chown, source)


def parse_chown(value):
    if value is None:
        return None
    user, _, group = value.partition(":")
    assert user.isdigit() and group.isdigit(), f"--chown={value}: give numeric ids"
    return int(user), int(group)


def inside(fs_root, path):
    return fs_root / str(path).lstrip("/")


def apply_copy(ins, stage_root, workdir, sources_root, ignore=None, from_build=None):
    """COPY `ins` into the stage filesystem at `stage_root`, from another stage's filesystem
    (`sources_root`), the build context (`ignore` set) or the build stage's binaries."""
    sources, dest = copy_args(ins)
    dest_path = dest if dest.startswith("/") else os.path.join(workdir, dest)
    into_dir = dest.endswith("/") or len(sources) > 1
    chown = parse_chown(ins.flags.get("chown"))
    if ignore is not None and chown is None:
        chown = (0, 0)  # files from the build context are root's unless --chown says otherwise
    for source in sources:
        if from_build is not None:
            real = from_build(source)
        elif ignore is not None:
            real = ROOT / os.path.normpath(source)
        else:
            real = inside(sources_root, source)
        assert real.exists(), f"line {ins.line}: COPY source {source} does not exist ({real})"
        if real.is_dir():
            target = inside(stage_root, dest_path)
            target.mkdir(parents=True, exist_ok=True)
            shutil.copystat(real, target)
            own(target, chown, real)
            def keep(p):
                return ignore is None or not ignore.excluded(p.relative_to(ROOT).as_posix())
            for child in sorted(real.iterdir()):
                copy_entry(child, target / child.name, chown, keep)
        else:
            target = inside(stage_root, os.path.join(dest_path, real.name) if into_dir else dest_path)
            copy_entry(real, target, chown)


def users_base(root):
    """/etc/passwd, group, shadow and gshadow as a fresh Debian image has them (base-passwd)."""
    etc = root / "etc"
    etc.mkdir(parents=True)
    passwd = Path("/usr/share/base-passwd/passwd.master").read_text()
    group = Path("/usr/share/base-passwd/group.master").read_text()
    (etc / "passwd").write_text(passwd.replace(":*:", ":x:"))
    (etc / "group").write_text(group.replace(":*:", ":x:"))
    (etc / "shadow").write_text("".join(f"{l.split(':')[0]}:*:19000:0:99999:7:::\n"
                                        for l in passwd.splitlines()))
    (etc / "gshadow").write_text("".join(f"{l.split(':')[0]}:*::\n" for l in group.splitlines()))
    for name in ("shadow", "gshadow"):
        os.chmod(etc / name, 0o640)


def run_users_stage(stage, root):
    """Runs the stage's groupadd/useradd/install commands against the filesystem at `root`."""
    users_base(root)
    for ins in stage.all("RUN"):
        words = shlex.split(ins.rest)
        commands, current = [], []
        for word in words:
            if word == "&&":
                commands.append(current)
                current = []
            else:
                current.append(word)
        commands.append(current)
        for argv in commands:
            if argv[0] in ("groupadd", "useradd"):
                argv = [argv[0], "--prefix", str(root), *argv[1:]]
            elif argv[0] == "install":
                mapped, i = ["install"], 1
                while i < len(argv):
                    if argv[i] in ("-m", "-o", "-g"):
                        mapped += argv[i:i + 2]
                        i += 2
                        continue
                    mapped.append(str(inside(root, argv[i])) if argv[i].startswith("/") else argv[i])
                    i += 1
                argv = mapped
            else:
                pytest.fail(f"the users stage runs {argv[0]}, which this test cannot replay")
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
            assert proc.returncode == 0, output(proc)


def passwd_entry(root, name):
    for line in inside(root, "/etc/passwd").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == name:
            return int(fields[2]), int(fields[3])
    return None


def group_id(root, name):
    for line in inside(root, "/etc/group").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == name:
            return int(fields[2])
    return None


@pytest.fixture(scope="module")
def need_root():
    if os.geteuid() != 0:
        pytest.fail("tests/deploy/test_docker.py replays the image's build (chown, useradd "
                    "--prefix) and runs it in namespaces, which needs root (CI runs as root)")


@dataclass
class Image:
    root: Path                       # the final stage's filesystem
    install_root: Path               # the install stage's filesystem (install.sh wrote /staging)
    install_proc: subprocess.CompletedProcess
    user: str = ""
    workdir: str = "/"
    env: dict = field(default_factory=dict)
    entrypoint: list = field(default_factory=list)
    cmd: list = field(default_factory=list)
    healthcheck: list | None = None
    exposed: set = field(default_factory=set)


@pytest.fixture(scope="module")
def server_image(need_root, server_df, dockerignore, tmp_path_factory):
    """The server image's filesystem, assembled from the Dockerfile's own instructions."""
    names = [s.name for s in server_df.stages]
    assert names[:3] == ["build", "install", "users"], names
    fs = {name: tmp_path_factory.mktemp(f"stage-{name}") for name in ("install", "users", "final")}

    # install: COPYs, then install.sh exactly as the RUN has it.
    install = server_df.stage("install")
    workdir = "/"
    for ins in install.instructions:
        if ins.name == "WORKDIR":
            workdir = os.path.join(workdir, ins.rest.strip())
            inside(fs["install"], workdir).mkdir(parents=True, exist_ok=True)
        elif ins.name == "COPY":
            if ins.flags.get("from") == "build":
                apply_copy(ins, fs["install"], workdir, None,
                           from_build=lambda source: built_binary(server_df, source))
            else:
                assert "from" not in ins.flags, ins
                apply_copy(ins, fs["install"], workdir, None, ignore=dockerignore)
    argv, _ = install_command(server_df)
    build_args = {"TARGETARCH": TEST_ARCH}
    argv = [substitute(word, build_args) for word in argv]
    mapped = [argv[0]]
    for option, value in zip(argv[1::2], argv[2::2]):
        if option in ("--root", "--binary", "--wheels") and value.startswith("/"):
            value = str(inside(fs["install"], value))
        mapped += [option, value]
    if len(argv) % 2 == 0:
        mapped.append(argv[-1])  # a trailing flag (--enable)
    if "--python" not in mapped:
        mapped += ["--python", str(PYTHON)]
    cwd = inside(fs["install"], workdir)
    proc = subprocess.run(mapped, cwd=cwd, capture_output=True, text=True, timeout=900,
                          env={**os.environ, **build_args})
    assert proc.returncode == 0, f"{shlex.join(mapped)} (in {cwd})\n{output(proc)}"

    run_users_stage(server_df.stage("users"), fs["users"])

    image = Image(fs["final"], fs["install"], proc)
    for ins in server_df.final.instructions:
        if ins.name == "COPY":
            source_stage = ins.flags.get("from")
            assert source_stage in ("install", "users"), f"line {ins.line}: COPY from {source_stage}"
            apply_copy(ins, fs["final"], image.workdir, fs[source_stage])
        elif ins.name == "USER":
            image.user = ins.rest.strip()
        elif ins.name == "WORKDIR":
            image.workdir = os.path.join(image.workdir, ins.rest.strip())
        elif ins.name == "ENV":
            for word in shlex.split(ins.rest):
                key, _, value = word.partition("=")
                image.env[key] = value
        elif ins.name == "ENTRYPOINT":
            image.entrypoint = ins.exec_form()
        elif ins.name == "CMD":
            image.cmd = ins.exec_form()
        elif ins.name == "HEALTHCHECK":
            assert ins.rest.startswith("CMD "), "HEALTHCHECK CMD in exec form"
            image.healthcheck = json.loads(ins.rest[len("CMD "):])
        elif ins.name == "EXPOSE":
            image.exposed |= {int(p.split("/")[0]) for p in ins.rest.split()}
    return image


def test_install_sh_ran_into_the_staging_root(server_image):
    assert "nothing activated" in server_image.install_proc.stdout, output(server_image.install_proc)
    for path in ["/opt/inference-server/bin/inference-server",
                 "/etc/inference-server/server.toml",
                 "/var/lib/inference-server/models/digits-cnn/config.toml"]:
        assert inside(server_image.install_root, "/staging" + path).exists(), path


def test_the_final_stage_copies_what_the_install_stage_made(server_df, server_image):
    copied = []
    for ins in server_df.final.all("COPY"):
        if ins.flags.get("from") == "install":
            sources, dest = copy_args(ins)
            for source in sources:
                assert source.startswith("/staging/"), source
                assert inside(server_image.install_root, source).exists(), f"{source} is not in /staging"
                copied.append(source[len("/staging"):])
                assert dest == source[len("/staging"):], f"{source} lands at {dest}, not its path"
    assert sorted(copied) == ["/etc/inference-server", "/opt/inference-server",
                              "/var/lib/inference-server"], copied


def test_entrypoint_and_cmd_name_files_of_the_image(server_image):
    image = server_image
    assert image.entrypoint == ["/opt/inference-server/bin/inference-server"], image.entrypoint
    binary = inside(image.root, image.entrypoint[0])
    assert binary.is_file() and os.access(binary, os.X_OK), binary
    assert image.cmd[0] == "--config" and len(image.cmd) == 2, image.cmd
    config_path = inside(image.root, image.cmd[1])
    assert config_path.is_file(), image.cmd
    config = tomllib.loads(config_path.read_text())
    assert inside(image.root, config["model_repository"]).is_dir(), config["model_repository"]
    for runtime in ("onnxruntime", "openvino"):
        assert inside(image.root, config[runtime]["library"]).is_dir(), config[runtime]
    for key in ("grpc_addr", "http_addr", "metrics_addr"):
        host, _, port = config[key].rpartition(":")
        assert host == "0.0.0.0", f"{key} = {config[key]}: a container must listen on every interface"
        assert int(port) in image.exposed, f"{key} port {port} is not EXPOSEd ({image.exposed})"


def readable_by(root, path, uid, gid, want):
    """Whether uid/gid (no other groups) has the access `want` (r, w, x letters) to `path` of the
    image at `root`, and search permission on every folder of the image above it."""
    def allowed(p, bits):
        info = p.lstat()
        shift = 6 if info.st_uid == uid else 3 if info.st_gid == gid else 0
        return all(info.st_mode >> shift & {"r": 4, "w": 2, "x": 1}[b] for b in bits)
    parents = [p for p in path.parents if root in p.parents]  # the image's / is the base image's
    return all(allowed(p, "x") for p in parents) and allowed(path, want)


def test_the_image_runs_as_the_numeric_user_of_the_kubernetes_manifests(server_df, server_image):
    image = server_image
    assert re.fullmatch(r"\d+:\d+", image.user), f"USER {image.user}: give numeric uid:gid"
    uid, gid = (int(x) for x in image.user.split(":"))
    assert uid != 0 and gid != 0, "the image runs as root"
    docs = [d for d in yaml.safe_load_all(DAEMONSET.read_text()) if d]
    daemonset = next(d for d in docs if d["kind"] == "DaemonSet")
    pod = daemonset["spec"]["template"]["spec"]
    assert (pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"]) == (uid, gid)
    assert (uid, gid) == (SERVICE_UID, SERVICE_GID)
    container = pod["containers"][0]
    assert container["command"] == image.entrypoint and container["args"] == image.cmd, (
        "the DaemonSet starts the image the way its ENTRYPOINT and CMD do")
    # The image's passwd and group, made by the users stage's own commands.
    assert passwd_entry(image.root, "inference-server") == (uid, gid)
    assert group_id(image.root, "inference-server") == gid
    assert passwd_entry(image.root, "root") == (0, 0), "the rest of passwd is Debian's"
    # That user can run the binary, load the runtimes, read the settings and the models; it
    # cannot change them.
    root = image.root
    assert readable_by(root, inside(root, image.entrypoint[0]), uid, gid, "rx")
    assert readable_by(root, inside(root, image.cmd[1]), uid, gid, "r")
    assert not readable_by(root, inside(root, image.cmd[1]), uid, gid, "w")
    models = inside(root, "/var/lib/inference-server/models")
    for path in [models, *models.rglob("*")]:
        assert readable_by(root, path, uid, gid, "rx" if path.is_dir() else "r"), path
        assert not readable_by(root, path, uid, gid, "w"), path
    for library in inside(root, "/opt/inference-server/lib").rglob("*.so*"):
        assert readable_by(root, library, uid, gid, "r"), library


def test_the_image_labels_name_this_version(server_df, client_df):
    package = workspace()["workspace"]["package"]
    for df in (server_df, client_df):
        assert df.global_args["VERSION"] == package["version"], "ARG VERSION is the workspace's"
        labels = " ".join(i.rest for i in df.final.all("LABEL"))
        for key in ("title", "description", "version", "licenses"):
            assert f"org.opencontainers.image.{key}=" in labels, key
        assert 'org.opencontainers.image.version="${VERSION}"' in labels
        assert f'org.opencontainers.image.licenses="{package["license"]}"' in labels


RUN_IMAGE = r"""
image=$1 spec=$2 out=$3 python=$4
set -euo pipefail
read_list() { mapfile -d '' -t "$1" < "$spec/$2"; }
read_list cmd cmd; read_list health health; read_list envs env; read_list loadgen loadgen
read -r uid gid < "$spec/user"
workdir=$(cat "$spec/workdir")
"$python" -c "$LOOPBACK_UP"
new=$(mktemp -d)
mount -t tmpfs container "$new"
for dir in usr dev proc sys; do mkdir -p "$new/$dir"; mount --rbind "/$dir" "$new/$dir"; done
mkdir -p "$new/tmp"; mount -t tmpfs tmp "$new/tmp"
for link in bin sbin lib lib64; do [ -e "/usr/$link" ] && ln -s "usr/$link" "$new/$link"; done
for entry in "$image"/*; do
    name=$(basename "$entry")
    [ -e "$new/$name" ] && continue
    mkdir -p "$new/$name"; mount --bind "$entry" "$new/$name"
done
as_user() { chroot "$new" env -i "${envs[@]}" setpriv --reuid="$uid" --regid="$gid" --clear-groups "$@"; }
# Not through as_user: $! must be the server itself (chroot, env and setpriv exec it).
chroot "$new" env -i "${envs[@]}" setpriv --reuid="$uid" --regid="$gid" --clear-groups \
    env -C "$workdir" "${cmd[@]}" >"$out/server.log" 2>&1 &
server=$!
trap 'kill -KILL $server 2>/dev/null || true' EXIT
healthy=
for i in $(seq 1 240); do
    if as_user "${health[@]}"; then healthy=$i; break; fi
    kill -0 $server 2>/dev/null || { echo "server_exited_early=1"; wait $server || echo "server_rc=$?"; exit 1; }
    sleep 0.5
done
echo "healthy_after_tries=${healthy:-never}"
[ -n "$healthy" ] || exit 1
get() {  # PORT PATH FILE
    exec 3<>"/dev/tcp/127.0.0.1/$1"
    printf 'GET %s HTTP/1.0\r\n\r\n' "$2" >&3
    cat <&3 >"$3"
    exec 3<&-
}
get 8000 /v2/models/digits-cnn/ready "$out/model_ready.txt"
get 8002 /metrics "$out/metrics.txt"
set +e
(cd "$out" && "${loadgen[@]}" >"$out/loadgen.log" 2>&1)
echo "loadgen_rc=$?"
kill -TERM $server
wait $server
echo "server_rc=$?"
"""


# A new network namespace starts with its loopback down: SIOCGIFFLAGS, then SIOCSIFFLAGS with IFF_UP
# (what `ip link set lo up` does, without needing iproute2).
LOOPBACK_UP = """
import fcntl, socket, struct
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
flags = struct.unpack("16sH14x", fcntl.ioctl(sock, 0x8913, struct.pack("16sH14x", b"lo", 0)))[1]
fcntl.ioctl(sock, 0x8914, struct.pack("16sH14x", b"lo", flags | 1))
"""


def compose():
    return yaml.safe_load(COMPOSE.read_text())


def interpolate(value, environment=None):
    """Compose's ${VAR}, ${VAR:-default}, ${VAR-default} and $$, with `environment` (default:
    nothing set, so every default applies)."""
    environment = environment or {}

    def one(match):
        if match.group(0) == "$$":
            return "$"
        name, op, default = match.group(1) or match.group(4), match.group(2), match.group(3)
        if name in environment and (environment[name] != "" or op == "-"):
            return environment[name]
        if op is None:
            pytest.fail(f"compose.yaml uses ${{{name}}} without a default")
        return default
    return re.sub(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?-)([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)",
                  one, value)


def compose_loadgen_argv(host_binary, server_host):
    """The compose loadgen service's command for the binary `host_binary`, the server at
    `server_host`, and a 3 s run instead of the service's 60 s."""
    service = compose()["services"]["loadgen"]
    argv = [str(a) for a in service["command"]]
    if "--time" in argv:
        argv[argv.index("--time") + 1] = "3"
    argv = [a.replace("//inference-server:", f"//{server_host}:") for a in argv]
    return [str(host_binary), *argv]


def test_the_image_serves_as_its_user_and_passes_its_healthcheck(server_image, tmp_path):
    for tool, package in [("unshare", "util-linux"), ("setpriv", "util-linux"),
                          ("chroot", "coreutils")]:
        need(tool, package)
    image = server_image
    assert image.healthcheck and image.healthcheck[0] == "bash", (
        "the HEALTHCHECK uses only what a slim image has (bash's /dev/tcp; no curl)")
    spec, out = tmp_path / "spec", tmp_path / "out"
    spec.mkdir()
    out.mkdir()
    uid, gid = image.user.split(":")
    env = {"PATH": DEFAULT_PATH, "HOME": "/", **image.env}

    def write_list(name, items):
        (spec / name).write_bytes(b"".join(str(i).encode() + b"\0" for i in items))
    write_list("cmd", image.entrypoint + image.cmd)
    write_list("health", image.healthcheck)
    write_list("env", [f"{k}={v}" for k, v in env.items()])
    loadgen = DEBUG_BINARIES["loadgen-client"]
    if not loadgen.is_file():
        pytest.fail(f"{loadgen} is missing: cargo build -p loadgen-client")
    write_list("loadgen", compose_loadgen_argv(loadgen, "127.0.0.1"))
    (spec / "user").write_text(f"{uid} {gid}\n")
    (spec / "workdir").write_text(image.workdir)
    proc = subprocess.run(
        ["unshare", "--mount", "--net", "--pid", "--fork", "--kill-child", "--mount-proc",
         "bash", "-c", RUN_IMAGE, "container", str(image.root), str(spec), str(out), sys.executable],
        capture_output=True, text=True, timeout=600, env={**os.environ, "LOOPBACK_UP": LOOPBACK_UP})
    server_log = (out / "server.log").read_text() if (out / "server.log").exists() else ""
    report = f"{output(proc)}\n--- server log\n{server_log[-4000:]}"
    results = dict(re.findall(r"^(\w+)=(\S+)$", proc.stdout, re.M))
    assert results.get("healthy_after_tries", "never") != "never", report
    assert (out / "model_ready.txt").read_text().startswith("HTTP/1.0 200"), report
    metrics = (out / "metrics.txt").read_text()
    assert metrics.startswith("HTTP/1.0 200") and 'model="digits-cnn"' in metrics, metrics[:2000]
    loadgen_log = (out / "loadgen.log").read_text()
    assert results.get("loadgen_rc") == "0", f"{report}\n--- loadgen\n{loadgen_log[-3000:]}"
    assert (out / "output" / "mlperf_log_summary.txt").is_file(), loadgen_log[-3000:]
    assert "Device telemetry" in loadgen_log, "the loadgen read the server's /metrics"
    assert results.get("server_rc") == "0", report
    assert proc.returncode == 0, report
    assert "path=/opt/inference-server/lib/onnxruntime/" in server_log, server_log[-4000:]
    assert "INFO inference_server: stopped" in server_log, "drained and stopped on SIGTERM"


# --- The client image


def test_the_client_image_runs_loadgen_client_as_its_own_user(client_df, tmp_path, need_root):
    final = client_df.final
    user = final.last("USER").rest.strip()
    assert re.fullmatch(r"\d+:\d+", user), f"USER {user}: give numeric uid:gid"
    uid, gid = (int(x) for x in user.split(":"))
    assert uid != 0 and gid != 0
    entrypoint = final.last("ENTRYPOINT").exec_form()
    assert entrypoint and Path(entrypoint[0]).name == "loadgen-client", entrypoint
    copies = {copy_args(i)[1]: (copy_args(i)[0], i) for i in final.all("COPY")}
    sources, _ = copies[entrypoint[0]]
    assert copies[entrypoint[0]][1].flags.get("from") == "build"
    built = built_binary(client_df, sources[0])
    cmd = final.last("CMD").exec_form()
    proc = subprocess.run([str(built), *cmd], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, output(proc)
    workdir = final.last("WORKDIR").rest.strip()
    assert workdir == "/work", workdir
    # The users stage's commands make the user and its output folder.
    users = tmp_path / "users"
    run_users_stage(client_df.stage("users"), users)
    name = next(line.split(":")[0] for line in (users / "etc" / "passwd").read_text().splitlines()
                if line.split(":")[2] == str(uid))
    assert passwd_entry(users, name) == (uid, gid)
    output_dir = inside(users, workdir) / "output"
    assert output_dir.is_dir()
    work_copy = next(i for i in final.all("COPY") if copy_args(i)[1] == workdir)
    assert work_copy.flags.get("from") == "users"
    assert parse_chown(work_copy.flags.get("chown")) == (uid, gid), "the log folder is the user's"
    # The default --output-dir is `output`, i.e. WORKDIR/output, where compose mounts its volume.
    help_text = subprocess.run([str(built), "--help"], capture_output=True, text=True).stdout
    assert re.search(r"--output-dir <DIR>\s+.*\[default: output\]", help_text), help_text
    mounts = [v for v in compose()["services"]["loadgen"]["volumes"]]
    assert any(str(v).endswith(f":{workdir}/output") for v in mounts), mounts
    # The digits images for --dataset imagenet.
    data = next(copy_args(i) for i in final.all("COPY") if "from" not in i.flags)
    assert data[0] == ["models/data/digits-val"] and (ROOT / data[0][0] / "val_map.txt").is_file()


# --- compose.yaml


def check_jsonschema():
    exe = Path(sys.executable).parent / "check-jsonschema"
    path = str(exe) if exe.exists() else shutil.which("check-jsonschema")
    if path is None:
        pytest.fail("check-jsonschema is missing (it vendors the Compose Specification schema): "
                    ".venv/bin/pip install -r scripts/requirements.txt")
    return path


def validate_compose(path):
    return subprocess.run([check_jsonschema(), "--builtin-schema", "vendor.compose-spec", str(path)],
                          capture_output=True, text=True, timeout=120)


def test_compose_validates_against_the_compose_specification():
    proc = validate_compose(COMPOSE)
    assert proc.returncode == 0, output(proc)


def test_the_compose_validation_rejects_a_broken_file(tmp_path):
    broken = COMPOSE.read_text().replace("    read_only: true\n", "    readonly: true\n", 1)
    assert broken != COMPOSE.read_text()
    (tmp_path / "compose.yaml").write_text(broken)
    proc = validate_compose(tmp_path / "compose.yaml")
    assert proc.returncode != 0 and "readonly" in proc.stdout, output(proc)


def bind_mounts(service):
    """(host path, container path) of a service's bind mounts, host paths resolved from docker/."""
    mounts = []
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, _, rest = volume.partition(":")
            target = rest.split(":")[0]
            if not (source.startswith(".") or source.startswith("/") or "$" in source):
                continue  # a named volume
        else:
            if volume["type"] != "bind":
                continue
            source, target = volume["source"], volume["target"]
        mounts.append(((DOCKER / interpolate(source)).resolve(), target))
    return mounts


def test_every_bind_mounted_path_and_build_context_exists():
    data = compose()
    named = set(data.get("volumes", {}))
    for name, service in data["services"].items():
        for host, target in bind_mounts(service):
            assert host.exists(), f"{name}: bind mount {host} -> {target} does not exist"
        for volume in service.get("volumes", []):
            if isinstance(volume, str) and not volume.startswith((".", "/", "$")):
                assert volume.split(":")[0] in named, f"{name}: volume {volume} is not declared"
            elif isinstance(volume, dict) and volume["type"] == "bind":
                assert volume.get("bind", {}).get("create_host_path") is False, (
                    f"{name}: {volume['source']}: a missing host path must be an error, not an "
                    "empty folder made by the engine")
        if "build" in service:
            context = (DOCKER / service["build"]["context"]).resolve()
            assert context == ROOT, f"{name}: the build context is the repository root"
            assert (context / service["build"]["dockerfile"]).is_file()
        else:
            image, _, tag = service["image"].rpartition(":")
            assert image and tag and tag != "latest", f"{name}: image {service['image']} is not pinned"


def server_ports():
    config = tomllib.loads(SERVER_TOML.read_text())
    return {key: int(config[key].rpartition(":")[2]) for key in ("grpc_addr", "http_addr", "metrics_addr")}


def test_the_server_service_publishes_its_ports_and_mounts_the_repository(server_df):
    service = compose()["services"]["inference-server"]
    assert service["build"]["dockerfile"] == "docker/server.Dockerfile"
    published = {}
    for port in service["ports"]:
        host, _, container = str(port).rpartition(":")
        published[int(container)] = int(host)
    ports = server_ports()
    assert set(published) == set(ports.values()) == {8000, 8001, 8002}, published
    assert all(published[p] == p for p in published), "published on the same port numbers"
    exposed = {int(p) for i in server_df.final.all("EXPOSE") for p in i.rest.split()}
    assert exposed == set(ports.values())
    model_repository = tomllib.loads(SERVER_TOML.read_text())["model_repository"]
    mounts = dict((t, h) for h, t in bind_mounts(service))
    assert mounts.get(model_repository) == ROOT / "models" / "repository", mounts
    volume = next(v for v in service["volumes"] if v["target"] == model_repository)
    assert volume.get("read_only") is True
    assert (ROOT / "models" / "repository" / "digits-cnn" / "config.toml").is_file()
    # Compose's docker stop must outlast the drain.
    grace = tomllib.loads(SERVER_TOML.read_text())["shutdown_grace"]
    assert int(service["stop_grace_period"].rstrip("s")) > grace


def test_the_loadgen_service_benchmarks_the_server_service():
    data = compose()
    service = data["services"]["loadgen"]
    assert service["profiles"] == ["bench"], "the benchmark runs only when asked for"
    assert service["build"]["dockerfile"] == "docker/client.Dockerfile"
    assert service["depends_on"]["inference-server"]["condition"] == "service_healthy"
    assert parse_dockerfile(SERVER_DOCKERFILE).final.all("HEALTHCHECK"), (
        "service_healthy needs the server image's HEALTHCHECK")
    argv = [str(a) for a in service["command"]]
    options = dict(zip(argv[::2], argv[1::2]))
    ports = server_ports()
    assert options["--endpoint"] == f"http://inference-server:{ports['grpc_addr']}"
    assert options["--server-metrics"] == f"http://inference-server:{ports['metrics_addr']}/metrics"
    assert options["--scenario"] == "Server" and options["--profile"] == "digits-cnn"
    # loadgen-client's own parser accepts the command (clap checks every option before --help).
    binary = DEBUG_BINARIES["loadgen-client"]
    if not binary.is_file():
        pytest.fail(f"{binary} is missing: cargo build -p loadgen-client")
    proc = subprocess.run([str(binary), *argv, "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, output(proc)


# --- Prometheus and Grafana in compose


@pytest.fixture(scope="session")
def promtool():
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is not on PATH; it comes with Prometheus: apt-get install prometheus")
    return path


def test_the_compose_prometheus_config_is_valid_on_disk(promtool):
    proc = subprocess.run([promtool, "check", "config", str(PROMETHEUS_CONFIG.relative_to(ROOT))],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, output(proc)
    text = proc.stdout + proc.stderr
    assert "1 rule files found" in text and "deploy/prometheus/alerts.yml" in text, text


def test_the_compose_prometheus_config_scrapes_the_server_service():
    mine = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    deployed = yaml.safe_load(DEPLOY_PROMETHEUS_CONFIG.read_text())
    assert mine["global"] == deployed["global"], "the same intervals as deploy/prometheus"
    [job] = mine["scrape_configs"]
    [deployed_job] = deployed["scrape_configs"]
    assert job["job_name"] == "inference-server", "the alerts and the dashboard select this job"
    assert {k: v for k, v in job.items() if k != "static_configs"} == {
        k: v for k, v in deployed_job.items() if k != "static_configs"}
    targets = [t for c in job["static_configs"] for t in c["targets"]]
    assert targets == [f"inference-server:{server_ports()['metrics_addr']}"], targets
    assert "inference-server" in compose()["services"]
    # The same rule files as deploy/prometheus.
    assert [Path(r).name for r in mine["rule_files"]] == [Path(r).name for r in deployed["rule_files"]]
    for rule in mine["rule_files"]:
        assert (PROMETHEUS_CONFIG.parent / rule).resolve() == (
            DEPLOY_PROMETHEUS_CONFIG.parent / Path(rule).name).resolve()


def test_prometheus_finds_its_rule_file_in_the_container_at_the_same_relative_path():
    service = compose()["services"]["prometheus"]
    mounts = bind_mounts(service)
    by_host = {host: target for host, target in mounts}
    by_target = {target: host for host, target in mounts}
    flags = dict(a.split("=", 1) for a in service["command"] if "=" in a)
    config_in_container = flags["--config.file"]
    assert by_host.get(PROMETHEUS_CONFIG.resolve()) == config_in_container, (
        f"--config.file {config_in_container} is not where docker/prometheus.yml is mounted: {mounts}")
    assert flags["--storage.tsdb.path"] == "/prometheus"
    assert not any(a.startswith("--web.listen-address") for a in service["command"]), (
        "Grafana's data source expects Prometheus on its default port 9090")
    for rule in yaml.safe_load(PROMETHEUS_CONFIG.read_text())["rule_files"]:
        in_container = os.path.normpath(os.path.join(os.path.dirname(config_in_container), rule))
        on_disk = (PROMETHEUS_CONFIG.parent / rule).resolve()
        assert by_target.get(in_container) == on_disk, (
            f"rule file {rule}: in the container it is {in_container}, where "
            f"{by_target.get(in_container)} is mounted, not {on_disk}")


def test_grafana_gets_the_data_source_and_the_dashboards_of_deploy_grafana():
    data = compose()
    service = data["services"]["grafana"]
    mounts = {target: host for host, target in bind_mounts(service)}
    provisioning = GRAFANA / "provisioning"
    assert mounts["/etc/grafana/provisioning/datasources"] == provisioning / "datasources"
    assert mounts["/etc/grafana/provisioning/dashboards"] == provisioning / "dashboards"
    provider = yaml.safe_load((provisioning / "dashboards" / "inference-server.yml").read_text())
    path = provider["providers"][0]["options"]["path"]
    assert mounts[path] == GRAFANA / "dashboards", f"the provider loads {path}"
    home = service["environment"].get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")
    if home:
        assert (mounts[os.path.dirname(home)] / os.path.basename(home)).is_file(), home
    datasource = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())
    [source] = datasource["datasources"]
    assert source["url"] == "http://prometheus:9090" and source["uid"] == "prometheus"
    assert "prometheus" in data["services"], "the data source names the compose service"
