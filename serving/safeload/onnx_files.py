"""ONNX files are data, except where a tensor says its bytes live in another file.

onnxruntime resolves "external data" locations relative to the process's working directory
when a model comes from bytes, so an uploaded model could make the server read any file it can
open and answer it as predictions. A model the server runs must carry every tensor inline:
initializers, sparse initializers and constant attributes, in the main graph, every subgraph
(If/Loop/Scan bodies) and every local function, are checked before a session is built.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from registry.errors import InvalidInput


class ExternalData(InvalidInput):
    title = "ONNX model refers to external data"


def _graphs(model: Any) -> Iterator[Any]:
    stack = [model.graph]
    for function in model.functions:
        stack.extend(_attribute_graphs(function.node))
    while stack:
        graph = stack.pop()
        yield graph
        stack.extend(_attribute_graphs(graph.node))


def _attribute_graphs(nodes: Any) -> Iterator[Any]:
    for node in nodes:
        for attribute in node.attribute:
            if attribute.HasField("g"):
                yield attribute.g
            yield from attribute.graphs


def _tensors(model: Any) -> Iterator[tuple[str, Any]]:
    node_lists = [function.node for function in model.functions]
    for graph in _graphs(model):
        node_lists.append(graph.node)
        for tensor in graph.initializer:
            yield f"initializer {tensor.name!r}", tensor
        for sparse in graph.sparse_initializer:
            yield f"sparse initializer {sparse.values.name!r}", sparse.values
            yield f"sparse initializer {sparse.values.name!r}", sparse.indices
    for nodes in node_lists:
        for node in nodes:
            for attribute in node.attribute:
                where = f"attribute {attribute.name!r} of node {node.name or node.op_type!r}"
                if attribute.HasField("t"):
                    yield where, attribute.t
                for tensor in attribute.tensors:
                    yield where, tensor
                if attribute.HasField("sparse_tensor"):
                    yield where, attribute.sparse_tensor.values
                    yield where, attribute.sparse_tensor.indices
                for sparse in attribute.sparse_tensors:
                    yield where, sparse.values
                    yield where, sparse.indices


def check_onnx_inline(data: bytes) -> Any:
    """The parsed model (an onnx.ModelProto); raise ExternalData (or InvalidInput for an
    unreadable file) unless every tensor is stored inside the model."""
    import onnx
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load_from_string(data)
    except (DecodeError, ValueError, RuntimeError) as error:
        raise InvalidInput(
            "the artifact is not a readable ONNX model",
            {"artifact": f"not an ONNX model ({type(error).__name__})"},
        ) from None
    for where, tensor in _tensors(model):
        if tensor.data_location == onnx.TensorProto.EXTERNAL or len(tensor.external_data):
            raise ExternalData(
                f"the ONNX model's {where} refers to external data; models must carry "
                "their tensors inline (save with onnx.save_model(..., "
                "save_as_external_data=False))",
                {"artifact": f"{where} refers to external data"},
            )
    return model
