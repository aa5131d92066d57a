"""Baseline for the benchmarks: the official MLPerf LoadGen (PyPI mlcommons-loadgen==6.0.17) driving
either a trivial in-process SUT or a KServe v2 server through Python `tritonclient.grpc`.

Usage:
  official_sut.py --sut null   --scenario Server --qps 1000 --time 5 --outdir OUT
  official_sut.py --sut triton --url 127.0.0.1:8001 --model digits-cnn --input input \
                  --shape 1,8,8 --scenario Server --qps 200 --time 10 --outdir OUT

The null SUT answers every sample inside IssueQuery with 4 bytes, like the reference probe. The triton
SUT sends one async ModelInfer per query (raw FP32 input of the given per-sample shape, random data
from a fixed seed) and completes the samples from the gRPC callback. Prints one JSON line with the
result keys the benchmark tables use; the official log files are left in OUT.
"""
import argparse
import array
import json
import os
import re
import threading

import mlperf_loadgen as lg
import numpy as np


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sut", choices=["null", "triton"], required=True)
    p.add_argument("--scenario", default="Server", choices=["SingleStream", "MultiStream", "Server", "Offline"])
    p.add_argument("--qps", type=float, default=100.0)
    p.add_argument("--time", type=float, default=5.0, help="minimum duration, seconds")
    p.add_argument("--max-latency", type=float, default=None, help="Server latency bound, seconds")
    p.add_argument("--outdir", required=True)
    p.add_argument("--model-name", default="resnet50", help="MLPerf model name for mlperf.conf lookups")
    p.add_argument("--total", type=int, default=1024)
    p.add_argument("--url", default="127.0.0.1:8001")
    p.add_argument("--model", default="digits-cnn")
    p.add_argument("--input", default="input")
    p.add_argument("--shape", default="1,8,8", help="per-sample input shape")
    p.add_argument("--trace", action="store_true", help="keep the trace (needed for issue delays)")
    return p.parse_args()


class NullSut:
    """Completes each sample inside IssueQuery."""

    def __init__(self):
        self.payloads = {}

    def issue(self, samples):
        responses = []
        for s in samples:
            buf = self.payloads.setdefault(s.index, array.array("f", [float(s.index % 1000)]))
            addr, n = buf.buffer_info()
            responses.append(lg.QuerySampleResponse(s.id, addr, n * buf.itemsize))
        lg.QuerySamplesComplete(responses)


class TritonSut:
    """One async tritonclient ModelInfer per query; completes from the response callback."""

    def __init__(self, args, total):
        import tritonclient.grpc as grpcclient

        self.grpcclient = grpcclient
        self.client = grpcclient.InferenceServerClient(args.url)
        self.model = args.model
        self.input = args.input
        shape = [int(d) for d in args.shape.split(",")]
        rng = np.random.default_rng(0)
        self.data = rng.random((total, *shape), dtype=np.float32)
        self.keep = []
        self.lock = threading.Lock()

    def issue(self, samples):
        batch = np.stack([self.data[s.index] for s in samples])
        inp = self.grpcclient.InferInput(self.input, list(batch.shape), "FP32")
        inp.set_data_from_numpy(batch)
        ids = [s.id for s in samples]

        def done(result, error):
            responses = []
            if error is None:
                out = result.as_numpy(result.get_response().outputs[0].name)
                for i, sid in enumerate(ids):
                    buf = array.array("f", [float(np.argmax(out[i]))])
                    with self.lock:
                        self.keep.append(buf)
                    addr, n = buf.buffer_info()
                    responses.append(lg.QuerySampleResponse(sid, addr, n * buf.itemsize))
            else:
                responses = [lg.QuerySampleResponse(sid, 0, 0) for sid in ids]
            lg.QuerySamplesComplete(responses)

        self.client.async_infer(self.model, [inp], callback=done)


def issue_delays_ns(trace_path):
    """Per-sample issue delay (issue start minus scheduled time) from the official trace."""
    pattern = re.compile(r'"ph":"b".*?"issue_start_ns":(\d+)')
    delays = []
    with open(trace_path) as f:
        for line in f:
            m = pattern.search(line)
            if m:
                delays.append(int(m.group(1)))
    return delays


def main():
    args = parse_args()
    os.makedirs(args.outdir, exist_ok=True)
    conf = os.path.join(args.outdir, "user.conf")
    key = f"{args.model_name}.{args.scenario}"
    with open(conf, "w") as f:
        f.write(f"{key}.min_duration = {int(args.time * 1000)}\n")
        f.write(f"{key}.target_qps = {args.qps}\n")
        if args.scenario in ("SingleStream", "MultiStream"):
            f.write(f"{key}.target_latency = {max(1, int(1000 / args.qps))}\n")
        if args.max_latency is not None:
            f.write(f"{key}.target_latency = {int(args.max_latency * 1000)}\n")

    settings = lg.TestSettings()
    settings.scenario = getattr(lg.TestScenario, args.scenario)
    settings.FromConfig(conf, args.model_name, args.scenario)
    settings.mode = lg.TestMode.PerformanceOnly
    log = lg.LogSettings()
    log.log_output.outdir = args.outdir
    log.log_output.copy_summary_to_stdout = False
    log.enable_trace = args.trace

    impl = NullSut() if args.sut == "null" else TritonSut(args, args.total)
    sut = lg.ConstructSUT(impl.issue, lambda: None)
    qsl = lg.ConstructQSL(args.total, min(args.total, 1024), lambda idx: None, lambda idx: None)
    lg.StartTestWithLogSettings(sut, qsl, settings, log)
    lg.DestroyQSL(qsl)
    lg.DestroySUT(sut)

    result = {}
    with open(os.path.join(args.outdir, "mlperf_log_detail.txt")) as f:
        for line in f:
            if line.startswith(":::MLLOG"):
                entry = json.loads(line[len(":::MLLOG"):])
                result.setdefault(entry["key"], entry["value"])
    keep = ["result_validity", "result_completed_samples_per_sec", "result_scheduled_samples_per_sec",
            "result_samples_per_second", "result_50.00_percentile_latency_ns",
            "result_99.00_percentile_latency_ns", "result_query_count"]
    out = {k: result[k] for k in keep if k in result}
    trace = os.path.join(args.outdir, "mlperf_log_trace.json")
    if args.trace and os.path.exists(trace):
        delays = sorted(issue_delays_ns(trace))
        if delays:
            out["issue_delay_p50_ns"] = delays[len(delays) // 2]
            out["issue_delay_p99_ns"] = delays[int(len(delays) * 0.99)]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
