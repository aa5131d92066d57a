"""Writes the tiny TensorFlow Lite models the server's TF Lite backend conformance tests load.

Usage: make_tflite_test_models.py OUT_DIR [--check] [--tflite-c LIB]

  affine.tflite         x FP32 [1,4]     -> y = x * 2 + 1  FP32 [1,4]
  affine_fixed2.tflite  x FP32 [2,4]     -> y = x * 2 + 1  FP32 [2,4]
  unbatched.tflite      v FP32 [3]       -> w = v * 2 + 1  FP32 [3]
  two_io.tflite         a, b FP32 [2,3]  -> sum = a + b, product = a * b  (outputs in that order)

The same tensor names as the ONNX models of make_test_models.py; static shapes, float MUL and ADD
only, each with a full-shape constant (no broadcasting). Every model carries a "serving_default"
SignatureDef whose input and output names are the tensor names. The files are readable by
TF Lite 1.15 (OperatorCode's byte builtin code is set besides the int32 one) and by LiteRT 2.x.

--check runs every model on random inputs in LiteRT's Python interpreter (ai_edge_litert) and in
TF Lite 1.15's classic C API (LIB, default target/tflite-fixtures/libtensorflowlite_c.so, built by
make_tflite_fixtures.sh) and compares the outputs exactly; a runtime that is not there is skipped.
Needs only numpy and flatbuffers.
"""

import argparse
import ctypes
import os
import sys
from pathlib import Path

import flatbuffers
import numpy as np

ROOT = Path(__file__).resolve().parents[1]

SCHEMA_VERSION = 3
FLOAT32 = 0  # TensorType (the C API's TfLiteType calls it kTfLiteFloat32 = 1)
K_FLOAT32 = 1
# BuiltinOperator code, BuiltinOptions union type (AddOptions / MulOptions).
OPS = {"ADD": (0, 11), "MUL": (18, 21)}


# --- flatbuffers helpers: tables by field id ------------------------------------------------------


def table(b, *fields):
    """A table from (field id, kind, value): kind is a scalar type ("Int8", "Uint32", ...) or "off"
    for a string, vector or table built before. Every field given is written, defaults included."""
    b.StartObject(max((slot for slot, _, _ in fields), default=-1) + 1)
    for slot, kind, value in fields:
        if kind == "off":
            b.PrependUOffsetTRelativeSlot(slot, value, 0)
        else:
            getattr(b, f"Prepend{kind}Slot")(slot, value, None)
    return b.EndObject()


def vector(b, kind, items, size=4, alignment=4):
    """A vector of offsets ("off") or of scalars ("Int32", "Uint8", ...)."""
    prepend = b.PrependUOffsetTRelative if kind == "off" else getattr(b, f"Prepend{kind}")
    b.StartVector(size, len(items), alignment)
    for item in reversed(items):
        prepend(item)
    return b.EndVector()


# --- the models -----------------------------------------------------------------------------------


class Graph:
    """One subgraph: tensors (name, shape, constant data), operators, inputs and outputs."""

    def __init__(self, name):
        self.name, self.tensors, self.operators = name, [], []
        self.inputs, self.outputs = [], []

    def tensor(self, name, shape, data=None):
        self.tensors.append((name, list(shape), data))
        return len(self.tensors) - 1

    def input(self, name, shape):
        self.inputs.append(self.tensor(name, shape))
        return self.inputs[-1]

    def const(self, name, shape, value):
        return self.tensor(name, shape, np.full(shape, value, dtype=np.float32))

    def op(self, kind, inputs, output, shape):
        self.operators.append((kind, inputs, self.tensor(output, shape)))
        return len(self.tensors) - 1

    def serialize(self):
        b = flatbuffers.Builder(1024)
        buffers = [table(b)]  # buffer 0: the empty sentinel every non-constant tensor uses
        tensors = []
        for name, shape, data in self.tensors:
            buffer = 0
            if data is not None:
                raw = data.astype("<f4").tobytes()
                buffers.append(table(b, (0, "off", vector(b, "Uint8", raw, size=1, alignment=16))))
                buffer = len(buffers) - 1
            tensors.append(table(b, (0, "off", vector(b, "Int32", shape)), (1, "Int8", FLOAT32),
                                 (2, "Uint32", buffer), (3, "off", b.CreateString(name))))
        kinds = list(dict.fromkeys(kind for kind, _, _ in self.operators))
        # deprecated_builtin_code (the byte TF Lite 1.15 reads), version, builtin_code
        codes = [table(b, (0, "Int8", min(OPS[k][0], 127)), (2, "Int32", 1),
                       (3, "Int32", OPS[k][0])) for k in kinds]
        operators = []
        for kind, inputs, output in self.operators:
            options = table(b, (0, "Int8", 0))  # fused_activation_function NONE
            operators.append(table(b, (0, "Uint32", kinds.index(kind)),
                                   (1, "off", vector(b, "Int32", inputs)),
                                   (2, "off", vector(b, "Int32", [output])),
                                   (3, "Uint8", OPS[kind][1]), (4, "off", options)))
        subgraph = table(b, (0, "off", vector(b, "off", tensors)),
                         (1, "off", vector(b, "Int32", self.inputs)),
                         (2, "off", vector(b, "Int32", self.outputs)),
                         (3, "off", vector(b, "off", operators)),
                         (4, "off", b.CreateString("main")))

        def tensor_maps(indices):
            return vector(b, "off", [table(b, (0, "off", b.CreateString(self.tensors[i][0])),
                                           (1, "Uint32", i)) for i in indices])

        signature = table(b, (0, "off", tensor_maps(self.inputs)),
                          (1, "off", tensor_maps(self.outputs)),
                          (2, "off", b.CreateString("serving_default")), (4, "Uint32", 0))
        model = table(b, (0, "Uint32", SCHEMA_VERSION),
                      (1, "off", vector(b, "off", codes)),
                      (2, "off", vector(b, "off", [subgraph])),
                      (3, "off", b.CreateString("make_tflite_test_models.py")),
                      (4, "off", vector(b, "off", buffers)),
                      (7, "off", vector(b, "off", [signature])))
        b.Finish(model, file_identifier=b"TFL3")
        return bytes(b.Output())


