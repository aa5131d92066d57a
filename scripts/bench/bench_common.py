"""Shared helpers of the benchmarks (client_overhead.py, end_to_end.py, memory_budget.py,
load_limits.py): a server on free ports with its /proc figures (Server), snapshot binaries, and
LoadGen runs.

Runs one Server-scenario test with either LoadGen and returns the same result keys for both:
  ours     = target/release/loadgen-client (a private copy, see build_and_snapshot)
  official = scripts/bench/official_sut.py (PyPI mlcommons-loadgen 6.0.17, in the .venv)
Both read the same keys from their mlperf_log_detail.txt and, with trace=True, the per-sample issue
delay (`issue_start_ns` of each "Sample" begin event = issue time - scheduled time) from
mlperf_log_trace.json. CPU time is the child process's user+sys (getrusage), startup included.
"""
import atexit
import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
VENV_PY = os.path.join(ROOT, ".venv", "bin", "python")
OFFICIAL = os.path.join(ROOT, "scripts", "bench", "official_sut.py")
KEYS = {
    "result_validity": "validity",
    "result_completed_samples_per_sec": "completed_qps",
    "result_samples_per_second": "offline_qps",
    "result_failed_sample_count": "failed_samples",
    "result_scheduled_samples_per_sec": "scheduled_qps",
    "result_50.00_percentile_latency_ns": "p50_ns",
    "result_99.00_percentile_latency_ns": "p99_ns",
    "result_query_count": "queries",
    "early_stopping_met": "early_stopping_met",
    "result_min_duration_met": "min_duration_met",
}
ALL_RESULTS = []  # every run_test result of this process, for noise_note
SAMPLE_RE = re.compile(r'"ph":"b".*?"issue_start_ns":(-?\d+)')


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


OUTCOME_RE = re.compile(r'^inference_requests_total\{([^}]*)\}\s+([0-9.eE+-]+)', re.M)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """An inference-server on free loopback ports serving `repository`, ready once `ready_model`
    is; its CPU time, memory and descriptors read from /proc."""

    def __init__(self, binary, workdir, repository, ready_model, extra_args=(), timeout=180):
        self.grpc = f"127.0.0.1:{free_port()}"
        self.metrics = f"127.0.0.1:{free_port()}"
        self.log = open(os.path.join(workdir, "server.log"), "w")
        self.proc = subprocess.Popen(
            [binary, "--model-repository", repository, "--grpc-addr", self.grpc,
             "--metrics-addr", self.metrics, "--http-addr", f"127.0.0.1:{free_port()}", *extra_args],
            cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT)
        try:
            self.wait_ready(ready_model, timeout)
        except BaseException:
            self.stop()
            raise

    def wait_ready(self, model, timeout):
        import tritonclient.grpc as grpcclient
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"inference-server exited with {self.proc.returncode}; see {self.log.name}")
            try:
                c = grpcclient.InferenceServerClient(self.grpc)
                if c.is_model_ready(model):
                    c.close()
                    return
            except Exception:  # noqa: BLE001 - not up yet
                pass
            time.sleep(0.5)
        raise RuntimeError(f"inference-server did not make {model} ready; see {self.log.name}")

    def outcomes(self, model):
        """inference_requests_total of `model` by outcome."""
        try:
            text = urllib.request.urlopen(f"http://{self.metrics}/metrics", timeout=5).read().decode()
        except OSError:
            return {}
        out = {}
        for labels, value in OUTCOME_RE.findall(text):
            m = re.search(r'outcome="([^"]+)"', labels)
            if m and f'model="{model}"' in labels:
                out[m.group(1)] = out.get(m.group(1), 0) + float(value)
        return out

    def cpu_s(self):
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def memory_mib(self, key):
        """A /proc/PID/status memory figure (VmRSS now, VmHWM the peak so far) in MiB."""
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024
        return None

    def descriptors(self):
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()


def build_and_snapshot(build=True):
    """Builds the release binaries (unless build=False) and copies them to a private folder, so a
    concurrent `cargo build` in the shared tree cannot swap them mid-benchmark."""
    if build:
        subprocess.run(["cargo", "build", "--release", "-p", "loadgen-client", "-p", "inference-server"],
                       cwd=ROOT, check=True)
    dest = tempfile.mkdtemp(prefix="bench-bin-")
    atexit.register(shutil.rmtree, dest, True)
    out = {}
    for name in ("loadgen-client", "inference-server"):
        src = os.path.join(ROOT, "target", "release", name)
        shutil.copy2(src, os.path.join(dest, name))
        out[name] = os.path.join(dest, name)
    return out


def parse_detail(path):
    res = {}
    with open(path) as f:
        for line in f:
            if line.startswith(":::MLLOG"):
                try:
                    e = json.loads(line[len(":::MLLOG"):])
                except json.JSONDecodeError:
                    continue
                if e.get("key") in KEYS:
                    res.setdefault(KEYS[e["key"]], e["value"])
    return res


def issue_delays(trace_path):
    delays = []
    with open(trace_path) as f:
        for line in f:
            m = SAMPLE_RE.search(line)
            if m:
                delays.append(int(m.group(1)))
    delays.sort()
    return delays


