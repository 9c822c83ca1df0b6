"""XGBoost and LightGBM models from their own file formats, which are data, not code.

- `xgboost`: a Booster saved as JSON or UBJSON (`Booster.save_model("m.json")`, or a
  scikit-learn wrapper's `get_booster()`); loaded by xgboost's own loader from bytes.
- `lightgbm`: a text model (`Booster.save_model("m.txt")`, `LGBMModel.booster_`); loaded by
  `lightgbm.Booster(model_str=...)`.

Neither loader unpickles anything. Both libraries are optional extras; a server without one
refuses its format at registration (422) and at load (503), naming the extra to install.
Registration reads the file's structure in Python first (files.py): a truncated or foreign
file is refused before the library's C++ parser sees it (LightGBM's aborts the process on
some truncated files).
"""

from __future__ import annotations

from serving.boosters.models import BOOSTER_FORMATS, BoosterModel, LibraryMissing, load_booster

__all__ = ["BOOSTER_FORMATS", "BoosterModel", "LibraryMissing", "load_booster"]