def affine(name, shape, x="x", y="y"):
    """`y = x * 2 + 1` in FP32 with the given static shape."""
    g = Graph(name)
    scaled = g.op("MUL", [g.input(x, shape), g.const("two", shape, 2.0)], "scaled", shape)
    g.outputs.append(g.op("ADD", [scaled, g.const("one", shape, 1.0)], y, shape))
    return g


def two_io():
    g = Graph("two_io")
    a, b = g.input("a", [2, 3]), g.input("b", [2, 3])
    g.outputs += [g.op("ADD", [a, b], "sum", [2, 3]), g.op("MUL", [a, b], "product", [2, 3])]
    return g


def graphs():
    return [affine("affine", [1, 4]), affine("affine_fixed2", [2, 4]),
            affine("unbatched", [3], x="v", y="w"), two_io()]


def write_models(out_dir):
    """Writes every model into `out_dir` (created if missing); returns the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for g in graphs():
        paths.append(out / f"{g.name}.tflite")
        paths[-1].write_bytes(g.serialize())
    return paths


# --- --check --------------------------------------------------------------------------------------


def expected(g, feeds):
    """What each model must compute, in numpy float32, outputs in the model's order."""
    if g.name == "two_io":
        return {"sum": feeds["a"] + feeds["b"], "product": feeds["a"] * feeds["b"]}
    ((x, value),) = feeds.items()
    return {"w" if x == "v" else "y": value * np.float32(2) + np.float32(1)}


def random_feeds(g, rng):
    return {g.tensors[i][0]: rng.standard_normal(g.tensors[i][1]).astype(np.float32) * 100
            for i in g.inputs}


def check_litert(g, path, rng):
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path))
    interp.allocate_tensors()
    names = [g.tensors[i][0] for i in g.inputs], [g.tensors[i][0] for i in g.outputs]
    ins, outs = interp.get_input_details(), interp.get_output_details()
    assert [d["name"] for d in ins] == names[0], ins
    assert [d["name"] for d in outs] == names[1], outs
    for d, i in zip(ins + outs, g.inputs + g.outputs):
        assert d["shape"].tolist() == g.tensors[i][1] and d["dtype"] == np.float32, d
    signatures = interp.get_signature_list()
    assert signatures == {"serving_default": {"inputs": sorted(names[0]),
                                              "outputs": sorted(names[1])}}, signatures
    runner = Interpreter(model_path=str(path)).get_signature_runner("serving_default")
    for _ in range(3):
        feeds = random_feeds(g, rng)
        want = expected(g, feeds)
        for d in ins:
            interp.set_tensor(d["index"], feeds[d["name"]])
        interp.invoke()
        got = {d["name"]: interp.get_tensor(d["index"]) for d in outs}
        assert list(got) == list(want), (got, want)
        assert all(np.array_equal(got[n], want[n]) for n in want), (got, want)
        got = runner(**feeds)
        assert all(np.array_equal(got[n], want[n]) for n in want), (got, want)
    return f"inputs {names[0]} outputs {names[1]}, signatures {signatures}"


