#!/usr/bin/env python3
"""Overload and soak of inference-server serving the bundled efficientnet-lite0 (ONNX Runtime CPU,
its shipped config), driven by loadgen-client in the Server scenario over loopback gRPC (Poisson
arrivals, synthetic images; no retries and no in-flight budget: every query goes out when it is
scheduled).

First the capacity C is measured: the median samples/s of --repeats Offline runs (the client
keeping to its in-flight budget). Then:

  overload  a baseline Server run at 0.5 C (--phase-time s), 2 C for --overload-time s (60), and
            0.5 C again (recovery). During the 2 C run a probe thread sends one request at a
            time, 100 ms after the last answer, and times the answers the server refuses
            (RESOURCE_EXHAUSTED); the server's RSS is sampled every 0.5 s. Reported per phase:
            completed QPS, samples failed (refused, or past their deadline),
            admitted p50/p99 (refused samples are not in the percentiles), peak RSS, and the
            probe's refusal time; recovery p99 as a ratio of the baseline's.
  soak      one Server run at 0.8 C for --soak-minutes (30), RSS and open descriptors sampled
            every 10 s: first and last 5 minutes (medians), the maximum, and the run's validity.

Both print a markdown table. Not run in CI (minutes of full CPU).

Usage: .venv/bin/python scripts/bench/load_limits.py overload|soak [--no-build] [--repeats 3]
"""
import argparse
import os
import statistics
import sys
import threading
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_common as bc  # noqa: E402

MODEL = "efficientnet-lite0"


def client_run(bins, server, work, name, scenario, qps, seconds, hold_back=False, extra=()):
    """One loadgen-client run; returns its detail-log results and exit code. With `hold_back`
    the client keeps to its in-flight budget and retries refusals (a capacity measurement);
    otherwise every query goes out when scheduled and a refusal fails its samples."""
    outdir = os.path.join(work, name)
    os.makedirs(outdir, exist_ok=True)
    cmd = [bins["loadgen-client"], "--scenario", scenario, "--endpoint", f"http://{server.grpc}",
           "--model", MODEL, "--profile", "efficientnet-lite0-onnxruntime", "--dataset", "synthetic",
           "--count", "256", "--performance-sample-count", "256", "--qps", bc.num(round(qps, 1)),
           "--time", str(int(seconds)), "--server-metrics", f"http://{server.metrics}/metrics",
           "--output-dir", outdir]
    if not hold_back:
        cmd += ["--retries", "0", "--inflight-mb", "4096"]
    cmd += list(extra)
    p, wall, _, _ = bc.run_child(cmd, timeout=seconds * 10 + 300)
    res = bc.parse_detail(os.path.join(outdir, "mlperf_log_detail.txt"))
    res.update({"rc": p.returncode, "wall_s": wall})
    res["failed"] = int(res.get("failed_samples") or 0)
    bc.log(f"{name}: {scenario} {qps:.1f} QPS -> rc={p.returncode} {res.get('validity')} "
           f"completed={res.get('completed_qps')} failed={res['failed']}")
    return res


class Sampler:
    """Samples the server's RSS and descriptors every `period` seconds in a thread."""

    def __init__(self, server, period):
        self.server, self.period = server, period
        self.samples = []  # (seconds since start, RSS MiB, descriptors)
        self.stop_flag = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.t0 = time.monotonic()
        self.thread.start()

    def run(self):
        while not self.stop_flag.wait(self.period):
            self.samples.append((time.monotonic() - self.t0, self.server.memory_mib("VmRSS"),
                                 self.server.descriptors()))

    def stop(self):
        self.stop_flag.set()
        self.thread.join()
        return self.samples


class RefusalProbe:
    """One request at a time, 100 ms after the last answer; records how long each refusal
    (RESOURCE_EXHAUSTED) took, and counts the requests admitted and any other errors."""

    def __init__(self, server):
        import tritonclient.grpc as grpcclient
        self.client = grpcclient.InferenceServerClient(server.grpc)
        self.tensor = grpcclient.InferInput("input", [1, 3, 224, 224], "FP32")
        self.tensor.set_data_from_numpy(np.zeros([1, 3, 224, 224], dtype=np.float32))
        self.refused_ms, self.admitted, self.other_errors = [], 0, 0
        self.stop_flag = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        from tritonclient.utils import InferenceServerException
        while not self.stop_flag.wait(0.1):
            t0 = time.monotonic()
            try:
                self.client.infer(MODEL, [self.tensor], client_timeout=60)
                self.admitted += 1
            except InferenceServerException as e:
                if "RESOURCE_EXHAUSTED" in (e.status() or ""):
                    self.refused_ms.append((time.monotonic() - t0) * 1000)
                else:
                    self.other_errors += 1

    def stop(self):
        self.stop_flag.set()
        self.thread.join()
        self.client.close()


def capacity(bins, server, work, repeats):
    """Median samples/s of `repeats` Offline runs of about 2,000 samples (not the 24,576 a
    submission needs: the rate is what counts here)."""
    conf = os.path.join(work, "capacity-user.conf")
    with open(conf, "w") as f:
        f.write("*.Offline.min_query_count = 1\n")
    rates = []
    for i in range(repeats):
        r = client_run(bins, server, work, f"capacity-{i}", "Offline", 180, 10, hold_back=True,
                       extra=["--user-conf", conf])
        rates.append(float(r["offline_qps"]))
    return statistics.median(rates), rates


