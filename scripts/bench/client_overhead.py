#!/usr/bin/env python3
"""Client-overhead benchmark: loadgen-client's in-process null SUT (`--endpoint null`) against the
official LoadGen 6.0.17 (PyPI mlcommons-loadgen) driving a trivial in-process Python SUT that
answers inside IssueQuery (scripts/bench/official_sut.py --sut null), both in the Server scenario
with resnet50's rules from the built-in mlperf.conf (15 ms p99 bound), the same min duration and a
1024-sample QSL.

Prints two markdown tables:
  1. at fixed target QPS (default 1000 and 10000): issue delay (actual issue time - scheduled time,
     from the "Sample" events of a run with the trace on) p50/p99, and the latency p50/p99 and process
     CPU of a second run with the trace off (null SUT latency = issue delay + the SUT's answer time);
     medians of --repeats runs, with ratios ours/official;
  2. the highest target QPS whose run is VALID, found per LoadGen by doubling then bisection to
     --precision, --search-repeats times (later searches start from a bracket around the first
     result); medians and ratio.

Usage: .venv/bin/python scripts/bench/client_overhead.py [--repeats 3] [--time 5] [--no-build]
The lead's one command per table: add --only delay or --only max.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_common as bc  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--time", type=float, default=5.0, help="min duration of each run, s")
    ap.add_argument("--repeats", type=int, default=3, help="runs per fixed-QPS point")
    ap.add_argument("--delay-qps", default="1000,10000", help="fixed target QPS for the issue-delay table")
    ap.add_argument("--search-repeats", type=int, default=3, help="max-QPS searches per LoadGen")
    ap.add_argument("--search-start", type=float, default=10000.0, help="first QPS of the doubling")
    ap.add_argument("--precision", type=float, default=0.05)
    ap.add_argument("--only", choices=["delay", "max"], default=None)
    ap.add_argument("--no-build", action="store_true", help="skip cargo build (use target/release as is)")
    ap.add_argument("--no-wait", action="store_true", help="do not wait for other heavy processes")
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args()

    cmdline, bins, work, started = bc.start(args, "client_overhead.py", "client-overhead-")
    out = []

    if args.only in (None, "delay"):
        qpss = [float(q) for q in args.delay_qps.split(",")]
        res = {}
        for rep in range(args.repeats):
            for q in qpss:
                for which in ("official", "ours"):  # interleaved, so drift hits both alike
                    r = bc.run_test(which, bins, q, args.time, os.path.join(work, f"d-{which}-{q:g}-{rep}"),
                                    trace=True)
                    # The same point without the trace: latency of the null SUT = issue delay + the
                    # SUT's own answer time, with no trace I/O in the process.
                    r0 = bc.run_test(which, bins, q, args.time, os.path.join(work, f"n-{which}-{q:g}-{rep}"))
                    r["notrace_p50_ns"], r["notrace_p99_ns"] = r0.get("p50_ns"), r0.get("p99_ns")
                    r["notrace_cpu_s"] = r0.get("cpu_s")
                    r["notrace_valid"] = bc.is_valid(r0)
                    bc.log(f"delay {which} qps={q:g} rep={rep}: {r.get('validity')} "
                           f"issue p50={r.get('issue_delay_p50_ns')} p99={r.get('issue_delay_p99_ns')} "
                           f"lat p99={r.get('p99_ns')} cpu={r.get('cpu_s', 0):.2f}s | no trace: "
                           f"{r0.get('validity')} lat p50={r0.get('p50_ns')} p99={r0.get('p99_ns')} "
                           f"cpu={r0.get('cpu_s', 0):.2f}s")
                    res.setdefault((which, q), []).append(r)
        out.append(f"**Issue delay, null SUT, Server** (medians of {args.repeats} runs, {args.time:g} s each; "
                   f"issue delay = actual issue - scheduled time from the trace of a run with --trace; latency "
                   f"(= issue delay + null SUT answer time) from a second run without the trace; process CPU = "
                   f"user+sys of the whole process incl. startup, run without trace; ratio = ours / official in "
                   f"the same run)  \n`{cmdline}`\n")
        out.append("| target QPS | LoadGen | issue delay p50 (µs), trace on | issue delay p99 (µs), trace on "
                   "| latency p50 (µs), trace off | latency p99 (µs), trace off | VALID runs (on/off) "
                   "| process CPU (s), trace off |")
        out.append("|---:|---|---:|---:|---:|---:|---:|---:|")
        for q in qpss:
            m = {}
            for which in ("official", "ours"):
                rs = res[(which, q)]
                m[which] = bc.medians(rs, ("issue_delay_p50_ns", "issue_delay_p99_ns", "notrace_p50_ns",
                                           "notrace_p99_ns", "notrace_cpu_s"))
                m[which]["valid"] = (f"{sum(bc.is_valid(r) for r in rs)}/{len(rs)}, "
                                     f"{sum(r['notrace_valid'] for r in rs)}/{len(rs)}")
            for which, label in (("official", "official 6.0.17 + Python null SUT"), ("ours", "loadgen-client null")):
                v = m[which]
                o = m["official"]
                rr = (lambda k: "") if which == "official" else (lambda k: f" ({bc.ratio(v[k], o[k])})")
                out.append(f"| {q:g} | {label} | {bc.fmt_us(v['issue_delay_p50_ns'])}{rr('issue_delay_p50_ns')} "
                           f"| {bc.fmt_us(v['issue_delay_p99_ns'])}{rr('issue_delay_p99_ns')} "
                           f"| {bc.fmt_us(v['notrace_p50_ns'])}{rr('notrace_p50_ns')} "
                           f"| {bc.fmt_us(v['notrace_p99_ns'])}{rr('notrace_p99_ns')} "
                           f"| {v['valid']} | {v['notrace_cpu_s']:.2f}{rr('notrace_cpu_s')} |")
        out.append("")

    if args.only in (None, "max"):
        found = bc.search_each(
            args.search_repeats, args.search_start, args.precision,
            lambda which, q, name: bc.run_test(which, bins, q, args.time, os.path.join(work, name)))
        out.append(f"**Highest VALID Server QPS, null SUT** ({args.search_repeats} searches per LoadGen, doubling "
                   f"then bisection to {args.precision:.0%}, {args.time:g} s runs, trace off)  \n`{cmdline}`\n")
        out.append("| LoadGen | highest VALID QPS (median) | each search | ratio to official |")
        out.append("|---|---:|---|---:|")
        out += bc.max_rows(found, "official 6.0.17 + Python null SUT", "loadgen-client null")
        out.append("")

    out.append(bc.footer(started, work, f"{os.cpu_count()} CPUs"))
    print("\n".join(out))


if __name__ == "__main__":
    main()
