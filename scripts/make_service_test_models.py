"""Writes the ONNX models the server's gRPC tests need beyond scripts/make_test_models.py.

Usage: make_service_test_models.py OUT_DIR

  two_io.onnx     a, b FP32 [N,3]  -> sum = a + b, product = a * b   (two inputs, two outputs)
  unbatched.onnx  v FP32 [3]       -> w = v * 2 + 1                  (no batch dimension)
  typed_identity.onnx  in_<T> [N,3] -> out_<T> = in_<T>, for every type with typed contents

N is a dynamic batch dimension. Needs only numpy and onnx.
"""

import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 13
IR_VERSION = 8


def save(graph, path):
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


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


def unbatched():
    v = helper.make_tensor_value_info("v", TensorProto.FLOAT, [3])
    w = helper.make_tensor_value_info("w", TensorProto.FLOAT, [3])
    two = numpy_helper.from_array(np.array(2.0, dtype=np.float32), "two")
    one = numpy_helper.from_array(np.array(1.0, dtype=np.float32), "one")
    nodes = [
        helper.make_node("Mul", ["v", "two"], ["scaled"]),
        helper.make_node("Add", ["scaled", "one"], ["w"]),
    ]
    return helper.make_graph(nodes, "unbatched", [v], [w], initializer=[two, one])


# Datatypes that have a typed contents field (FP16 and BF16 travel raw only).
TYPED = {
    "bool": TensorProto.BOOL,
    "uint8": TensorProto.UINT8,
    "int8": TensorProto.INT8,
    "uint16": TensorProto.UINT16,
    "int16": TensorProto.INT16,
    "uint32": TensorProto.UINT32,
    "int32": TensorProto.INT32,
    "uint64": TensorProto.UINT64,
    "int64": TensorProto.INT64,
    "fp32": TensorProto.FLOAT,
    "fp64": TensorProto.DOUBLE,
}


def typed_identity():
    inputs, outputs, nodes = [], [], []
    for suffix, elem in TYPED.items():
        inputs.append(helper.make_tensor_value_info(f"in_{suffix}", elem, ["N", 3]))
        outputs.append(helper.make_tensor_value_info(f"out_{suffix}", elem, ["N", 3]))
        nodes.append(helper.make_node("Identity", [f"in_{suffix}"], [f"out_{suffix}"]))
    return helper.make_graph(nodes, "typed_identity", inputs, outputs)


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: make_service_test_models.py OUT_DIR")
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    for name, build in (
        ("two_io", two_io),
        ("unbatched", unbatched),
        ("typed_identity", typed_identity),
    ):
        save(build(), out / f"{name}.onnx")


if __name__ == "__main__":
    main()