def check_tflite_c(lib, g, path, rng):
    p = ctypes.c_void_p
    for name, restype, argtypes in [
        ("TfLiteModelCreateFromFile", p, [ctypes.c_char_p]), ("TfLiteModelDelete", None, [p]),
        ("TfLiteInterpreterCreate", p, [p, p]), ("TfLiteInterpreterDelete", None, [p]),
        ("TfLiteInterpreterAllocateTensors", ctypes.c_int, [p]),
        ("TfLiteInterpreterInvoke", ctypes.c_int, [p]),
        ("TfLiteInterpreterGetInputTensorCount", ctypes.c_int, [p]),
        ("TfLiteInterpreterGetOutputTensorCount", ctypes.c_int32, [p]),
        ("TfLiteInterpreterGetInputTensor", p, [p, ctypes.c_int32]),
        ("TfLiteInterpreterGetOutputTensor", p, [p, ctypes.c_int32]),
        ("TfLiteTensorName", ctypes.c_char_p, [p]), ("TfLiteTensorType", ctypes.c_int, [p]),
        ("TfLiteTensorNumDims", ctypes.c_int32, [p]),
        ("TfLiteTensorDim", ctypes.c_int32, [p, ctypes.c_int32]),
        ("TfLiteTensorCopyFromBuffer", ctypes.c_int, [p, p, ctypes.c_size_t]),
        ("TfLiteTensorCopyToBuffer", ctypes.c_int, [p, p, ctypes.c_size_t]),
    ]:
        getattr(lib, name).restype, getattr(lib, name).argtypes = restype, argtypes
    model = lib.TfLiteModelCreateFromFile(str(path).encode())
    assert model, "TfLiteModelCreateFromFile failed"
    interp = lib.TfLiteInterpreterCreate(model, None)
    assert interp, "TfLiteInterpreterCreate failed"
    assert lib.TfLiteInterpreterAllocateTensors(interp) == 0, "AllocateTensors failed"
    assert lib.TfLiteInterpreterGetInputTensorCount(interp) == len(g.inputs)
    assert lib.TfLiteInterpreterGetOutputTensorCount(interp) == len(g.outputs)
    ins = [lib.TfLiteInterpreterGetInputTensor(interp, k) for k in range(len(g.inputs))]
    outs = [lib.TfLiteInterpreterGetOutputTensor(interp, k) for k in range(len(g.outputs))]
    names = []
    for t, i in zip(ins + outs, g.inputs + g.outputs):
        dims = [lib.TfLiteTensorDim(t, d) for d in range(lib.TfLiteTensorNumDims(t))]
        names.append(lib.TfLiteTensorName(t).decode())
        assert names[-1] == g.tensors[i][0] and dims == g.tensors[i][1], (names[-1], dims)
        assert lib.TfLiteTensorType(t) == K_FLOAT32, lib.TfLiteTensorType(t)
    assert names[len(ins):] == list(expected(g, random_feeds(g, rng))), names
    for _ in range(3):
        feeds = random_feeds(g, rng)
        want = expected(g, feeds)
        for t, name in zip(ins, names):
            x = np.ascontiguousarray(feeds[name])
            assert lib.TfLiteTensorCopyFromBuffer(t, x.ctypes.data, x.nbytes) == 0
        assert lib.TfLiteInterpreterInvoke(interp) == 0, "Invoke failed"
        for t, name in zip(outs, names[len(ins):]):
            got = np.empty_like(want[name])
            assert lib.TfLiteTensorCopyToBuffer(t, got.ctypes.data, got.nbytes) == 0
            assert np.array_equal(got, want[name]), (name, got, want[name])
    lib.TfLiteInterpreterDelete(interp)
    lib.TfLiteModelDelete(model)
    return f"inputs {names[:len(ins)]} outputs {names[len(ins):]}"


def check(paths, lib_path):
    """Runs every model in each runtime that is there; returns False if one failed."""
    runtimes = []
    try:
        import ai_edge_litert.interpreter  # noqa: F401

        runtimes.append(("LiteRT", check_litert))
    except ImportError as e:
        print(f"skipped LiteRT: {e}")
    if lib_path.exists():
        lib = ctypes.CDLL(str(lib_path), mode=os.RTLD_LOCAL | os.RTLD_NOW)
        lib.TfLiteVersion.restype = ctypes.c_char_p
        version = lib.TfLiteVersion().decode()
        runtimes.append((f"TF Lite {version} C API", lambda *a: check_tflite_c(lib, *a)))
    else:
        print(f"skipped TF Lite C API: {lib_path} is missing (scripts/make_tflite_fixtures.sh)")
    ok = True
    for label, run in runtimes:
        for g, path in zip(graphs(), paths):
            try:
                print(f"ok: {label}: {path.name}: {run(g, path, np.random.default_rng(0))}")
            except Exception as e:  # report every model and runtime, then fail
                print(f"FAIL: {label}: {path.name}: {type(e).__name__}: {e}")
                ok = False
    return ok


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--check", action="store_true", help="run the models in both runtimes")
    parser.add_argument("--tflite-c", type=Path,
                        default=ROOT / "target" / "tflite-fixtures" / "libtensorflowlite_c.so")
    args = parser.parse_args()
    paths = write_models(args.out_dir)
    if args.check and not check(paths, args.tflite_c):
        sys.exit(1)


if __name__ == "__main__":
    main()
