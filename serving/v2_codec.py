"""Open Inference Protocol (KServe V2 / Triton HTTP) tensors: request decoding, output encoding.

Protocol-only: nothing here knows about models, plans or Flask. `serving.v2` turns the decoded
tensors into what a model takes.

Request body: a JSON header, optionally followed by raw tensor bytes (Triton's binary tensor
extension). With the `Inference-Header-Content-Length: <n>` header the first n bytes are the
JSON; every input whose `parameters.binary_data_size` is k then takes the next k bytes, in input
order. Raw values are little-endian; BOOL is one byte per element; BYTES elements are each a
4-byte little-endian length followed by that many bytes.

Hot path: `orjson.loads`, one C-level type scan per nesting level (`set(map(type, ...))`, needed
because `np.asarray` with a numeric dtype silently accepts `"1.5"`, `true` and `null`), one
`np.asarray` on the flat values and a reshape; `np.frombuffer` for binary data.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any

import numpy as np
import orjson

from registry.errors import MalformedRequest
from serving.body_budget import Budget, enforce
from serving.content_coding import decode_content

__all__ = [
    "DATATYPES",
    "FLOAT_DATATYPES",
    "HEADER_LENGTH",
    "InferRequest",
    "RequestedOutput",
    "Tensor",
    "datatype_of",
    "decode_content",
    "decode_request",
    "encode_output",
    "encode_response",
]

HEADER_LENGTH = "Inference-Header-Content-Length"

# Wire dtypes: explicitly little-endian, whatever the host's byte order.
DATATYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype("?"),
    "INT8": np.dtype("i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "UINT8": np.dtype("u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "BYTES": np.dtype(object),
}
FLOAT_DATATYPES = frozenset({"FP16", "FP32", "FP64"})
_INT_DATATYPES = frozenset(d for d in DATATYPES if d.startswith(("INT", "UINT")))
_DATATYPE_LIST = ", ".join(DATATYPES)

# Exact JSON value types accepted per datatype family (bool is a subclass of int: exact types
# keep `true` out of numeric tensors and `1` out of BOOL tensors).
_FLOAT_KINDS = frozenset({int, float})
_INT_KINDS = frozenset({int})
_BOOL_KINDS = frozenset({bool})
_STR_KINDS = frozenset({str})
_LIST = frozenset({list})

_LENGTH = struct.Struct("<I")
_MAX_REPORTED_NAME = 64


@dataclass(frozen=True, slots=True)
class Tensor:
    """One decoded input: `array` has `shape`; BYTES tensors hold Python str (UTF-8 decoded)."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    array: np.ndarray
    parameters: dict[str, Any]


@dataclass(frozen=True, slots=True)
class RequestedOutput:
    name: str
    binary: bool | None  # None: follow the request's parameters.binary_data_output


@dataclass(frozen=True, slots=True)
class InferRequest:
    id: Any  # echoed as is; None when absent
    parameters: dict[str, Any]
    inputs: list[Tensor]
    outputs: list[RequestedOutput] | None  # None: the server's default outputs
    binary_output: bool  # parameters.binary_data_output: the default for outputs


def _bad(message: str, field: str = "body") -> MalformedRequest:
    return MalformedRequest(message, {field: message})


def _whole(value: Any) -> Any:
    """`3.0` as 3 (an integer to JSON Schema; some encoders write every number as a float);
    anything else as it is, for the caller to refuse."""
    if type(value) is float and value.is_integer():
        return int(value)
    return value


def _clip(value: Any) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= _MAX_REPORTED_NAME else text[:_MAX_REPORTED_NAME] + "..."


# --------------------------------------------------------------------------- request


