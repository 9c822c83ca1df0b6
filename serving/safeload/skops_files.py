"""Loading skops files: bounded, judged by name against the allowlist, then built.

skops' own audit (`get_untrusted_types`) reports what a file contains, but the caller decides
what to trust; trusting every reported type whose module starts with "numpy" once let a file
call numpy.testing's runstring with a code string. Here the schema is read once from a zip
whose member count and sizes are bounded, every node in it is checked against an explicit
allowlist by its loader kind and type name, and only then does skops build it, with that same
explicit list as its own trusted set (a second, independent check).
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from registry.errors import InvalidInput
from serving.safeload.allowlist import model_classes, model_functions

# Node loaders skops writes for model content, and the names each may carry. Loaders that
# reach for arbitrary attributes or callables (MethodNode, OperatorFuncNode) and anything
# unknown are refused.
CONTAINER_TYPES = {
    "DictNode": {"builtins.dict", "collections.OrderedDict", "sklearn.utils._bunch.Bunch"},
    "DefaultDictNode": {"collections.defaultdict"},
    "ListNode": {"builtins.list"},
    "SetNode": {"builtins.set"},
    "TupleNode": {"builtins.tuple"},
    "SliceNode": {"builtins.slice"},
    "BytesNode": {"builtins.bytes"},
    "BytearrayNode": {"builtins.bytearray"},
    "RandomStateNode": {"numpy.random.mtrand.RandomState"},
    "MaskedArrayNode": {"numpy.ma.MaskedArray", "numpy.ma.core.MaskedArray"},
    # a partial only binds arguments: its function is a node of its own, judged like any other
    "PartialNode": {"functools.partial"},
}
# Protocols whose node loaders were reviewed against the checks below.
MIN_PROTOCOL = 2
GENERATOR_TYPES = frozenset({"numpy.random._generator.Generator", "numpy.random.Generator"})
# ReduceNode and ConstructorFromReduceNode call a class with arguments from the file
# (`bytearray(3_000_000_000)`, an uninitialized `numpy.ndarray(64)`); no scikit-learn model
# skops writes needs them, so they are refused with the loaders above.
CLASS_LOADERS = frozenset({"ObjectNode", "TreeNode", "LossNode"})


@dataclass(frozen=True, slots=True)
class SkopsLimits:
    """Bounds on what a skops file may make the server read and inflate."""

    max_members: int = 100_000
    max_uncompressed_bytes: int = 4 * 1024**3
    max_schema_bytes: int = 64 * 1024**2
    # Inflated size against the stored size: models are arrays that barely compress, a bomb
    # inflates a thousandfold. Below `ratio_floor_bytes` any ratio is fine.
    max_ratio: float = 200.0
    ratio_floor_bytes: int = 64 * 1024**2


class UntrustedTypes(InvalidInput):
    title = "Artifact contains untrusted types"


class UnsafeArchive(InvalidInput):
    title = "Artifact archive exceeds its bounds"


def _refuse_archive(reason: str) -> UnsafeArchive:
    return UnsafeArchive(f"the skops archive was refused: {reason}", {"artifact": reason})


def _check_archive(archive: zipfile.ZipFile, stored_size: int, limits: SkopsLimits) -> None:
    members = archive.infolist()
    if len(members) > limits.max_members:
        raise _refuse_archive(f"{len(members)} members (limit {limits.max_members})")
    # zipfile never inflates a member past the size its directory entry declares (it checks
    # the length and CRC at the end), so the declared sizes bound what reading can cost.
    total = sum(m.file_size for m in members)
    if total > limits.max_uncompressed_bytes:
        raise _refuse_archive(f"{total} bytes uncompressed (limit {limits.max_uncompressed_bytes})")
    if total > limits.ratio_floor_bytes and total > limits.max_ratio * max(stored_size, 1):
        raise _refuse_archive(
            f"{total} bytes uncompressed from {stored_size} stored "
            f"(more than {limits.max_ratio:g}x)"
        )
    try:
        schema = archive.getinfo("schema.json")
    except KeyError:
        raise _refuse_archive("no schema.json") from None
    if schema.file_size > limits.max_schema_bytes:
        raise _refuse_archive(
            f"schema.json is {schema.file_size} bytes (limit {limits.max_schema_bytes})"
        )


def _nodes(tree: Any) -> Iterator[dict[str, Any]]:
    """Every dict in the schema that names a type; nothing is skipped by key."""
    stack = [tree]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if "__loader__" in item or "__class__" in item or "__module__" in item:
                yield item
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _names_a_bit_generator(node: dict[str, Any]) -> bool:
    """A Generator node names its bit generator in a plain string, which skops turns into a
    numpy.random attribute and calls: it must be a BitGenerator class."""
    import numpy as np

    try:
        name = json.loads(node["content"]["bit_generator"]["content"]["bit_generator"]["content"])
    except (KeyError, TypeError, ValueError):
        return False
    found = getattr(np.random, name, None) if isinstance(name, str) else None
    return isinstance(found, type) and issubclass(found, np.random.BitGenerator)


def refused_names(schema: dict[str, Any], extra_classes: frozenset[str] = frozenset()) -> list[str]:
    """Names in a skops schema outside the allowlist, each with its loader: empty when safe."""
    classes = model_classes() | extra_classes
    functions = model_functions()
    refused: set[str] = set()
    for node in _nodes(schema):
        loader = node.get("__loader__")
        module, cls = node.get("__module__"), node.get("__class__")
        if not isinstance(module, str) or not isinstance(cls, str):
            refused.add(f"{loader}: a node without a type name")
            continue
        name = f"{module}.{cls}"
        if loader == "JsonNode":
            ok = module == "builtins"  # its content is parsed as JSON, never imported
        elif loader in CONTAINER_TYPES:
            ok = name in CONTAINER_TYPES[loader]
        elif loader in CLASS_LOADERS:
            ok = name in classes
        elif loader == "NdArrayNode":
            # an array, or a NumPy scalar built from one
            ok = name == "numpy.ndarray" or (name.startswith("numpy.") and name in classes)
        elif loader == "DTypeNode":
            ok = name == "numpy.dtype" or (name.startswith("numpy.dtypes.") and name in classes)
        elif loader == "SparseMatrixNode":
            ok = name.startswith("scipy.sparse.") and name in classes
        elif loader == "TypeNode":
            ok = name in classes  # a reference to an allowed class (a dtype, say)
        elif loader == "FunctionNode":
            ok = name in functions
        elif loader == "RandomGeneratorNode":
            ok = name in GENERATOR_TYPES and _names_a_bit_generator(node)
        else:
            ok = False
        if not ok:
            refused.add(f"{name} ({loader})")
    return sorted(refused)


def _build(
    data: bytes, archive: zipfile.ZipFile, schema: dict[str, Any], trusted: list[str]
) -> Any:
    """Build the audited schema with skops, from the schema already read (one parse)."""
    try:
        from skops.io._audit import audit_tree, get_tree
        from skops.io._utils import LoadContext
    except ImportError:  # internals moved in another skops release: let skops read it again
        import skops.io

        return skops.io.loads(data, trusted=trusted)
    tree = get_tree(schema, LoadContext(src=archive, protocol=schema["protocol"]), trusted)
    audit_tree(tree, trusted=trusted)
    return tree.construct()


def _check_protocol(schema: dict[str, Any]) -> None:
    from skops.io._protocol import PROTOCOL

    protocol = schema.get("protocol")
    if isinstance(protocol, bool) or not isinstance(protocol, int):
        raise InvalidInput(
            "the skops schema has no valid protocol number", {"artifact": "bad protocol"}
        )
    if not MIN_PROTOCOL <= protocol <= PROTOCOL:
        raise InvalidInput(
            f"the skops file uses protocol {protocol}; this server reads protocols "
            f"{MIN_PROTOCOL} to {PROTOCOL} (save it again with a current skops)",
            {"artifact": f"skops protocol {protocol} is not supported"},
        )


def load_skops(
    data: bytes,
    *,
    limits: SkopsLimits | None = None,
    extra_classes: frozenset[str] = frozenset(),
) -> Any:
    """Build the model in a skops file, or raise InvalidInput naming what was refused."""
    limits = limits or SkopsLimits()
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError) as error:
        raise _unreadable(error) from None
    with archive:
        _check_archive(archive, len(data), limits)
        try:
            schema = json.loads(archive.read("schema.json"))
        except (zipfile.BadZipFile, ValueError, OSError, RecursionError) as error:
            raise _unreadable(error) from None
        if not isinstance(schema, dict):
            raise InvalidInput("the skops schema is not an object", {"artifact": "bad schema"})
        _check_protocol(schema)
        refused = refused_names(schema, extra_classes)
        if refused:
            raise UntrustedTypes(
                "the artifact names types and functions outside the allowlist of model "
                "classes: " + ", ".join(refused),
                {"artifact": "untrusted: " + ", ".join(refused)},
            )
        # skops audits the same tree again against the same explicit names before building.
        trusted = sorted(model_classes() | model_functions() | extra_classes)
        try:
            return _build(data, archive, schema, trusted)
        except RecursionError:
            raise InvalidInput(
                "the skops schema is nested too deeply", {"artifact": "nested too deeply"}
            ) from None


def _unreadable(error: BaseException) -> InvalidInput:
    return InvalidInput(
        "the artifact is not a readable skops file",
        {"artifact": f"not a skops archive ({type(error).__name__})"},
    )
