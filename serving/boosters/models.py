"""XGBoost and LightGBM boosters behind the predict/predict_proba surface of an estimator,
with the scikit-learn wrappers' semantics: a classifier's predict answers class labels (the
larger probability, 0.5 going to the first class), predict_proba its probabilities."""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np

from registry.errors import InvalidInput
from serving.boosters.files import LgbFile, NotAModelFile, XgbFile, read_lightgbm, read_xgboost

# format -> the extra that installs its library (`pip install 'modelreg[xgboost]'`)
BOOSTER_FORMATS = {"xgboost": "xgboost", "lightgbm": "lightgbm"}
# What a loaded booster holds beyond its file (the library's tree copies, caches).
BOOSTER_OVERHEAD = 3


class LibraryMissing(InvalidInput):
    """The format's library is not installed on this server (a 422 at registration; the
    loader turns it into a 503 at load, where it is the server that lacks something)."""

    def __init__(self, fmt: str) -> None:
        extra = BOOSTER_FORMATS[fmt]
        super().__init__(
            f"this server cannot load {fmt} models: the {fmt} library is not installed; "
            f"install the extra: pip install 'modelreg[{extra}]'",
            {"metadata.format": f"{fmt} needs the '{extra}' extra on the server"},
        )
        self.format = fmt
        self.extra = extra


def _library(fmt: str) -> Any:
    try:
        return importlib.import_module(fmt)
    except ImportError:
        raise LibraryMissing(fmt) from None


class BoosterModel:
    """What every booster answers; subclasses say how the library is called."""

    format = ""

    def __init__(
        self,
        *,
        n_features: int,
        feature_names: list[str] | None,
        objective: str,
        n_classes: int,
        output: str,  # "value", "probability" (binary: of the second class) or "label"
        described: XgbFile | LgbFile,
        nbytes: int,
    ) -> None:
        self.n_features = n_features
        self.feature_names = feature_names
        self.objective = objective
        self.output = output
        self.described = described
        self.nbytes = nbytes
        self.classes_: np.ndarray | None = np.arange(n_classes) if n_classes else None
        if self.classes_ is not None and output == "probability":
            # Set only where the objective has probabilities: callers ask getattr(...).
            self.predict_proba = self._probabilities

    def _output(self, X: Any) -> np.ndarray:
        raise NotImplementedError

    def label_classes(self, classes: list[Any] | None) -> None:
        """Labels for class indexes, from the signature (the model files keep none)."""
        if self.classes_ is not None and classes is not None and len(classes) == len(self.classes_):
            self.classes_ = np.asarray(classes)

    def predict(self, X: Any) -> np.ndarray:
        out = self._output(X)
        if self.classes_ is None:
            return out.ravel() if out.ndim == 2 and out.shape[1] == 1 else out
        if self.output == "label":
            index = out.astype(np.int64)
        elif out.ndim == 1:
            index = (out > 0.5).astype(np.int64)
        else:
            index = np.argmax(out, axis=1)
        return self.classes_[index]

    def _probabilities(self, X: Any) -> np.ndarray:
        out = np.asarray(self._output(X), dtype=np.float64)
        return np.column_stack([1.0 - out, out]) if out.ndim == 1 else out

    def signature(self) -> dict[str, Any]:
        signature: dict[str, Any] = {"n_features": self.n_features, "objective": self.objective}
        if self.feature_names:
            signature["feature_names"] = list(self.feature_names)
        methods = ["predict"]
        if self.classes_ is not None:
            signature["classes"] = [c.item() if isinstance(c, np.generic) else c
                                    for c in self.classes_]  # fmt: skip
            if self.output == "probability":
                methods.append("predict_proba")
        signature["methods"] = methods
        signature["allow_missing"] = True  # both libraries route NaN by their own rules
        return signature


# ---- XGBoost ------------------------------------------------------------------------------

_XGB_CLASSIFIERS = {"binary:logistic": "probability", "multi:softprob": "probability",
                    "multi:softmax": "label"}  # fmt: skip


class XGBoostModel(BoosterModel):
    format = "xgboost"

    @classmethod
    def load(cls, data: bytes, *, threads: int = 1) -> XGBoostModel:
        described = read_xgboost(data)
        if described.num_target > 1:
            raise NotAModelFile("xgboost", "multi-target models are not supported")
        if described.feature_types and "c" in described.feature_types:
            raise InvalidInput(
                "xgboost models with categorical features are not supported",
                {"artifact": "categorical features (feature_types 'c')"},
            )
        xgb = _library("xgboost")
        booster = xgb.Booster()
        try:
            booster.load_model(bytearray(data))
        except xgb.core.XGBoostError as error:
            first = str(error).strip().splitlines()[0][:160]
            raise NotAModelFile("xgboost", f"xgboost refused it ({first})") from None
        booster.set_param({"nthread": threads})
        output = _XGB_CLASSIFIERS.get(described.objective, "value")
        n_classes = 0
        if described.objective in _XGB_CLASSIFIERS:
            n_classes = max(described.num_class, 2)
        model = cls(
            n_features=described.num_feature,
            feature_names=described.feature_names,
            objective=described.objective,
            n_classes=n_classes,
            output=output,
            described=described,
            nbytes=BOOSTER_OVERHEAD * len(data),
        )
        model.booster = booster
        # The wrappers predict with the best iteration when training stopped early.
        best = described.best_iteration
        model.iterations = (0, best + 1) if best is not None else (0, 0)
        return model

    def _output(self, X: Any) -> np.ndarray:
        return np.asarray(
            self.booster.inplace_predict(
                X, iteration_range=self.iterations, validate_features=False
            )
        )


# ---- LightGBM -----------------------------------------------------------------------------

_LGB_CLASSIFIERS = {"binary", "multiclass", "softmax", "multiclassova", "multiclass_ova",
                    "ova", "ovr"}  # fmt: skip


class LightGBMModel(BoosterModel):
    format = "lightgbm"

    @classmethod
    def load(cls, data: bytes, *, threads: int = 1) -> LightGBMModel:
        described = read_lightgbm(data)
        lgb = _library("lightgbm")
        try:
            booster = lgb.Booster(model_str=described.model_text)
        except lgb.basic.LightGBMError as error:
            raise NotAModelFile("lightgbm", f"lightgbm refused it ({str(error)[:160]})") from None
        kind = described.objective.split()[0] if described.objective else "regression"
        n_classes = 0
        if kind in _LGB_CLASSIFIERS:
            n_classes = 2 if kind == "binary" else described.num_class
        names = described.feature_names
        default = [f"Column_{i}" for i in range(len(names))]  # what LightGBM calls unnamed
        model = cls(
            n_features=described.max_feature_idx + 1,
            feature_names=None if names == default else names,
            objective=kind,
            n_classes=n_classes,
            output="probability" if n_classes else "value",
            described=described,
            nbytes=BOOSTER_OVERHEAD * len(data),
        )
        model.booster = booster
        model.threads = threads
        return model

    def _output(self, X: Any) -> np.ndarray:
        return np.asarray(self.booster.predict(X, num_threads=self.threads))


_LOADERS = {"xgboost": XGBoostModel, "lightgbm": LightGBMModel}


def load_booster(data: bytes, fmt: str, *, threads: int = 1) -> BoosterModel:
    """The model in `data` (the bytes of a file of format `fmt`), checked and loaded."""
    return _LOADERS[fmt].load(data, threads=threads)