def decode_request(
    body: bytes, header_length: str | None, budget: Budget | None = None
) -> InferRequest:
    """Parse an inference request (JSON, or JSON + binary tensors). Raises MalformedRequest,
    or InvalidInput when the JSON holds more than `budget` allows (checked before parsing)."""
    binary = memoryview(b"")
    if header_length is not None:
        text = header_length.strip()
        if not (text.isdigit() and text.isascii()):
            raise _bad(f"{HEADER_LENGTH} must be a non-negative integer", HEADER_LENGTH)
        size = int(text)
        if size == 0 or size > len(body):
            raise _bad(
                f"{HEADER_LENGTH} is {size} but the body has {len(body)} bytes", HEADER_LENGTH
            )
        binary = memoryview(body)[size:]
        body = body[:size]
    if budget is not None and len(body) > budget.scan_above:
        enforce(body, budget)
    try:
        header = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise _bad(f"the request is not valid JSON: {error}") from None
    if type(header) is not dict:
        raise _bad("the request must be a JSON object with an 'inputs' list")

    parameters = _parameters(header.get("parameters"), "parameters")
    binary_output = parameters.get("binary_data_output", False)
    if type(binary_output) is not bool:
        raise _bad("parameters.binary_data_output must be true or false", "parameters")

    raw_inputs = header.get("inputs")
    if type(raw_inputs) is not list or not raw_inputs:
        raise _bad("'inputs' must be a non-empty list of tensors", "inputs")
    inputs: list[Tensor] = []
    seen: set[str] = set()
    offset = 0
    for i, raw in enumerate(raw_inputs):
        tensor, used = _decode_input(raw, i, binary, offset)
        if tensor.name in seen:
            raise _bad(f"input {_clip(tensor.name)!r} is given twice", f"inputs[{i}].name")
        seen.add(tensor.name)
        inputs.append(tensor)
        offset += used
    if offset != len(binary):
        raise _bad(
            f"{len(binary) - offset} bytes of binary data follow the JSON header but no input "
            "claims them (set parameters.binary_data_size on each binary input)",
            HEADER_LENGTH,
        )

    return InferRequest(
        id=header.get("id"),
        parameters=parameters,
        inputs=inputs,
        outputs=_decode_outputs(header.get("outputs")),
        binary_output=binary_output,
    )


def _parameters(value: Any, field: str) -> dict[str, Any]:
    if value is None:
        return {}
    if type(value) is not dict:
        raise _bad(f"{field} must be an object", field)
    return value


def _decode_input(raw: Any, i: int, binary: memoryview, offset: int) -> tuple[Tensor, int]:
    field = f"inputs[{i}]"
    if type(raw) is not dict:
        raise _bad(f"{field} must be an object with name, shape, datatype and data", field)
    name = raw.get("name")
    if type(name) is not str or not name:
        raise _bad(f"{field}.name must be a non-empty string", f"{field}.name")
    where = f"input {_clip(name)!r}"
    datatype = raw.get("datatype")
    dtype = DATATYPES.get(datatype) if type(datatype) is str else None
    if dtype is None:
        raise _bad(
            f"{where}: unsupported datatype {_clip(datatype)}; use one of {_DATATYPE_LIST}",
            f"{field}.datatype",
        )
    shape = raw.get("shape")
    if type(shape) is list and not all(type(d) is int for d in shape):
        shape = [_whole(d) for d in shape]
    if type(shape) is not list or not shape or not all(type(d) is int and d >= 0 for d in shape):
        raise _bad(
            f"{where}: shape must be a non-empty list of non-negative integers",
            f"{field}.shape",
        )
    count = math.prod(shape)
    parameters = _parameters(raw.get("parameters"), f"{field}.parameters")
    if "shared_memory_region" in parameters:
        raise _bad(f"{where}: shared memory is not supported", f"{field}.parameters")
    size = parameters.get("binary_data_size")
    if size is not None:
        size = _whole(size)
        if type(size) is not int or size < 0:
            raise _bad(
                f"{where}: binary_data_size must be a non-negative integer",
                f"{field}.parameters",
            )
        if "data" in raw:
            raise _bad(f"{where}: give either 'data' or binary_data_size, not both", field)
        if offset + size > len(binary):
            raise _bad(
                f"{where}: binary_data_size is {size} but only {len(binary) - offset} bytes of "
                f"binary data remain (is the {HEADER_LENGTH} header set?)",
                f"{field}.parameters",
            )
        chunk = binary[offset : offset + size]
        flat = _from_binary(chunk, datatype, dtype, count, where, field)
        used = size
    else:
        if "data" not in raw:
            raise _bad(f"{where}: 'data' is missing", f"{field}.data")
        flat = _from_json(raw["data"], datatype, dtype, count, where, field)
        used = 0
    array = flat.reshape(shape)
    return Tensor(name, datatype, tuple(shape), array, parameters), used


