"""What every plug-in's `log_model` needs from MLflow: pinned requirements and a declared signature."""
from __future__ import annotations

import re
from typing import Any

import numpy as np
import pandas as pd


def requirements(flavour: Any) -> list[str]:
    """Pin what is installed instead of letting MLflow infer it: inference starts a subprocess
    (~2.5 s per model) and drags in unrelated packages; '+cpu' labels are not installable."""
    reqs = flavour.get_default_pip_requirements() + [f"numpy=={np.__version__}",
                                                     f"pandas=={pd.__version__}"]
    return [re.sub(r"\+[\w.]+$", "", r) for r in reqs]


def declared_signature(example: pd.DataFrame, output: np.ndarray):
    """The input schema declared from the features' dtypes, not inferred: MLflow's inference warns
    about every integer column (it could not hold a missing value), though these dtypes are the data's
    own, already checked by the job's schema; other dtypes (strings, categories) are inferred as usual."""
    from mlflow.models import ModelSignature, infer_signature
    from mlflow.types import ColSpec, DataType, Schema

    columns = []
    for name, dtype in example.dtypes.items():
        wide = dtype.itemsize > 4 if dtype.kind in "biuf" else False
        kind = {"b": DataType.boolean, "i": DataType.long if wide else DataType.integer, "u": DataType.long,
                "f": DataType.double if wide else DataType.float}.get(dtype.kind)
        if kind is None:
            kind = infer_signature(example[[name]]).inputs.input_types()[0]
        columns.append(ColSpec(kind, str(name), required=not example[name].isna().any()))
    return ModelSignature(inputs=Schema(columns), outputs=infer_signature(output).inputs)
