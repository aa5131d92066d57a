#!/usr/bin/env python3
"""Memory budget of the bundled models: the server's resident memory (RSS) serving one model at
each max_batch_size, measured from /proc while it runs full batches.

For every bundled model and batch size B (and, for ONNX Runtime, with its CPU arena off and on) a
fresh inference-server serves a repository holding only that model, with max_batch_size = B and
one instance. Two client threads (tritonclient gRPC) then send --requests requests of B samples
each, so one runs while the next waits in the queue. Reported per configuration, medians of
--repeats servers:
  ready    RSS once the model is loaded and warmed up, before any request
  peak     VmHWM after the load: the most the process ever held
  idle     RSS 3 s after the last answer: what it keeps
  img/s    samples answered per second during the load (the cost of the arena setting)
The baseline is the same server on the same model at batch 1. Prints one markdown table.

Usage: .venv/bin/python scripts/bench/memory_budget.py [--repeats 3] [--batches 1,8,16,32,64]
       [--requests 16] [--no-build]
"""
import argparse
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
import tomllib

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_common as bc  # noqa: E402

MODELS = [
    # (label, folder under models/, backend override, runtime note)
    ("digits-cnn", "repository/digits-cnn", None, "ONNX Runtime"),
    ("efficientnet-lite0", "generated/efficientnet-lite0", None, "ONNX Runtime"),
    ("efficientnet-lite0-openvino", "generated/efficientnet-lite0-openvino", None, "OpenVINO CPU"),
    ("efficientnet-lite0-uint8", "generated/efficientnet-lite0-uint8", "tflite", "LiteRT CPU"),
]
NUMPY = {"FP32": np.float32, "UINT8": np.uint8, "INT8": np.int8, "INT64": np.int64}


def toml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace('\\', '\\\\').replace('"', '\\"') + '"'
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return str(v)


def write_config(path, config):
    """Writes a config of top-level keys and one level of tables (what model configs use)."""
    lines = [f"{k} = {toml_value(v)}" for k, v in config.items() if not isinstance(v, dict)]
    for table, values in config.items():
        if isinstance(values, dict):
            lines.append(f"\n[{table}]")
            lines += [f"{k} = {toml_value(v)}" for k, v in values.items()]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def repository(work, name, folder, backend, batch, arena):
    """A repository with `name` only, its version folder linked, its config set to `batch`."""
    src = os.path.join(bc.ROOT, "models", folder)
    with open(os.path.join(src, "config.toml"), "rb") as f:
        config = tomllib.load(f)
    if backend:
        config["backend"] = backend
        config.pop("device", None)
        config.pop("openvino", None)
    config["max_batch_size"] = batch
    config.pop("instances", None)
    config.pop("instance_group", None)
    batching = config.setdefault("dynamic_batching", {})
    batching["preferred_batch_sizes"] = [batch]
    if arena is not None:
        config.setdefault("onnxruntime", {})["cpu_arena"] = arena
    root = tempfile.mkdtemp(prefix="repo-", dir=work)
    os.makedirs(os.path.join(root, name))
    os.symlink(os.path.join(src, "1"), os.path.join(root, name, "1"))
    write_config(os.path.join(root, name, "config.toml"), config)
    return root


def load(server, name, batch, requests):
    """Two threads sending `requests` requests of `batch` samples in all; returns samples/s."""
    import tritonclient.grpc as grpcclient
    meta = grpcclient.InferenceServerClient(server.grpc).get_model_metadata(name, as_json=True)
    spec = meta["inputs"][0]
    dims = [int(d) for d in spec["shape"]]
    shape = [batch] + [d if d > 0 else 1 for d in dims[1:]]
    data = np.zeros(shape, dtype=NUMPY[spec["datatype"]])
    errors = []

    def worker(count):
        client = grpcclient.InferenceServerClient(server.grpc)
        tensor = grpcclient.InferInput(spec["name"], shape, spec["datatype"])
        tensor.set_data_from_numpy(data)
        for _ in range(count):
            try:
                client.infer(name, [tensor], client_timeout=300)
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(str(e))
        client.close()

    threads = [threading.Thread(target=worker, args=(n,))
               for n in (requests // 2, requests - requests // 2)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.monotonic() - t0
    if errors:
        raise RuntimeError(f"{name} batch {batch}: {len(errors)} failed requests, first: {errors[0]}")
    return requests * batch / took


def measure(binary, work, model, batch, arena, requests):
    name, folder, backend, _ = model
    root = repository(work, name, folder, backend, batch, arena)
    try:
        server = bc.Server(binary, work, root, name, extra_args=["--log-level", "warn"])
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    try:
        ready = server.memory_mib("VmRSS")
        rate = load(server, name, batch, requests)
        peak = server.memory_mib("VmHWM")
        time.sleep(3)
        idle = server.memory_mib("VmRSS")
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
    return {"ready": ready, "peak": peak, "idle": idle, "rate": rate}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batches", default="1,8,16,32,64")
    ap.add_argument("--requests", type=int, default=16, help="requests per configuration")
    ap.add_argument("--models", default=",".join(m[0] for m in MODELS))
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--no-wait", action="store_true")
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args()
    cmdline, bins, work, started = bc.start(args, "memory_budget.py", "memory-budget-")
    wanted = args.models.split(",")
    batches = [int(b) for b in args.batches.split(",")]
    rows = []
    for model in [m for m in MODELS if m[0] in wanted]:
        with open(os.path.join(bc.ROOT, "models", model[1], "config.toml"), "rb") as f:
            shipped = tomllib.load(f).get("max_batch_size", 0)
        if model[2] == "tflite":
            sizes = [1]  # the quantized .tflite takes one image per run
        else:
            sizes = batches
        arenas = [False, True] if model[3] == "ONNX Runtime" else [None]
        for arena in arenas:
            for batch in sizes:
                runs = []
                for _ in range(args.repeats):
                    runs.append(measure(bins["inference-server"], work, model, batch, arena, args.requests))
                med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
                bc.log(f"{model[0]} B={batch} arena={arena}: {med}")
                rows.append((model, arena, batch, shipped, med))

    out = [f"**Server memory per bundled model and max_batch_size** (medians of {args.repeats} servers, "
           f"{args.requests} requests of B samples from 2 threads; RSS in MiB)  \n`{cmdline}`", "",
           "| model | runtime | CPU arena | max_batch_size | ready | peak | idle after | img/s | peak vs B=1 |",
           "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for model, arena, batch, shipped, med in rows:
        base = next((m for mo, a, b, _, m in rows if mo == model and a == arena and b == 1), None)
        arena_text = "–" if arena is None else ("on (default)" if arena else "off")
        ship = " (shipped)" if batch == shipped else ""
        out.append(f"| {model[0]} | {model[3]} | {arena_text} | {batch}{ship} | {med['ready']:.0f} | "
                   f"{med['peak']:.0f} | {med['idle']:.0f} | {med['rate']:.1f} | "
                   f"{bc.ratio(med['peak'], base['peak'] if base else None)} |")
    out.append("")
    out.append(bc.footer(started, work, f"{os.cpu_count()} CPUs"))
    print("\n".join(out))


if __name__ == "__main__":
    main()
