"""The in-process limit: what one core does with the same body, without HTTP.

One call = `serving.inputs.decode_predict_body` (orjson parse + validation) + a predict + orjson
encoding of the answer, i.e. the server's work minus the web layer. Two predicts are timed:

* `sklearn`: the registered estimator, deserialized from its skops file with the server's code;
* `served`: the predict the server itself runs for that version (its ONNX conversion when the
  registry made one, micro-batching wrapper included), taken from a modelreg app built in this
  process on the target's instance folder. Overhead and fractions are computed against it.
"""

from __future__ import annotations

import gc
import timeit
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from config import Config
from serving.formats import TrustPolicy, deserialize, infer_signature
from serving.inputs import InputPlan, build_input_plan, decode_predict_body
from serving.loader import to_jsonable

REPEATS = 7  # timeit repeats; the best one is kept

Predict = Callable[[Any], Any]


@dataclass(frozen=True)
class Loaded:
    predict: Predict
    plan: InputPlan
    runtime: str  # "sklearn", "onnxruntime"...


@dataclass(frozen=True)
class Timing:
    """Seconds per in-process call for one (model, rows)."""

    sklearn_s: float
    served_s: float | None  # None when the target's own predict is not available
    served_runtime: str = ""

    @property
    def best_s(self) -> float:
        """What the served numbers are compared with: the server's own predict if known."""
        return self.served_s if self.served_s is not None else self.sklearn_s


def load_sklearn(skops_path: Path) -> Loaded:
    """The registered estimator and its input plan, built as serving/loader.py builds them."""
    with open(skops_path, "rb") as file:
        model = deserialize(file, "skops", trust=TrustPolicy(allow_pickle=False))
    signature = infer_signature(model)
    plan = build_input_plan(
        signature,
        max_rows=Config().MAX_PREDICT_ROWS,
        methods=signature.get("methods", ["predict"]),
        needs_dataframe=getattr(model, "feature_names_in_", None) is not None,
    )
    return Loaded(model.predict, plan, "sklearn")


def load_served(home: Path, names: Iterable[str], ref: str = "production") -> dict[str, Loaded]:
    """What a modelreg server on `home` runs for each model: its runtime's servable."""
    from manage import create_app

    app = create_app(Config(INSTANCE_PATH=str(home), AUTH_DISABLED=True))
    dataplane = app.extensions["modelreg"].dataplane
    loaded = {}
    for name in names:
        servable = dataplane.warm(name, ref)[1].extra
        loaded[name] = Loaded(servable.methods["predict"], servable.plan, servable.runtime)
    return loaded


def serve_once(model: Loaded, body: bytes) -> bytes:
    decoded = decode_predict_body(body, model.plan)
    predictions = to_jsonable(model.predict(decoded.X))
    return orjson.dumps({"predictions": predictions}, option=orjson.OPT_SERIALIZE_NUMPY)


def per_call_seconds(model: Loaded, body: bytes) -> float:
    """Best-of-REPEATS seconds per call (timeit switches the garbage collector off)."""
    serve_once(model, body)  # first call outside the timing
    gc.collect()
    timer = timeit.Timer(lambda: serve_once(model, body))
    number, _ = timer.autorange()  # calls per repeat, so that one repeat takes >= 0.2 s
    return min(timer.repeat(repeat=REPEATS, number=number)) / number
