"""cgcnn.transfer.lastlayer and cgcnn.transfer.descriptors: type choice, intervals, domain, safe loading, Slack's
formula."""

from __future__ import annotations

import os
import pickle
import warnings

import joblib
import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from cgcnn import InputError
from cgcnn.transfer import (
    CANDIDATES,
    LastLayer,
    debye_from_moduli,
    gruneisen_from_poisson,
    make_estimator,
    slack_descriptors,
    slack_kappa,
    structure_descriptors,
)
from conftest import REPO

DATA = REPO / "tests" / "data"


def linear_data(n: int, seed: int = 0, noise: float = 0.2):
    rng = np.random.RandomState(seed)
    X = rng.randn(n, 6)
    y = 1.0 + 0.6 * X[:, 0] - 0.3 * X[:, 1] + noise * rng.randn(n)
    return X, y


# ---------------------------------------------------------------------------------------- descriptors
def test_structure_descriptors_of_rock_salt():
    a = 5.64
    nacl = Structure.from_spacegroup("Fm-3m", Lattice.cubic(a), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    d = structure_descriptors([nacl])[0]
    assert d.shape == (5,)
    np.testing.assert_allclose(10 ** d[0], (22.98977 + 35.453) / 2, rtol=1e-3)  # mean atomic mass, amu
    np.testing.assert_allclose(10 ** d[1], a**3 / 8, rtol=1e-6)  # volume per atom, Å^3
    np.testing.assert_allclose(10 ** d[2], 2.17, rtol=0.02)  # density of NaCl, g/cm^3
    assert round(10 ** d[3]) == 2  # the primitive cell of rock salt has 2 atoms (the cubic cell 8)
    assert d[4] == 2


def test_slack_formula_for_silicon():
    """Si: θ_D 645 K, γ 1.06, M̄ 28.09 amu, 20.0 Å^3 per atom, n = 2: Slack's estimate is about 100 W/m/K
    (Morelli & Slack 2006 list 1.1e2 for the formula with these inputs; measured 165)."""
    kappa = slack_kappa(645.0, 1.06, 28.09, 20.02, 2)
    assert 80 < kappa < 130
    # θ_D from the sound velocities of B = 98, G = 66 GPa and ρ = 2.33 g/cm^3 matches the measured 645 K
    np.testing.assert_allclose(debye_from_moduli(98.0, 66.0, 2.33, 20.02), 645.0, rtol=0.02)
    # the Poisson-ratio Grüneisen parameter: ν = 0.25 gives 3(1.25)/(2(1.25)) = 1.5
    np.testing.assert_allclose(gruneisen_from_poisson(0.25), 1.5)


def test_slack_descriptors_follow_the_inputs():
    sd = np.log10([[28.09, 20.02, 2.33, 2.0, 1.0]])
    sd[0, 4] = 1.0
    low = slack_descriptors(sd, [np.log10(400.0)], [np.log10(98.0)], [np.log10(66.0)])
    high = slack_descriptors(sd, [np.log10(800.0)], [np.log10(98.0)], [np.log10(66.0)])
    assert low.shape == (1, 6)
    # κ_S ∝ θ_D^3: doubling θ_D adds log10(8)
    np.testing.assert_allclose(high[0, -1] - low[0, -1], np.log10(8.0), rtol=1e-9)


# ---------------------------------------------------------------------------------------- fitting
def test_auto_chooses_by_cross_validation_and_records_it():
    X, y = linear_data(40)
    layer = LastLayer.fit(X, y, "auto", seed=0, cv_folds=5, cv_repeats=1, interval_cv=False)
    assert set(layer.cv["table"]) == set(CANDIDATES)
    assert layer.kind == min(layer.cv["table"], key=layer.cv["table"].get)
    assert layer.requested == "auto"
    assert layer.cv["mae"] < layer.cv["mae_constant"]
    # every type standardises what it needs: the same fit on rescaled inputs predicts the same (ridge, gp)
    for kind in ("ridge", "gp"):
        a = make_estimator(kind).fit(X, y).predict(X[:5])
        b = make_estimator(kind).fit(X * 1000.0, y).predict(X[:5] * 1000.0)
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_interval_covers_held_out_data_at_its_level():
    X, y = linear_data(300, seed=1)
    train, test = np.arange(200), np.arange(200, 300)
    layer = LastLayer.fit(X[train], y[train], "ridge", seed=0, level=0.9)
    assert 0.8 <= layer.interval["cv_coverage"] <= 0.97
    p = layer.predict(X[test])
    covered = np.mean((y[test] >= p.low) & (y[test] <= p.high))
    assert 0.8 <= covered <= 0.99
    assert np.all(p.low <= p.prediction) and np.all(p.prediction <= p.high)
    wider = layer.predict(X[test], level=0.95)
    assert np.all(wider.high - wider.low >= p.high - p.low - 1e-12)
    with pytest.raises(InputError, match="training crystals"):
        layer.predict(X[test], level=0.999)  # CV+ needs 1/(1 - level) < n


def test_domain_flags_crystals_unlike_the_training_set():
    X, y = linear_data(60, seed=2)
    layer = LastLayer.fit(X, y, "ridge", seed=0)
    near = layer.predict(X[:10] + 0.01)
    far = layer.predict(X[:3] + 50.0)
    assert near.in_domain.all()
    assert not far.in_domain.any()
    assert (far.distance > layer.domain["threshold"]).all()


def test_domain_is_measured_in_the_descriptors_when_there_are_some():
    """With groups (4 crys_fea, 2 descriptors), a crystal far away in crys_fea alone stays in domain;
    one far away in a descriptor does not; a domain recorded without columns uses them all."""
    X, y = linear_data(60, seed=3)
    layer = LastLayer.fit(X, y, "ridge", seed=0, groups=(4, 2), interval_cv=False)
    assert layer.domain["columns"] == [4, 6] and layer.domain["X"].shape == (60, 2)
    far_crys, far_desc = X[:3].copy(), X[:3].copy()
    far_crys[:, :4] += 50.0
    far_desc[:, 5] += 50.0
    assert layer.predict(far_crys).in_domain.all()
    assert not layer.predict(far_desc).in_domain.any()
    old = LastLayer.fit(X, y, "ridge", seed=0, interval_cv=False)
    del old.domain["columns"]  # as in files written before the domain had columns
    assert not old.predict(far_crys).in_domain.any()


def test_too_few_crystals_for_an_interval():
    X, y = linear_data(6)
    layer = LastLayer.fit(X, y, "ridge", cv_folds=5)
    assert layer.conformal is None
    p = layer.predict(X)
    assert np.isnan(p.low).all() and np.isfinite(p.prediction).all()


def test_nan_inputs_refused():
    X, y = linear_data(20)
    X[3, 2] = np.nan
    with pytest.raises(InputError, match="NaN"):
        LastLayer.fit(X, y, "ridge")


# ---------------------------------------------------------------------------------------- files
def test_save_and_load_round_trip(tmp_path):
    X, y = linear_data(40)
    layer = LastLayer.fit(X, y, "gp", seed=0, cv_folds=3, groups=(4, 2), inputs={"descriptors": "structure"},
                          interval_cv=False)
    layer.save(tmp_path / "last_layer.sav")
    assert (tmp_path / "last_layer.sav").read_bytes()[:2] == b"PK"  # a skops zip, not a pickle
    back = LastLayer.load(tmp_path / "last_layer.sav")
    assert back.kind == "gp" and back.inputs["descriptors"] == "structure" and back.groups == [4, 2]
    a, b = layer.predict(X), back.predict(X)
    np.testing.assert_array_equal(a.prediction, b.prediction)
    np.testing.assert_array_equal(a.low, b.low)
    np.testing.assert_array_equal(a.in_domain, b.in_domain)


def test_last_layer_written_by_the_previous_version_loads():
    """tests/data/last_layer_v1.sav: a joblib file of the format before skops (commit 2d32a53)."""
    layer = LastLayer.load(DATA / "last_layer_v1.sav")
    check = np.loadtxt(DATA / "last_layer_v1_check.csv", delimiter=",")
    assert layer.kind == "mlp" and layer.n_features == 16 and layer.n_train == 12
    assert layer.inputs["sources"][0]["name"] == "source.pth.tar"
    p = layer.predict(check[:, :16])
    np.testing.assert_allclose(p.prediction, check[:, 16], rtol=1e-6, atol=1e-7)
    assert np.isnan(p.low).all()  # no interval calibration in version 1


class Payload:
    """A pickle that would create a file when unpickled."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_that_runs_code_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "ran"
    bad = tmp_path / "last_layer.sav"
    bad.write_bytes(pickle.dumps({"format": "cgcnn-kappa last layer 1", "estimator": Payload(marker)}))
    with pytest.raises(InputError, match="refused"):
        LastLayer.load(bad)
    assert not marker.exists()


def test_a_skops_file_with_foreign_types_is_refused(tmp_path):
    import skops.io as sio

    bad = tmp_path / "last_layer.sav"
    bad.write_bytes(sio.dumps({"format": "cgcnn-kappa last layer 2", "estimator": Payload(tmp_path / "x")}))
    with pytest.raises(InputError, match="does not write"):
        LastLayer.load(bad)


def test_bare_estimator_needs_trust_pickle(tmp_path):
    X, y = linear_data(20)
    path = tmp_path / "last_layer.sav"
    joblib.dump(make_estimator("mlp").fit(X, y), path)  # the original tool's file
    with pytest.raises(InputError, match="--trust-pickle"):
        LastLayer.load(path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        layer = LastLayer.load(path, trust_pickle=True)
    assert any("trust-pickle" in str(w.message) for w in caught)
    assert np.isfinite(layer.predict(X).prediction).all()


def test_unfitted_estimator_is_refused(tmp_path):
    path = tmp_path / "last_layer.sav"
    joblib.dump({"format": "cgcnn-kappa last layer 1", "estimator": make_estimator("ridge"), "n_features": 6}, path)
    with pytest.raises(InputError, match="not fitted"):
        LastLayer.load(path)


def test_other_atom_table_or_descriptors_refused():
    X, y = linear_data(20)
    record = {"sources": [{"name": "m.pth.tar", "sha256": "a"}], "atom_init": ["digest-1"], "descriptors": "none",
              "property_models": [], "n_features": 6}
    layer = LastLayer.fit(X, y, "ridge", inputs=record)
    layer.check_inputs(dict(record))
    with pytest.raises(InputError, match="atom_init.json"):
        layer.check_inputs({**record, "atom_init": ["digest-2"]})
    with pytest.raises(InputError, match="--descriptors none"):
        layer.check_inputs({**record, "descriptors": "structure"})
    with pytest.raises(InputError, match="other source model"):
        layer.check_inputs({**record, "sources": [{"name": "m.pth.tar", "sha256": "b"}]})


def test_ensemble_is_the_mean_of_the_additive_gp_the_whole_input_gp_and_ridge(tmp_path):
    X, y = linear_data(40, seed=4)
    layer = LastLayer.fit(X, y, "ensemble", seed=0, cv_folds=3, groups=(4, 2), interval_cv=False)
    est = layer.estimator
    parts = [est.named_estimators_[name] for name in ("additive_gp", "gp", "ridge")]
    np.testing.assert_allclose(layer.predict(X).prediction, np.mean([p.predict(X) for p in parts], axis=0))
    kernels = [repr(p[-1].kernel_) for p in parts[:2]]
    assert "ColumnKernel" in kernels[0] and "ColumnKernel" not in kernels[1]
    assert type(parts[2][-1]).__name__ == "RidgeCV"
    # far outside the training inputs the additive GP's RBF terms fall back to the mean, ridge does not
    far = X[:1] + 50 * X.std(axis=0)
    assert abs(parts[2].predict(far)[0] - y.mean()) > abs(parts[0].predict(far)[0] - y.mean())
    layer.save(tmp_path / "last_layer.sav")
    back = LastLayer.load(tmp_path / "last_layer.sav")
    np.testing.assert_array_equal(back.predict(X).prediction, layer.predict(X).prediction)
    # without descriptors both would be the same model: ensemble is the gp
    alone = make_estimator("ensemble", 0, None)
    assert type(alone).__name__ == "Pipeline"


def test_the_command_line_offers_every_last_layer_type():
    """transfer_learning_kappa.py keeps its own tuple (so that --help needs no scikit-learn): the same one."""
    import importlib.util

    from cgcnn.transfer import LAST_LAYER_TYPES

    spec = importlib.util.spec_from_file_location("tlk", REPO / "transfer_learning_kappa.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.LAST_LAYER_TYPES == LAST_LAYER_TYPES
