"""The gRPC ecosystem's own reflection and health clients (grpcio-reflection, grpcio-health-
checking) against the server: reflection v1alpha — the version grpcurl speaks — lists and
describes the inference service, and the health service follows the health-checking protocol.
(grpcurl itself is on no package registry this project can reach; its `list` and `describe` are
these reflection calls.)
"""

import grpc
import pytest


@pytest.fixture(scope="module")
def channel(grpc_url, client):  # `client` waits until the server is live
    ch = grpc.insecure_channel(grpc_url)
    yield ch
    ch.close()


def test_reflection_v1alpha_lists_and_describes_like_grpcurl(channel):
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase)
    from google.protobuf.descriptor_pool import DescriptorPool

    database = ProtoReflectionDescriptorDatabase(channel)
    services = database.get_services()
    assert "inference.GRPCInferenceService" in services
    assert "grpc.health.v1.Health" in services
    pool = DescriptorPool(database)
    service = pool.FindServiceByName("inference.GRPCInferenceService")
    methods = {m.name for m in service.methods}
    assert {"ModelInfer", "ModelStreamInfer", "ModelStatistics", "SystemSharedMemoryRegister"} <= methods
    request = pool.FindMessageTypeByName("inference.ModelInferRequest")
    assert "raw_input_contents" in request.fields_by_name


def test_health_check_and_watch(channel):
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    stub = health_pb2_grpc.HealthStub(channel)
    serving = health_pb2.HealthCheckResponse.SERVING
    assert stub.Check(health_pb2.HealthCheckRequest(service="")).status == serving
    assert stub.Check(health_pb2.HealthCheckRequest(service="digits-cnn")).status == serving
    with pytest.raises(grpc.RpcError) as unknown:
        stub.Check(health_pb2.HealthCheckRequest(service="no-such-model"))
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    watch = stub.Watch(health_pb2.HealthCheckRequest(service="no-such-model"), timeout=5)
    assert next(watch).status == health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
    watch.cancel()
