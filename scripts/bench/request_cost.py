#!/usr/bin/env python3
"""Per-request cost of the server (and of the client): CPU time and context switches per request,
for this tree's binaries and for a baseline commit's, measured in the same run.

The baseline commit (default: the last one before the per-request work, see BASELINE) is checked
out into a git worktree under target/bench-baseline/ and built there (its own target folder, kept
for reruns). Then, for each repeat and load, both builds are measured in turn, each as its commit
ships it, on the same loopback set-up:
  - a fresh inference-server serving its tree's models/repository (digits-cnn, the tiny bundled
    model, as that commit configures it),
  - its tree's loadgen-client sending batch-1 requests over gRPC: the Server scenario at --qps
    (default 4000 and 1000), and SingleStream (one request in flight at a time).
Figures, medians over --repeats:
  server µs/req   server CPU (user+sys of every thread, /proc/PID/stat) during the client's run,
                  divided by the requests the server answered (inference_requests_total)
  ctx sw/req      voluntary + involuntary context switches of all server threads
                  (/proc/PID/task/*/status) during the run, per answered request; the
                  involuntary ones (a thread preempted, here mostly by the client sharing the
                  cores) also on their own
  req/s           answered requests per second of the client's run
  batch           mean executed batch size (inference_batch_size histogram)
  client µs/query loadgen-client's CPU (getrusage of the child, start-up included) per query
Each figure is also given as a ratio to the baseline's. Prints one markdown table.

Usage: .venv/bin/python scripts/bench/request_cost.py [--baseline COMMIT] [--repeats 3]
       [--duration 20] [--qps 4000,1000] [--no-single-stream] [--no-build]
"""
import argparse
import glob
import os
import re
import subprocess
import sys
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_common as bc  # noqa: E402

BASELINE = "11e8d06"
MODEL = "digits-cnn"
BATCH_RE = re.compile(r'^inference_batch_size_(sum|count)\{([^}]*)\}\s+([0-9.eE+-]+)', re.M)


def build_baseline(commit):
    """(short hash, worktree, binaries) of `commit`, built in a worktree kept for reruns."""
    resolved = subprocess.run(["git", "rev-parse", "--short", commit], cwd=bc.ROOT, check=True,
                              stdout=subprocess.PIPE, text=True).stdout.strip()
    tree = os.path.join(bc.ROOT, "target", "bench-baseline", resolved)
    if not os.path.isdir(tree):
        subprocess.run(["git", "worktree", "add", "--detach", tree, resolved], cwd=bc.ROOT,
                       check=True)
    # Its own target folder: sharing this tree's would overwrite target/release/inference-server.
    target = os.path.join(bc.ROOT, "target", "bench-baseline", "target")
    subprocess.run(["cargo", "build", "--release", "--locked", "-p", "inference-server",
                    "-p", "loadgen-client", "--target-dir", target], cwd=tree, check=True)
    release = os.path.join(target, "release")
    return resolved, tree, {name: os.path.join(release, name)
                            for name in ("inference-server", "loadgen-client")}


def context_switches(pid):
    """(voluntary, involuntary) context switches of every thread of `pid`, by thread id."""
    out = {}
    for status in glob.glob(f"/proc/{pid}/task/*/status"):
        tid = status.split("/")[4]
        try:
            with open(status) as f:
                text = f.read()
        except OSError:
            continue
        counts = dict(re.findall(r"^(\w+)_ctxt_switches:\s+(\d+)", text, re.M))
        out[tid] = (int(counts.get("voluntary", 0)), int(counts.get("nonvoluntary", 0)))
    return out


def batch_stats(metrics_addr):
    """(sum, count) of the executed batch sizes of MODEL so far."""
    text = urllib.request.urlopen(f"http://{metrics_addr}/metrics", timeout=5).read().decode()
    total = {"sum": 0.0, "count": 0.0}
    for kind, labels, value in BATCH_RE.findall(text):
        if f'model="{MODEL}"' in labels:
            total[kind] += float(value)
    return total["sum"], total["count"]


def client_command(binary, load, duration, outdir, endpoint):
    cmd = [binary, "--endpoint", f"http://{endpoint}", "--model", MODEL, "--profile", MODEL,
           "--dataset", "synthetic", "--count", "1024", "--performance-sample-count", "1024",
           "--mlperf-model", "resnet50", "--time", bc.num(duration), "--output-dir", outdir,
           "--server-metrics", "off"]
    if load == "single":
        # An expected latency below the real ~1 ms, so enough queries are generated for the
        # whole duration (the rules' default would end the run early, INVALID).
        conf = os.path.join(outdir, "user.conf")
        os.makedirs(outdir, exist_ok=True)
        with open(conf, "w") as f:
            f.write("*.SingleStream.target_latency = 0.25\n")
        return cmd + ["--scenario", "SingleStream", "--user-conf", conf]
    return cmd + ["--scenario", "Server", "--qps", bc.num(load)]


