"""The stock Python client (tritonclient[grpc]) against a running inference-server.

Checks the KServe v2 RPCs the client uses (liveness, readiness, metadata, Triton's ModelConfig,
ModelInfer with raw tensors), that served logits equal onnxruntime run in-process on the same
model file, that accuracy on the digits test split through the server is at least 95 %, and that
bad requests fail with messages that say what is wrong. See conftest.py for how to run.
"""

import threading

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

MODEL = "digits-cnn"
MAX_BATCH = 64


def infer(client, batch, model=MODEL, datatype="FP32", name="input"):
    inp = grpcclient.InferInput(name, list(batch.shape), datatype)
    inp.set_data_from_numpy(batch)
    result = client.infer(model, [inp], outputs=[grpcclient.InferRequestedOutput("logits")])
    return result.as_numpy("logits")


def test_server_and_model_ready(client):
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready(MODEL)


def test_model_metadata(client):
    md = client.get_model_metadata(MODEL, as_json=True)
    assert md["name"] == MODEL
    assert [(t["name"], t["datatype"], [int(d) for d in t["shape"]]) for t in md["inputs"]] == [
        ("input", "FP32", [-1, 1, 8, 8])]
    assert [(t["name"], t["datatype"], [int(d) for d in t["shape"]]) for t in md["outputs"]] == [
        ("logits", "FP32", [-1, 10])]


def test_model_config(client):
    cfg = client.get_model_config(MODEL, as_json=True)["config"]
    assert cfg["name"] == MODEL
    assert int(cfg["max_batch_size"]) == MAX_BATCH
    # Triton convention: with max_batch_size > 0, dims leave out the batch dimension.
    assert [(t["name"], t["data_type"], [int(d) for d in t["dims"]]) for t in cfg["input"]] == [
        ("input", "TYPE_FP32", [1, 8, 8])]
    assert [(t["name"], t["data_type"], [int(d) for d in t["dims"]]) for t in cfg["output"]] == [
        ("logits", "TYPE_FP32", [10])]


@pytest.mark.parametrize("batch", [1, 7, MAX_BATCH])
def test_infer_matches_onnxruntime(client, digits_session, digits_test_set, batch):
    x = digits_test_set[0][:batch]
    got = infer(client, x)
    want = digits_session.run(["logits"], {"input": x})[0]
    assert got.dtype == np.float32 and got.shape == (batch, 10)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


def test_accuracy_batched(client, digits_test_set):
    x, y = digits_test_set
    logits = np.concatenate([infer(client, x[i:i + 50]) for i in range(0, len(x), 50)])
    accuracy = float((logits.argmax(axis=1) == y).mean())
    print(f"digits-cnn accuracy through the server: {accuracy:.4f} on {len(y)} images")
    assert accuracy >= 0.95


def test_concurrent_single_requests(client, digits_session, digits_test_set):
    """Many one-image requests in flight at once (the dynamic batcher may merge them): every
    answer must belong to its own request."""
    x, y = digits_test_set
    results, errors, done = {}, [], threading.Semaphore(0)

    def callback(index):
        def on_done(result, error):
            if error is not None:
                errors.append(error)
            else:
                results[index] = result.as_numpy("logits")
            done.release()
        return on_done

    n = len(x)
    for i in range(n):
        inp = grpcclient.InferInput("input", [1, 1, 8, 8], "FP32")
        inp.set_data_from_numpy(x[i:i + 1])
        client.async_infer(MODEL, [inp], callback(i),
                           outputs=[grpcclient.InferRequestedOutput("logits")])
    for _ in range(n):
        assert done.acquire(timeout=60), "server did not answer every request within 60 s"
    assert not errors, errors[:3]
    got = np.concatenate([results[i] for i in range(n)])
    want = digits_session.run(["logits"], {"input": x})[0]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    assert float((got.argmax(axis=1) == y).mean()) >= 0.95


def test_wrong_shape_is_rejected(client):
    with pytest.raises(InferenceServerException) as err:
        infer(client, np.zeros((1, 1, 9, 9), np.float32))
    message = str(err.value)
    assert "shape" in message and "9" in message, message


def test_batch_larger_than_max_is_rejected(client):
    with pytest.raises(InferenceServerException) as err:
        infer(client, np.zeros((MAX_BATCH + 1, 1, 8, 8), np.float32))
    assert str(MAX_BATCH + 1) in str(err.value), str(err.value)


def test_wrong_datatype_is_rejected(client):
    with pytest.raises(InferenceServerException) as err:
        infer(client, np.zeros((1, 1, 8, 8), np.int32), datatype="INT32")
    assert "INT32" in str(err.value) and "FP32" in str(err.value), str(err.value)


def test_unknown_input_and_model_are_rejected(client):
    with pytest.raises(InferenceServerException) as err:
        infer(client, np.zeros((1, 1, 8, 8), np.float32), name="image")
    assert "image" in str(err.value), str(err.value)
    with pytest.raises(InferenceServerException):
        infer(client, np.zeros((1, 1, 8, 8), np.float32), model="no-such-model")