def _flatten(data: Any, where: str, field: str) -> tuple[list[Any], set[type]]:
    """Row-major leaves of nested lists and their types: one C-level pass per nesting level."""
    if type(data) is not list:
        raise _bad(f"{where}: data must be a list (flat or nested, row-major)", f"{field}.data")
    flat = data
    kinds = set(map(type, flat))
    while list in kinds:
        if kinds != _LIST:
            raise _bad(f"{where}: data mixes lists and values", f"{field}.data")
        flat = list(chain.from_iterable(flat))
        kinds = set(map(type, flat))
    return flat, kinds


def _from_json(
    data: Any, datatype: str, dtype: np.dtype, count: int, where: str, field: str
) -> np.ndarray:
    flat, kinds = _flatten(data, where, field)
    if len(flat) != count:
        raise _bad(
            f"{where}: shape holds {count} elements but data has {len(flat)}", f"{field}.shape"
        )
    if datatype in FLOAT_DATATYPES:
        allowed, expected = _FLOAT_KINDS, "numbers"
    elif datatype in _INT_DATATYPES:
        allowed, expected = _INT_KINDS, "integers"
    elif datatype == "BOOL":
        allowed, expected = _BOOL_KINDS, "true/false"
    else:
        allowed, expected = _STR_KINDS, "strings"
    if not kinds <= allowed:
        got = ", ".join(sorted(_kind_name(k) for k in kinds - allowed))
        raise _bad(f"{where}: {datatype} data must be {expected}, got {got}", f"{field}.data")
    if datatype == "BYTES":
        array = np.empty(count, dtype=object)
        array[:] = flat
        return array
    try:
        with np.errstate(over="ignore"):  # FP16/FP32 overflow: checked just below
            array = np.asarray(flat, dtype=dtype)
    except OverflowError:
        raise _bad(f"{where}: a value is out of range for {datatype}", f"{field}.data") from None
    if datatype in FLOAT_DATATYPES and datatype != "FP64" and not np.isfinite(array).all():
        raise _bad(f"{where}: a value is out of range for {datatype}", f"{field}.data")
    return array


def _kind_name(kind: type) -> str:
    return {
        bool: "booleans",
        int: "integers",
        float: "non-integral numbers",
        str: "strings",
        dict: "objects",
        type(None): "nulls",
    }.get(kind, kind.__name__)


def _from_binary(
    chunk: memoryview, datatype: str, dtype: np.dtype, count: int, where: str, field: str
) -> np.ndarray:
    if datatype == "BYTES":
        return _bytes_elements(chunk, count, where, field)
    expected = count * dtype.itemsize
    if len(chunk) != expected:
        raise _bad(
            f"{where}: shape holds {count} {datatype} elements ({expected} bytes) but "
            f"binary_data_size is {len(chunk)}",
            f"{field}.parameters",
        )
    if datatype == "BOOL":  # any non-zero byte is true; never reinterpret arbitrary bytes
        return np.frombuffer(chunk, dtype=np.uint8) != 0
    return np.frombuffer(chunk, dtype=dtype)