def pct(sorted_vals, p):
    """Same rule for both LoadGens: element floor(n*p) of the sorted list."""
    if not sorted_vals:
        return None
    return sorted_vals[min(len(sorted_vals) - 1, int(len(sorted_vals) * p))]


def num(x):
    """A command-line number: integral values without a fraction (loadgen-client's --time takes
    whole seconds only)."""
    x = float(x)
    return str(int(x)) if x.is_integer() else repr(x)


def host_busy_s():
    """CPU seconds the whole machine has been busy (all cores), from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
    except OSError:
        return 0.0
    idle = v[3] + (v[4] if len(v) > 4 else 0)
    return (sum(v[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def run_child(cmd, timeout):
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    host0 = host_busy_s()
    t0 = time.monotonic()
    p = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                       timeout=timeout)
    wall = time.monotonic() - t0
    host = host_busy_s() - host0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return p, wall, cpu, host


def run_test(which, bins, qps, duration, outdir, trace=False, endpoint="null", timeout=None,
             extra=None):
    """One Server run. which: 'ours' | 'official'. endpoint: 'null' or 'HOST:PORT'."""
    shutil.rmtree(outdir, ignore_errors=True)
    os.makedirs(outdir, exist_ok=True)
    if which == "ours":
        cmd = [bins["loadgen-client"], "--scenario", "Server", "--qps", num(qps),
               "--time", num(duration), "--mlperf-model", "resnet50",
               "--profile", "digits-cnn", "--dataset", "synthetic", "--count", "1024",
               "--performance-sample-count", "1024", "--output-dir", outdir]
        if endpoint == "null":
            cmd += ["--endpoint", "null"]
        else:
            cmd += ["--endpoint", f"http://{endpoint}", "--model", "digits-cnn"]
        if trace:
            cmd.append("--trace")
    else:
        cmd = [VENV_PY, OFFICIAL, "--scenario", "Server", "--qps", num(qps),
               "--time", num(duration), "--model-name", "resnet50", "--total", "1024",
               "--outdir", outdir]
        if endpoint == "null":
            cmd += ["--sut", "null"]
        else:
            cmd += ["--sut", "triton", "--url", endpoint, "--model", "digits-cnn",
                    "--input", "input", "--shape", "1,8,8"]
        if trace:
            cmd.append("--trace")
    cmd += list(extra or [])
    timeout = timeout or max(120.0, duration * 20)
    try:
        p, wall, cpu, host = run_child(cmd, timeout)
    except subprocess.TimeoutExpired:
        log(f"{which} qps={qps}: timed out after {timeout}s")
        return {"validity": "TIMEOUT", "wall_s": timeout, "cmd": cmd}
    detail = os.path.join(outdir, "mlperf_log_detail.txt")
    res = parse_detail(detail) if os.path.exists(detail) else {}
    # Busy CPU of the machine during the run beyond this child's own (callers subtract what else
    # they own, e.g. the server): how much other load (other helpers' jobs) overlapped the run.
    res.update({"rc": p.returncode, "wall_s": wall, "cpu_s": cpu, "cmd": cmd, "others_cpu_s": host - cpu})
    if p.returncode != 0 or not res.get("validity"):
        res.setdefault("validity", f"ERROR(rc={p.returncode})")
        res["tail"] = p.stdout[-2000:]
        log(f"{which} qps={qps}: rc={p.returncode}\n{p.stdout[-2000:]}")
    ALL_RESULTS.append(res)
    tpath = os.path.join(outdir, "mlperf_log_trace.json")
    if trace and os.path.exists(tpath):
        d = issue_delays(tpath)
        res["issue_delay_p50_ns"] = pct(d, 0.50)
        res["issue_delay_p99_ns"] = pct(d, 0.99)
        res["traced_samples"] = len(d)
    return res


def is_valid(res):
    return res.get("validity") == "VALID"


def search_max_valid(run, start, precision=0.05, max_qps=8_000_000, bracket=None):
    """Highest target QPS whose run is VALID: doubling from `start` (or, with bracket=(lo, hi), a
    check of both ends that widens them until lo is VALID and hi is not), then bisection until
    hi/lo - 1 <= precision. `run(qps)` returns a result dict. Returns (best_valid_qps, points)."""
    points = []

    def probe(q):
        q = round(q)
        r = run(q)
        points.append((q, r))
        log(f"  qps={q}: {r.get('validity')} completed={r.get('completed_qps')} "
            f"p99={(r.get('p99_ns') or 0) / 1e6:.2f}ms wall={r.get('wall_s', 0):.1f}s")
        return is_valid(r)

    if bracket:
        lo, hi = bracket
        hi_failed = False
        while not probe(lo):
            hi, lo, hi_failed = lo, lo / 1.5, True
            if lo < 1:
                return None, points
        while not hi_failed and probe(hi):
            lo, hi = hi, hi * 2
            if hi > max_qps:
                return lo, points
    else:
        lo, hi = None, start
        while probe(hi):
            lo, hi = hi, hi * 2
            if hi > max_qps:
                return lo, points
        if lo is None:  # even `start` failed: halve down
            lo = start / 2
            while not probe(lo):
                hi, lo = lo, lo / 2
                if lo < 1:
                    return None, points
    while hi / lo - 1 > precision:
        mid = (lo * hi) ** 0.5
        if probe(mid):
            lo = mid
        else:
            hi = mid
    return round(lo), points


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt_ms(ns):
    return "–" if ns is None else f"{ns / 1e6:.3f}"


def fmt_us(ns):
    return "–" if ns is None else f"{ns / 1e3:.1f}"


def ratio(a, b):
    if a is None or b is None or b == 0:
        return "–"
    return f"{a / b:#.3g}×"


def busy_processes(exclude=()):
    """Other heavy processes in the shared box (server benchmarks, builds) to warn about."""
    try:
        out = subprocess.run(["ps", "-eo", "pid,pcpu,args"], stdout=subprocess.PIPE, text=True).stdout
    except OSError:
        return []
    me = os.getpid()
    busy = []
    for line in out.splitlines()[1:]:
        parts = line.split(None, 2)
        if len(parts) < 3:
            continue
        pid, pcpu, args = parts
        if int(pid) == me or int(pid) in exclude:
            continue
        if re.search(r"inference-server|serving_overhead|rustc|cargo (build|test|bench)", args) \
                and float(pcpu) > 10:
            busy.append(f"{pid} {pcpu}% {args[:100]}")
    return busy


def wait_quiet(max_wait=600, poll=10, exclude=()):
    """Waits (up to max_wait s) while other heavy processes run, so runs do not overlap theirs."""
    t0 = time.monotonic()
    while True:
        busy = busy_processes(exclude)
        if not busy:
            return True
        if time.monotonic() - t0 > max_wait:
            log("still busy, going on anyway: " + "; ".join(busy))
            return False
        log("waiting for: " + "; ".join(busy))
        time.sleep(poll)


def noise_note(results, owned_key=None, threshold=0.25):
    """'N of M runs overlapped other load' (others' CPU > threshold cores on average)."""
    n = m = 0
    for r in results:
        if "others_cpu_s" not in r or not r.get("wall_s"):
            continue
        m += 1
        other = r["others_cpu_s"] - (r.get(owned_key) or 0 if owned_key else 0)
        if other / r["wall_s"] > threshold:
            n += 1
    return f"{n} of {m} runs overlapped other load (> {threshold:g} core of other processes on average)"


def start(args, script, prefix):
    """The common start of a benchmark: its command line for the tables, the snapshot binaries
    (built unless --no-build), the work folder (--workdir or a new temporary one) and, unless
    --no-wait, a wait for other heavy processes. Returns (cmdline, bins, work, started)."""
    cmdline = f"python scripts/bench/{script} " + " ".join(sys.argv[1:])
    bins = build_and_snapshot(build=not args.no_build)
    work = args.workdir or tempfile.mkdtemp(prefix=prefix)
    os.makedirs(work, exist_ok=True)
    if not args.no_wait:
        wait_quiet()
    return cmdline, bins, work, time.time()


def medians(results, keys):
    """{key: median of that key over results} for each of keys."""
    return {k: median([r.get(k) for r in results]) for k in keys}


def search_each(repeats, start_qps, precision, run_one):
    """`repeats` max-QPS searches per LoadGen, interleaved official/ours; each search after a
    LoadGen's first starts from a bracket of ±25% around that first result. run_one(which, qps,
    name) runs one test in the work subfolder `name`. Returns {which: [best of each search]}."""
    found = {"official": [], "ours": []}
    for rep in range(repeats):
        for which in ("official", "ours"):
            log(f"max-QPS search {rep + 1}/{repeats}: {which}")
            n = 0

            def run(q, which=which, rep=rep):
                nonlocal n
                n += 1
                return run_one(which, q, f"m-{which}-{rep}-{n}")
            first = found[which][0] if found[which] else None
            bracket = (first / 1.25, first * 1.25) if first else None
            best, _ = search_max_valid(run, start_qps, precision, bracket=bracket)
            log(f"  -> {which}: {best}")
            found[which].append(best)
    return found


def max_rows(found, official_label, ours_label):
    """The two body rows of a highest-VALID-QPS table (median, each search, ratio to official)."""
    mo, mu = median(found["official"]), median(found["ours"])

    def each(which):
        return ", ".join(f"{x:,}" for x in found[which])
    return [f"| {official_label} | {mo:,.0f} | {each('official')} | 1.00× |",
            f"| {ours_label} | {mu:,.0f} | {each('ours')} | {ratio(mu, mo)} |"]


def footer(started, work, cpus, owned_key=None):
    """The closing line of a report: start time, `cpus`, duration, logs, other load."""
    busy = busy_processes()
    return (f"_{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(started))}, {cpus}, "
            f"{(time.time() - started) / 60:.1f} min; logs in {work}"
            + (f"; other heavy processes at the end: {len(busy)}" if busy else "")
            + f"; {noise_note(ALL_RESULTS, owned_key)}_")
