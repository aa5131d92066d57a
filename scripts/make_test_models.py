"""Writes the tiny ONNX models the server's backend, scheduler and gRPC tests load.

Usage: make_test_models.py OUT_DIR

  affine.onnx          x FP32 [N,4]     -> y = x * 2 + 1  FP32 [N,4]  (dynamic batch)
  affine_fixed2.onnx   x FP32 [2,4]     -> y = x * 2 + 1  FP32 [2,4]  (fixed batch of 2)
  affine_ragged.onnx   x FP32 [N,L]     -> y = x * 2 + 1  FP32 [N,L]  (dynamic batch and length)
  unbatched.onnx       v FP32 [3]       -> w = v * 2 + 1              (no batch dimension)
  two_io.onnx          a, b FP32 [N,3]  -> sum = a + b, product = a * b  (two inputs, two outputs)
  identity_types.onnx  in_<T> [N,3]     -> out_<T> = in_<T>  for every element type below
  typed_identity.onnx  in_<T> [N,3]     -> out_<T> = in_<T>  for every type with typed contents

N is a dynamic batch dimension. Also writes the .tflite models of make_tflite_test_models.py
(affine, affine_fixed2, unbatched, two_io; static shapes). Needs only numpy, onnx and flatbuffers.
"""

import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from make_tflite_test_models import write_models as write_tflite_models

OPSET = 17
IR_VERSION = 8

# Name suffix -> ONNX element type, one per KServe datatype the backend carries.
TYPES = {
    "bool": TensorProto.BOOL,
    "uint8": TensorProto.UINT8,
    "int8": TensorProto.INT8,
    "uint16": TensorProto.UINT16,
    "int16": TensorProto.INT16,
    "uint32": TensorProto.UINT32,
    "int32": TensorProto.INT32,
    "uint64": TensorProto.UINT64,
    "int64": TensorProto.INT64,
    "fp16": TensorProto.FLOAT16,
    "bf16": TensorProto.BFLOAT16,
    "fp32": TensorProto.FLOAT,
    "fp64": TensorProto.DOUBLE,
}

# The datatypes that have a typed contents field (FP16 and BF16 travel raw only).
TYPED = {suffix: elem for suffix, elem in TYPES.items() if suffix not in ("fp16", "bf16")}


def save(graph, path):
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def affine(name, dims, x="x", y="y"):
    """`y = x * 2 + 1` in FP32 with the given shape."""
    inputs = [helper.make_tensor_value_info(x, TensorProto.FLOAT, dims)]
    outputs = [helper.make_tensor_value_info(y, TensorProto.FLOAT, dims)]
    two = numpy_helper.from_array(np.array(2.0, dtype=np.float32), "two")
    one = numpy_helper.from_array(np.array(1.0, dtype=np.float32), "one")
    nodes = [
        helper.make_node("Mul", [x, "two"], ["scaled"]),
        helper.make_node("Add", ["scaled", "one"], [y]),
    ]
    return helper.make_graph(nodes, name, inputs, outputs, initializer=[two, one])


def two_io():
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", 3]) for n in ("a", "b")]
    outputs = [
        helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", 3]) for n in ("sum", "product")
    ]
    nodes = [
        helper.make_node("Add", ["a", "b"], ["sum"]),
        helper.make_node("Mul", ["a", "b"], ["product"]),
    ]
    return helper.make_graph(nodes, "two_io", inputs, outputs)


def identity(name, types):
    """One `Identity` from `in_<T>` to `out_<T>` ([N,3]) per entry of `types`."""
    inputs, outputs, nodes = [], [], []
    for suffix, elem in types.items():
        inputs.append(helper.make_tensor_value_info(f"in_{suffix}", elem, ["N", 3]))
        outputs.append(helper.make_tensor_value_info(f"out_{suffix}", elem, ["N", 3]))
        nodes.append(helper.make_node("Identity", [f"in_{suffix}"], [f"out_{suffix}"]))
    return helper.make_graph(nodes, name, inputs, outputs)


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    for graph in (
        affine("affine", ["N", 4]),
        affine("affine_fixed2", [2, 4]),
        affine("affine_ragged", ["N", "L"]),
        affine("unbatched", [3], x="v", y="w"),
        two_io(),
        identity("identity_types", TYPES),
        identity("typed_identity", TYPED),
    ):
        save(graph, out / f"{graph.name}.onnx")
    write_tflite_models(out)


if __name__ == "__main__":
    main()