def measure(bins, tree, load, duration, work):
    """One fresh server, one client run against it: the figures of the module doc."""
    os.makedirs(work, exist_ok=True)
    server = bc.Server(bins["inference-server"], work,
                       os.path.join(tree, "models", "repository"), MODEL)
    try:
        answered0 = server.outcomes(MODEL).get("success", 0)
        batch0 = batch_stats(server.metrics)
        cpu0, switches0 = server.cpu_s(), context_switches(server.proc.pid)
        cmd = client_command(bins["loadgen-client"], load, duration, os.path.join(work, "logs"),
                             server.grpc)
        p, wall, client_cpu, host = bc.run_child(cmd, timeout=duration * 10 + 120)
        cpu1, switches1 = server.cpu_s(), context_switches(server.proc.pid)
        # The machine's busy CPU beyond the client's and the server's, for the footer's noise note.
        bc.ALL_RESULTS.append({"others_cpu_s": host - client_cpu - (cpu1 - cpu0), "wall_s": wall})
        answered = server.outcomes(MODEL).get("success", 0) - answered0
        batch1 = batch_stats(server.metrics)
    finally:
        server.stop()
    if p.returncode != 0 or not answered:
        bc.log(f"client exit {p.returncode}, {answered} answered:\n{p.stdout[-2000:]}")
        return None
    gone = [t for t in switches0 if t not in switches1]
    if gone:
        bc.log(f"{len(gone)} server threads exited during the run; their switches are not counted")
    voluntary = sum(v - switches0.get(t, (0, 0))[0] for t, (v, _) in switches1.items())
    involuntary = sum(n - switches0.get(t, (0, 0))[1] for t, (_, n) in switches1.items())
    detail = bc.parse_detail(os.path.join(work, "logs", "mlperf_log_detail.txt"))
    queries = detail.get("queries") or answered
    batches = batch1[1] - batch0[1]
    return {
        "server_us": (cpu1 - cpu0) / answered * 1e6,
        "switches": (voluntary + involuntary) / answered,
        "involuntary": involuntary / answered,
        "rps": answered / wall,
        "batch": (batch1[0] - batch0[0]) / batches if batches else None,
        "client_us": client_cpu / queries * 1e6,
        "validity": detail.get("validity"),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--baseline", default=BASELINE, help="commit to compare with")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--duration", type=float, default=20, help="seconds per client run")
    ap.add_argument("--qps", default="4000,1000", help="Server-scenario target QPS, comma-separated")
    ap.add_argument("--no-single-stream", action="store_true", help="skip the SingleStream load")
    ap.add_argument("--no-build", action="store_true", help="use the binaries already built")
    ap.add_argument("--no-wait", action="store_true", help="do not wait for other heavy processes")
    ap.add_argument("--workdir")
    args = ap.parse_args()

    cmdline, bins, work, started = bc.start(args, "request_cost.py", "bench-request-cost-")
    baseline, baseline_tree, baseline_bins = build_baseline(args.baseline)
    head = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=bc.ROOT,
                          stdout=subprocess.PIPE, text=True).stdout.strip()
    builds = [(f"baseline {baseline}", baseline_tree, baseline_bins),
              (f"this tree {head}", bc.ROOT, bins)]
    loads = [float(q) for q in args.qps.split(",") if q] + ([] if args.no_single_stream else ["single"])
    results = {}
    for rep in range(args.repeats):
        for load in loads:
            for label, tree, build_bins in builds:
                bc.log(f"repeat {rep + 1}/{args.repeats}: {label}, load {load}")
                r = measure(build_bins, tree, load, args.duration,
                            os.path.join(work, f"{rep}-{load}-{label.split()[0]}"))
                results.setdefault((load, label), []).append(r)

    keys = ["server_us", "switches", "involuntary", "rps", "batch", "client_us"]
    print(f"\n`{cmdline}`\n")
    print("| load | build | server CPU µs/request | context switches/request | of which "
          "involuntary | requests/s | mean batch | client CPU µs/query | validity |")
    print("|---|---|---|---|---|---|---|---|---|")
    for load in loads:
        name = "SingleStream (1 in flight)" if load == "single" else f"Server {load:,.0f} QPS"
        base = bc.medians([r for r in results[(load, builds[0][0])] if r], keys)
        for label, _, _ in builds:
            runs = [r for r in results[(load, label)] if r]
            m = bc.medians(runs, keys)
            cells = [f"{m[k]:.{d}f} ({bc.ratio(m[k], base[k])})" if m[k] is not None else "–"
                     for k, d in zip(keys, (1, 2, 2, 0, 2, 1))]
            valid = sum(r["validity"] == "VALID" for r in runs)
            print(f"| {name} | {label} | " + " | ".join(cells) + f" | {valid}/{len(runs)} VALID |")
    print("\n" + bc.footer(started, work, f"{os.cpu_count()} CPUs, client and server on one box"))


if __name__ == "__main__":
    main()
