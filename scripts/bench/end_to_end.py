#!/usr/bin/env python3
"""End-to-end benchmark: loadgen-client vs the official LoadGen 6.0.17 + a Python tritonclient SUT
(scripts/bench/official_sut.py --sut triton), both driving the same inference-server serving
`digits-cnn` (models/repository; FP32 [N,1,8,8] -> [N,10], dynamic batching) over loopback gRPC, in
the Server scenario with resnet50's rules (15 ms p99 bound), a 1024-sample QSL of synthetic inputs.

Prints two markdown tables:
  1. at fixed target QPS (default 100, 300, 1000): the p50/p99 latency each LoadGen reports,
     completed QPS, validity, client and server CPU; medians of --repeats runs, ratios ours/official;
  2. the highest target QPS whose run is VALID (and had no failed request), per LoadGen, by doubling
     then bisection to --precision, --search-repeats searches; medians and ratio.

One server process serves all runs (started here on free ports, warmed up first). A run counts as
failed-requests if the server counted non-success outcomes in it for the official SUT (tritonclient
does not retry; official_sut.py completes such samples with empty responses) or, for
loadgen-client, if it exited with status 3 (some samples failed after its retries).

Usage: .venv/bin/python scripts/bench/end_to_end.py [--repeats 3] [--time 10] [--no-build]
One table: add --only latency or --only max.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_common as bc  # noqa: E402

MIN_QUERIES = 3000  # early stopping needs >= 1453 queries for a p99 claim even with none over the bound


def run_e2e(server, which, bins, qps, duration, outdir):
    duration = max(duration, -(-MIN_QUERIES // max(1, int(qps))))
    before, cpu0 = server.outcomes("digits-cnn"), server.cpu_s()
    r = bc.run_test(which, bins, qps, duration, outdir, endpoint=server.grpc)
    after, cpu1 = server.outcomes("digits-cnn"), server.cpu_s()
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in set(after) | set(before)}
    r["server_success"] = delta.get("success", 0)
    r["server_not_success"] = sum(v for k, v in delta.items() if k != "success")
    r["server_cpu_s"] = cpu1 - cpu0
    if which == "ours":
        r["failed"] = r.get("rc") == 3
    else:
        r["failed"] = r["server_not_success"] > 0
    r["ok"] = bc.is_valid(r) and not r["failed"]
    return r


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--time", type=float, default=10.0, help="min duration of the fixed-QPS runs, s")
    ap.add_argument("--search-time", type=float, default=5.0, help="min duration of the search runs, s")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--qps", default="100,300,1000", help="fixed target QPS for the latency table")
    ap.add_argument("--search-repeats", type=int, default=3)
    ap.add_argument("--search-start", type=float, default=500.0, help="first QPS of the doubling")
    ap.add_argument("--precision", type=float, default=0.05)
    ap.add_argument("--only", choices=["latency", "max"], default=None)
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--no-wait", action="store_true")
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args()

    cmdline, bins, work, started = bc.start(args, "end_to_end.py", "end-to-end-")
    server = bc.Server(bins["inference-server"], work, os.path.join(bc.ROOT, "models", "repository"),
                       "digits-cnn", extra_args=["--log-level", "warn"])
    out = []
    try:
        bc.log(f"server {server.grpc} ready; warming up")
        for which in ("official", "ours"):
            run_e2e(server, which, bins, 200, 2, os.path.join(work, f"warmup-{which}"))

        if args.only in (None, "latency"):
            qpss = [float(q) for q in args.qps.split(",")]
            res = {}
            for rep in range(args.repeats):
                for q in qpss:
                    for which in ("official", "ours"):
                        r = run_e2e(server, which, bins, q, args.time, os.path.join(work, f"l-{which}-{q:g}-{rep}"))
                        bc.log(f"{which} qps={q:g} rep={rep}: {r.get('validity')} done={r.get('completed_qps')} "
                               f"p50={bc.fmt_ms(r.get('p50_ns'))}ms p99={bc.fmt_ms(r.get('p99_ns'))}ms "
                               f"cpu={r.get('cpu_s', 0):.2f}s server_cpu={r['server_cpu_s']:.2f}s "
                               f"not_success={r['server_not_success']:g}")
                        res.setdefault((which, q), []).append(r)
            out.append(f"**End to end, inference-server digits-cnn, Server scenario** (medians of {args.repeats} runs, "
                       f"{args.time:g} s each, at least {MIN_QUERIES} queries; ratio = ours / official in the same run; client and server share "
                       f"{os.cpu_count()} cores)  \n`{cmdline}`\n")
            out.append("| target QPS | LoadGen + SUT | completed QPS | latency p50 (ms) | latency p99 (ms) "
                       "| VALID runs | client CPU (s) | server CPU (s) | failed requests |")
            out.append("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
            for q in qpss:
                m = {}
                for which in ("official", "ours"):
                    rs = res[(which, q)]
                    m[which] = bc.medians(rs, ("completed_qps", "p50_ns", "p99_ns", "cpu_s", "server_cpu_s"))
                    m[which]["valid"] = f"{sum(r['ok'] for r in rs)}/{len(rs)}"
                    m[which]["fails"] = sum(r["server_not_success"] for r in rs) if which == "official" \
                        else sum(r["failed"] for r in rs)
                for which, label in (("official", "official 6.0.17 + Python tritonclient"), ("ours", "loadgen-client")):
                    v, o = m[which], m["official"]
                    rr = (lambda k: "") if which == "official" else (lambda k: f" ({bc.ratio(v[k], o[k])})")
                    fails = f"{v['fails']:g} requests" if which == "official" else f"{v['fails']} runs"
                    out.append(f"| {q:g} | {label} | {v['completed_qps']:.1f} | {bc.fmt_ms(v['p50_ns'])}{rr('p50_ns')} "
                               f"| {bc.fmt_ms(v['p99_ns'])}{rr('p99_ns')} | {v['valid']} "
                               f"| {v['cpu_s']:.2f}{rr('cpu_s')} | {v['server_cpu_s']:.2f}{rr('server_cpu_s')} | {fails} |")
            out.append("")

        if args.only in (None, "max"):
            def run(which, q, name):
                r = run_e2e(server, which, bins, q, args.search_time, os.path.join(work, name))
                if bc.is_valid(r) and not r["ok"]:
                    r["validity"] = "VALID-but-failed-requests"
                return r
            found = bc.search_each(args.search_repeats, args.search_start, args.precision, run)
            out.append(f"**Highest VALID Server QPS end to end, inference-server digits-cnn** ({args.search_repeats} "
                       f"searches per LoadGen, doubling then bisection to {args.precision:.0%}, {args.search_time:g} s "
                       f"runs, at least {MIN_QUERIES} queries; a run with failed requests counts as not VALID)  \n`{cmdline}`\n")
            out.append("| LoadGen + SUT | highest VALID QPS (median) | each search | ratio to official |")
            out.append("|---|---:|---|---:|")
            out += bc.max_rows(found, "official 6.0.17 + Python tritonclient", "loadgen-client")
            out.append("")
    finally:
        server.stop()

    out.append(bc.footer(started, work, f"{os.cpu_count()} CPUs shared by client and server", "server_cpu_s"))
    print("\n".join(out))


if __name__ == "__main__":
    main()
