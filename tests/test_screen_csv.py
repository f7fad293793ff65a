"""The screening CSV rows are written without pandas, byte for byte as pandas's ``to_csv`` wrote them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cgcnn.screening.screener import RESULT_COLUMNS, SKIPPED_COLUMNS, TEST_COLUMNS, _csv_header, _csv_rows

SPECIAL = [np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-300, 5e-324, 1e16, 1e-5, 123456789.123, 2.0, 0.1, -1.758,
           3.4028235e38, 1 / 3]
IDS = ["NaCl", "a,b", 'quote"d', "new\nline", "cr\rhere", " spaced ", "", "κ_L", "1e5", "nan", "True"]


def pandas_rows(columns: dict, float_format) -> str:
    frame = pd.DataFrame(columns)
    return frame.to_csv(index=False, header=False, na_rep="", float_format=float_format) if len(frame) else ""


@pytest.mark.parametrize("float_format", ["%.8g", None])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_rows_as_pandas_wrote_them(float_format, dtype):
    rng = np.random.default_rng(0)
    n = 400
    with np.errstate(over="ignore"):
        values = np.concatenate([np.array(SPECIAL * 2), rng.normal(0, 1, n), 10.0 ** rng.uniform(-30, 30, n),
                                 rng.integers(-5, 5, n).astype(float)])
        values = values.astype(dtype)
    rng.shuffle(values)
    m = len(values)
    ids = [IDS[i % len(IDS)] + str(i) * (i % 3) for i in range(m)]
    columns = {"cif_id": ids, "target": values.astype(np.float64), "prediction": values,
               "kappa": 10.0 ** np.clip(values, -30, 30), "in_domain": rng.random(m) < 0.5,
               "domain_distance": values[::-1].copy()}
    assert _csv_rows(columns, float_format) == pandas_rows(columns, float_format)


def test_empty_and_skipped_rows():
    assert _csv_rows({"cif_id": [], "target": np.zeros(0)}) == ""
    skipped = {"cif_id": ["a", "b,c"], "reason": ['x.cif: "bad" cell, refused', "y.cif: empty file"]}
    assert _csv_rows(skipped) == pandas_rows(skipped, "%.8g")


@pytest.mark.parametrize("columns", [RESULT_COLUMNS, TEST_COLUMNS, SKIPPED_COLUMNS])
def test_header_as_pandas_wrote_it(columns):
    assert _csv_header(columns) == pd.DataFrame(columns=list(columns)).to_csv(index=False)
