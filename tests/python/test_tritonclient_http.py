"""The stock HTTP client (tritonclient.http) against the server's KServe v2 REST port: the same
answers as over gRPC (readiness, metadata, Triton's config, statistics), inference with JSON and
with binary tensors equal to onnxruntime in-process, system shared memory over HTTP, and errors
with their messages.
"""

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

MODEL = "digits-cnn"


@pytest.fixture(scope="module")
def http(http_url, client):  # `client` waits until the server is live
    c = httpclient.InferenceServerClient(url=http_url)
    yield c
    c.close()


def infer(http, batch, binary):
    inp = httpclient.InferInput("input", list(batch.shape), "FP32")
    inp.set_data_from_numpy(batch, binary_data=binary)
    out = httpclient.InferRequestedOutput("logits", binary_data=binary)
    return http.infer(MODEL, [inp], outputs=[out])


def test_health_and_metadata(http):
    assert http.is_server_live() and http.is_server_ready() and http.is_model_ready(MODEL)
    meta = http.get_server_metadata()
    assert "statistics" in meta["extensions"] and "system_shared_memory" in meta["extensions"]
    model = http.get_model_metadata(MODEL)
    assert model["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 1, 8, 8]}]
    config = http.get_model_config(MODEL)
    assert config["max_batch_size"] == 64 and config["input"][0]["data_type"] == "TYPE_FP32"
    assert http.get_model_repository_index()[0]["state"] == "READY"


@pytest.mark.parametrize("binary", [True, False])
def test_infer_matches_onnxruntime(http, digits_session, digits_test_set, binary):
    x = digits_test_set[0][:5]
    got = infer(http, x, binary).as_numpy("logits")
    want = digits_session.run(["logits"], {"input": x})[0]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


def test_statistics_over_http(http):
    infer(http, np.zeros((1, 1, 8, 8), np.float32), True)
    stats = http.get_inference_statistics(MODEL)["model_stats"][0]
    s = stats["inference_stats"]
    assert s["compute_input"]["count"] == s["compute_infer"]["count"] == s["compute_output"]["count"]
    assert stats["version"] == "1" and s["success"]["count"] >= 1


def test_shared_memory_over_http(http):
    import tritonclient.utils.shared_memory as shm

    x = np.arange(64, dtype=np.float32).reshape(1, 1, 8, 8) / 64
    names = ("pytest_http_input", "pytest_http_output")
    handles = [shm.create_shared_memory_region(names[0], "/" + names[0], x.nbytes),
               shm.create_shared_memory_region(names[1], "/" + names[1], 40)]
    try:
        shm.set_shared_memory_region(handles[0], [x])
        http.register_system_shared_memory(names[0], "/" + names[0], x.nbytes)
        http.register_system_shared_memory(names[1], "/" + names[1], 40)
        inp = httpclient.InferInput("input", [1, 1, 8, 8], "FP32")
        inp.set_shared_memory(names[0], x.nbytes)
        out = httpclient.InferRequestedOutput("logits", binary_data=True)
        out.set_shared_memory(names[1], 40)
        result = http.infer(MODEL, [inp], outputs=[out])
        assert result.get_output("logits") is not None
        logits = shm.get_contents_as_numpy(handles[1], np.float32, [1, 10])
        direct = infer(http, x, True).as_numpy("logits")
        np.testing.assert_allclose(logits, direct, rtol=0, atol=1e-6)
        status = http.get_system_shared_memory_status()
        assert {r["name"] for r in status} == set(names)
    finally:
        http.unregister_system_shared_memory()
        for handle in handles:
            shm.destroy_shared_memory_region(handle)


def test_errors_carry_their_message(http):
    with pytest.raises(InferenceServerException, match="unknown model 'nope'"):
        http.get_model_metadata("nope")
    inp = httpclient.InferInput("input", [1, 1, 8, 9], "FP32")
    inp.set_data_from_numpy(np.zeros((1, 1, 8, 9), np.float32))
    with pytest.raises(InferenceServerException, match="shape"):
        http.infer(MODEL, [inp])