def overload(args, bins, server, work):
    cap, rates = capacity(bins, server, work, args.repeats)
    rows = []
    for phase, factor, seconds in [("baseline", 0.5, args.phase_time), ("overload", 2.0, args.overload_time),
                                   ("recovery", 0.5, args.phase_time)]:
        sampler = Sampler(server, 0.5)
        probe = RefusalProbe(server) if phase == "overload" else None
        r = client_run(bins, server, work, phase, "Server", cap * factor, seconds)
        if probe:
            probe.stop()
        samples = sampler.stop()
        r["peak_rss"] = max((s[1] for s in samples), default=server.memory_mib("VmRSS"))
        r["probe"] = probe
        rows.append((phase, factor, r))
    base_p99 = rows[0][2].get("p99_ns")
    out = [f"**Overload: efficientnet-lite0 (ONNX Runtime CPU, shipped config) at 2× its capacity** "
           f"(capacity C = {cap:.1f} samples/s, median of Offline runs {', '.join(f'{x:.1f}' for x in rates)}; "
           f"Server scenario, no client retries)  \n`{args.cmdline}`", "",
           "| phase | target | completed QPS | samples failed | admitted p50 ms | admitted p99 ms | "
           "p99 vs baseline | server peak RSS MiB | probe: refusals, median / max ms |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for phase, factor, r in rows:
        probe = r["probe"]
        probe_text = "–"
        if probe is not None:
            refused = sorted(probe.refused_ms)
            total = len(refused) + probe.admitted + probe.other_errors
            probe_text = (f"{len(refused)} of {total}, "
                          f"{bc.median(refused) or 0:.1f} / {refused[-1] if refused else 0:.1f}")
        out.append(f"| {phase} | {factor:g} C | {float(r.get('completed_qps') or 0):.1f} | {r['failed']} | "
                   f"{bc.fmt_ms(r.get('p50_ns'))} | {bc.fmt_ms(r.get('p99_ns'))} | "
                   f"{bc.ratio(r.get('p99_ns'), base_p99)} | {r['peak_rss']:.0f} | {probe_text} |")
    return out


def soak(args, bins, server, work):
    cap, rates = capacity(bins, server, work, args.repeats)
    seconds = args.soak_minutes * 60
    sampler = Sampler(server, 10)
    r = client_run(bins, server, work, "soak", "Server", cap * 0.8, seconds)
    samples = sampler.stop()
    window = min(300, seconds / 4)
    first = [s for s in samples if s[0] <= window]
    last = [s for s in samples if s[0] >= samples[-1][0] - window]
    med = lambda rows, i: statistics.median(s[i] for s in rows)  # noqa: E731
    out = [f"**Soak: efficientnet-lite0 (ONNX Runtime CPU, shipped config) at 0.8× capacity for "
           f"{args.soak_minutes:g} min** (capacity C = {cap:.1f} samples/s; target {cap * 0.8:.1f} QPS; "
           f"{len(samples)} samples every 10 s)  \n`{args.cmdline}`", "",
           "| | first window | last window | max | last vs first |",
           "|---|---:|---:|---:|---:|",
           f"| server RSS MiB | {med(first, 1):.0f} | {med(last, 1):.0f} | {max(s[1] for s in samples):.0f} | "
           f"{bc.ratio(med(last, 1), med(first, 1))} |",
           f"| open descriptors | {med(first, 2):.0f} | {med(last, 2):.0f} | {max(s[2] for s in samples)} | "
           f"{bc.ratio(med(last, 2), med(first, 2))} |", "",
           f"Run: {r.get('validity')}, completed {float(r.get('completed_qps') or 0):.1f} QPS, "
           f"p99 {bc.fmt_ms(r.get('p99_ns'))} ms, {r['failed']} samples failed; windows are the first and "
           f"last {window / 60:g} min (medians)."]
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["overload", "soak"])
    ap.add_argument("--repeats", type=int, default=3, help="Offline runs measuring the capacity")
    ap.add_argument("--phase-time", type=float, default=20, help="baseline and recovery runs, s")
    ap.add_argument("--overload-time", type=float, default=60)
    ap.add_argument("--soak-minutes", type=float, default=30)
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--no-wait", action="store_true")
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args()
    args.cmdline, bins, work, started = bc.start(args, "load_limits.py", f"{args.mode}-")
    repository = os.path.join(work, "repository")  # the shipped model alone
    os.makedirs(repository, exist_ok=True)
    if not os.path.exists(os.path.join(repository, MODEL)):
        os.symlink(os.path.join(bc.ROOT, "models", "generated", MODEL), os.path.join(repository, MODEL))
    server = bc.Server(bins["inference-server"], work, repository, MODEL, extra_args=["--log-level", "warn"])
    try:
        out = (overload if args.mode == "overload" else soak)(args, bins, server, work)
    finally:
        server.stop()
    out += ["", bc.footer(started, work, f"{os.cpu_count()} CPUs shared by client and server")]
    print("\n".join(out))


if __name__ == "__main__":
    main()