def _bytes_elements(chunk: memoryview, count: int, where: str, field: str) -> np.ndarray:
    out = np.empty(count, dtype=object)
    end = len(chunk)
    pos = 0
    unpack = _LENGTH.unpack_from
    for k in range(count):
        if pos + 4 > end:
            raise _bad(f"{where}: binary BYTES data ends before element {k}", f"{field}.parameters")
        (length,) = unpack(chunk, pos)
        pos += 4
        if pos + length > end:
            raise _bad(f"{where}: binary BYTES element {k} is truncated", f"{field}.parameters")
        try:
            out[k] = str(chunk[pos : pos + length], "utf-8")
        except UnicodeDecodeError:
            raise _bad(f"{where}: BYTES element {k} is not valid UTF-8", f"{field}.data") from None
        pos += length
    if pos != end:
        raise _bad(
            f"{where}: binary BYTES data holds more than the {count} elements of its shape",
            f"{field}.shape",
        )
    return out


def _decode_outputs(raw: Any) -> list[RequestedOutput] | None:
    if raw is None:
        return None
    if type(raw) is not list:
        raise _bad("'outputs' must be a list of {\"name\": ...} objects", "outputs")
    outputs: list[RequestedOutput] = []
    names: set[str] = set()
    for i, item in enumerate(raw):
        field = f"outputs[{i}]"
        if type(item) is not dict or type(item.get("name")) is not str:
            raise _bad(f"{field} must be an object with a string 'name'", field)
        name = item["name"]
        if name in names:
            raise _bad(f"output {_clip(name)!r} is requested twice", f"{field}.name")
        names.add(name)
        parameters = _parameters(item.get("parameters"), f"{field}.parameters")
        if parameters.get("classification"):
            raise _bad("the classification extension is not supported", f"{field}.parameters")
        if "shared_memory_region" in parameters:
            raise _bad("shared memory is not supported", f"{field}.parameters")
        binary = parameters.get("binary_data")
        if binary is not None and type(binary) is not bool:
            raise _bad(f"{field}.parameters.binary_data must be true or false", field)
        outputs.append(RequestedOutput(name, binary))
    return outputs


# --------------------------------------------------------------------------- response


def datatype_of(array: np.ndarray) -> str:
    kind = array.dtype.kind
    if kind == "b":
        return "BOOL"
    if kind in "iu":
        return f"{'UINT' if kind == 'u' else 'INT'}{array.dtype.itemsize * 8}"
    if kind == "f" and array.dtype.itemsize in (2, 4, 8):
        return f"FP{array.dtype.itemsize * 8}"
    return "BYTES"


def _as_array(values: Any) -> np.ndarray:
    array = np.asarray(values)
    if array.dtype.kind == "O":
        # Object arrays of plain numbers (e.g. class labels stored as objects): type them.
        try:
            typed = np.array(array.tolist())
        except (ValueError, TypeError, OverflowError):
            return array
        if typed.shape == array.shape and typed.dtype.kind in "biuf":
            return typed
    elif array.dtype.kind == "f" and array.dtype.itemsize not in (2, 4, 8):
        return array.astype(np.float64)
    return array


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value.item() if isinstance(value, np.generic) else value)


def encode_output(name: str, values: Any, binary: bool) -> tuple[dict[str, Any], bytes | None]:
    """One output tensor: its JSON entry, plus its raw bytes when sent as binary data."""
    array = _as_array(values)
    datatype = datatype_of(array)
    entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(array.shape)}
    if datatype == "BYTES":
        texts = [_text(v) for v in array.reshape(-1).tolist()]
        if not binary:
            entry["data"] = texts
            return entry, None
        encoded = [t.encode("utf-8") for t in texts]
        raw = b"".join(chain.from_iterable((_LENGTH.pack(len(e)), e) for e in encoded))
    else:
        flat = np.ascontiguousarray(array.reshape(-1), dtype=DATATYPES[datatype])
        if not binary:
            entry["data"] = flat
            return entry, None
        raw = flat.tobytes()
    entry["parameters"] = {"binary_data_size": len(raw)}
    return entry, raw


def encode_response(header: dict[str, Any], binaries: Sequence[bytes]) -> tuple[bytes, int | None]:
    """The body, and the JSON header's length when binary data follows it (else None)."""
    head = orjson.dumps(header, option=orjson.OPT_SERIALIZE_NUMPY)
    if not binaries:
        return head, None
    return b"".join((head, *binaries)), len(head)
