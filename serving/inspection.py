"""Registration's look at an uploaded artifact: it must load (safely) as its format and be a
model; the loaded model is then offered for conversion to a faster form."""

from __future__ import annotations

import logging
from typing import Any

from registry.errors import InvalidInput
from serving.accelerate import accelerate
from serving.formats import TrustPolicy, deserialize, infer_signature

log = logging.getLogger(__name__)


class Inspection:
    """A registration's one load of the artifact: its signature, and the model for conversion."""

    def __init__(self, model: Any, signature: dict[str, Any]) -> None:
        self.model = model
        self.signature = signature

    def accelerate(
        self, signature: Any, input_example: list[Any] | None, *, prefer_float32: bool = False
    ) -> Any:
        return accelerate(self.model, signature, input_example, prefer_float32=prefer_float32)


def make_inspector(trust: TrustPolicy) -> Any:
    """The registration-time check: the artifact must load as its format and be a model."""

    def inspect_artifact(path: str, fmt: str) -> Inspection:
        try:
            with open(path, "rb") as file:
                model = deserialize(file, fmt, trust=trust)
        except InvalidInput:
            raise
        except Exception as error:  # any loader failure means "not a model"
            log.info("artifact rejected at registration: %s: %s", type(error).__name__, error)
            raise InvalidInput(
                f"the artifact could not be loaded as {fmt}",
                {"artifact": f"not a loadable {fmt} model ({type(error).__name__})"},
            ) from None
        return Inspection(model, infer_signature(model))

    return inspect_artifact
