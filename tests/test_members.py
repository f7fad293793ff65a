"""Ensemble members (models/seed1, models/seed2 beside models/source.pth.tar): found, fit one last layer
each on their own inputs, averaged; recorded so that --train 0 loads the same members."""

from __future__ import annotations

import shutil
import warnings

import numpy as np
import pytest
from test_screen import FAST, MODEL, SAMPLE, folder_of, run

from cgcnn import InputError
from cgcnn.transfer import (
    PROPERTY_MODEL_FILES,
    LastLayer,
    MemberAverage,
    load_property_models,
    make_estimator,
    member_folders,
)

pytestmark = pytest.mark.skipif(not (MODEL.parent / "seed2" / "source.pth.tar").is_file() or not SAMPLE.is_dir(),
                                reason="needs data/sample and the bundled models")


def test_member_average_is_the_mean_of_block_fits():
    rng = np.random.RandomState(0)
    X = rng.randn(30, 12)
    y = X[:, 0] - X[:, 6] + 0.1 * rng.randn(30)
    est = make_estimator("ridge", 0, (4, 2, 2))
    assert isinstance(est, MemberAverage) and est.members == 2
    est.fit(X, y)
    blocks = [make_estimator("ridge", 0).fit(X[:, :6], y), make_estimator("ridge", 0).fit(X[:, 6:], y)]
    want = (blocks[0].predict(X[:, :6]) + blocks[1].predict(X[:, 6:])) / 2
    assert np.allclose(est.predict(X), want)
    with pytest.raises(ValueError, match="not 2 equal blocks"):
        est.predict(X[:, :11])
    assert not isinstance(make_estimator("ridge", 0, (4, 2, 1)), MemberAverage)


def test_member_average_last_layer_saves_and_loads(tmp_path):
    rng = np.random.RandomState(1)
    X = rng.randn(40, 16)
    y = X[:, 0] + X[:, 8] + 0.1 * rng.randn(40)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        layer = LastLayer.fit(X, y, "gp", 0, 5, groups=(5, 3, 2))
    layer.save(tmp_path / "last_layer.sav")
    again = LastLayer.load(tmp_path / "last_layer.sav")
    assert again.groups == [5, 3, 2]
    a, b = layer.predict(X[:5]), again.predict(X[:5])
    assert np.array_equal(a.prediction, b.prediction) and np.array_equal(a.low, b.low)


def test_member_folders_need_the_whole_set(tmp_path):
    assert [f.name for f in member_folders(MODEL)] == ["seed1", "seed2"]
    shutil.copy(MODEL, tmp_path / "source.pth.tar")
    for name in ("seed1", "seed9"):
        (tmp_path / name).mkdir()
        for f in ("source.pth.tar", *PROPERTY_MODEL_FILES):
            (tmp_path / name / f).symlink_to(MODEL.parent / "seed1" / f)
    (tmp_path / "seed9" / "shear_modulus.pth.tar").unlink()  # incomplete: not a member
    (tmp_path / "seedless").mkdir()
    assert member_folders(tmp_path / "source.pth.tar") == [tmp_path / "seed1"]


def test_property_model_sets():
    paths = [MODEL.parent / f for f in PROPERTY_MODEL_FILES] + [MODEL.parent / "seed1" / f
                                                                for f in reversed(PROPERTY_MODEL_FILES)]
    models = load_property_models(paths)
    assert list(models) == ["debye", "bulk", "shear", "debye@1", "bulk@1", "shear@1"]
    assert models["shear@1"].path == MODEL.parent / "seed1" / "shear_modulus.pth.tar"
    with pytest.raises(InputError, match="as many models of each property"):
        load_property_models(paths[:5])


@pytest.fixture(scope="module")
def fits(tmp_path_factory):
    work = tmp_path_factory.mktemp("members")
    data = folder_of(work / "data")
    for name, extra in (("members", []), ("single", ["--members", "none"])):
        (work / name).mkdir()
        run("--train", 1, MODEL, data, "--last-layer-type", "ridge", "--cv-folds", 0, *extra, cwd=work / name)
    return work


def test_train_records_members_and_predicts_their_mean(fits):
    members = LastLayer.load(fits / "members" / "last_layer.sav")
    single = LastLayer.load(fits / "single" / "last_layer.sav")
    assert members.inputs["member_folders"] == ["seed1", "seed2"]
    assert "member_folders" not in single.inputs
    assert [s["sha256"] for s in members.inputs["sources"]][0] == single.inputs["sources"][0]["sha256"]
    assert len(members.inputs["sources"]) == 3 and len(members.inputs["property_models"]) == 9
    assert members.groups == [64, 11, 3] and members.n_features == 225 and single.n_features == 75
    names = members.inputs["names"]
    assert names[:75] == single.inputs["names"]
    assert names[75] == "source.pth.tar@1:crys_fea[0]" and names[-1].endswith("@2")
    assert isinstance(members.estimator, MemberAverage)


def test_screening_loads_the_recorded_members(fits, tmp_path):
    out = fits / "members"
    run("--train", 0, MODEL, fits / "data", *FAST, "--results", tmp_path / "results.csv", cwd=out)
    rows = (tmp_path / "results.csv").read_text().splitlines()
    assert len(rows) == 13 and rows[0].startswith("cif_id,target,prediction")
    models = tmp_path / "models"  # the same layer beside a copy of the models that lacks a member
    shutil.copytree(MODEL.parent, models, ignore=shutil.ignore_patterns("seed2", "*.py", "*.md"))
    proc = run("--train", 0, models / "source.pth.tar", fits / "data", "--results", tmp_path / "r2.csv",
               cwd=out, check=False)
    assert proc.returncode != 0 and "seed2" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "r2.csv").exists()


def test_members_named_explicitly_give_the_same_rows(fits, tmp_path):
    """MODELPATH naming the three members' source models, comma-separated, finds each member's
    property models beside its source model: the same rows as the one bundled MODELPATH."""
    out = fits / "members"
    three = ",".join(str(p) for p in (MODEL, MODEL.parent / "seed1" / MODEL.name, MODEL.parent / "seed2" / MODEL.name))
    run("--train", 0, MODEL, fits / "data", *FAST, "--results", tmp_path / "one.csv", cwd=out)
    run("--train", 0, three, fits / "data", *FAST, "--results", tmp_path / "three.csv", cwd=out)
    assert (tmp_path / "one.csv").read_bytes() == (tmp_path / "three.csv").read_bytes()


def test_swapped_member_files_are_named(fits, tmp_path):
    """Issue 24, class 11: seed1/ and seed2/ holding each other's source model (one MODELPATH given,
    no order): the refusal says which file holds which member, not "give them in that order"."""
    models = tmp_path / "models"
    shutil.copytree(MODEL.parent, models, ignore=shutil.ignore_patterns("*.py", "*.md"))
    a, b = models / "seed1" / MODEL.name, models / "seed2" / MODEL.name
    a.rename(tmp_path / "swap")
    b.rename(a)
    (tmp_path / "swap").rename(b)
    proc = run("--train", 0, models / MODEL.name, fits / "data", "--results", tmp_path / "r.csv", cwd=fits / "members",
               check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert ("not in the folders they were fit from (seed1/source.pth.tar holds the model fit as "
            "seed2/source.pth.tar; seed2/source.pth.tar holds the model fit as seed1/source.pth.tar)") in proc.stderr
    assert "in that order" not in proc.stderr and not (tmp_path / "r.csv").exists()
