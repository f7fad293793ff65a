"""The inputs of the last layer: frozen source models' ``crys_fea`` and physical descriptors.

The method of T. Zhu, R. He, S. Gong, T. Xie, P. Gorai, K. Nielsch, J. C. Grossman,
Energy Environ. Sci. 14, 3559 (2021): a CGCNN trained on thousands of computed
log10 κ values is frozen; its crystal feature vector (the input of its output
layer) is the descriptor on which a small regressor, the last layer
(:mod:`cgcnn.transfer.lastlayer`), is fit to measured values.  Several source models may be
given; their ``crys_fea`` are concatenated, as in the feature-based transfer of
S. Ju et al., Phys. Rev. Materials (2021), arXiv:1909.11234.

Beside ``crys_fea``, :func:`compute_features` adds descriptors (:mod:`cgcnn.transfer.descriptors`)
by the level asked for:

- ``none``: ``crys_fea`` alone (the original tool);
- ``structure``: the five inputs of Slack's formula a structure gives by itself;
- ``slack``: also the ``crys_fea`` of three lower-order-property models (AFLOW AEL-AGL
  Debye temperature, bulk and shear moduli; Ju et al. 2021) and Slack descriptors
  from their predictions (sound velocities, Poisson ratio, Grüneisen parameter,
  Slack's κ).

The last-layer input is ``[crys_fea of the source models, crys_fea of the property
models, descriptors]``, in that order (:attr:`Features.X`).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cgcnn import InputError
from cgcnn.data import atom_init_digest
from cgcnn.model import ModelSet, SourceModel, run_batches
from cgcnn.transfer.descriptors import SLACK_DESCRIPTORS, STRUCTURE_DESCRIPTORS, structure_facts

__all__ = [
    "DESCRIPTOR_SETS",
    "PROPERTY_MODEL_FILES",
    "Features",
    "compute_features",
    "default_property_models",
    "features_from_datasets",
    "load_property_models",
    "member_folders",
    "with_members",
    "source_record",
    "source_order_problem",
    "assemble_features",
    "inputs_record",
    "PROPERTY_TARGETS",
]

#: Levels of ``--descriptors``.
DESCRIPTOR_SETS = ("none", "structure", "slack")
#: Role → target name stored in the bundled property models' checkpoints.
PROPERTY_TARGETS = {"debye": "log10 theta_D", "bulk": "log10 K_VRH", "shear": "log10 G_VRH"}
#: The bundled property models, looked for beside the first source model.
PROPERTY_MODEL_FILES = ("debye_temperature.pth.tar", "bulk_modulus.pth.tar", "shear_modulus.pth.tar")


@dataclass
class Features:
    """Last-layer inputs of one data folder, rows in ``id_prop.csv`` order.

    Attributes
    ----------
    ids : list of str
        ``cif_id``.
    targets : ndarray of shape (n,) or None
        Targets (log10 κ_L) when the folder has them.
    crys_fea : ndarray of shape (n, sum of h_fea_len over source and property models)
        Concatenated crystal feature vectors.
    source_prediction : ndarray of shape (n, n_sources)
        Each source model's own de-normalized prediction.
    descriptors : ndarray of shape (n, n_descriptors)
        :mod:`cgcnn.transfer.descriptors` columns (n_descriptors 0, 5 or 11).
    names : list of str
        Name of every column of :attr:`X`.
    atom_init : list of str
        Digest of the atom feature table each source model was run with.
    members : int
        Ensemble members (:func:`member_folders`): with more than one, ``crys_fea`` holds
        each member's ``crys_fea`` (its source then property models) and ``descriptors``
        each member's descriptors, member after member, and :attr:`X` is the members'
        inputs side by side (``[crys_fea_0, descriptors_0, crys_fea_1, ...]``).
    structure_types : list of str or None
        :func:`cgcnn.transfer.descriptors.structure_type` of each crystal, when asked for
        (:func:`compute_features` with ``structure_types=True``).
    """

    ids: list
    targets: np.ndarray | None
    crys_fea: np.ndarray
    source_prediction: np.ndarray
    descriptors: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    names: list = field(default_factory=list)
    atom_init: list = field(default_factory=list)
    members: int = 1
    structure_types: list | None = None

    @property
    def X(self) -> np.ndarray:
        """The last layer's input, shape (n, n_crys_fea + n_descriptors): float64, or the float32
        ``crys_fea`` themselves without descriptors (as the original tool fit them); with
        several members, each member's ``[crys_fea, descriptors]`` side by side."""
        if self.descriptors.ndim != 2 or self.descriptors.shape[1] == 0:
            return self.crys_fea
        k = self.members
        crys = np.split(self.crys_fea.astype(np.float64), k, axis=1)
        desc = np.split(self.descriptors, k, axis=1)
        return np.concatenate([a for pair in zip(crys, desc) for a in pair], axis=1)

    @property
    def groups(self) -> tuple:
        """(number of ``crys_fea`` columns, number of descriptor columns) of :attr:`X`; with
        several members, those of one member and the number of members."""
        n_crys = self.crys_fea.shape[1] // self.members
        n_desc = (self.descriptors.shape[1] if self.descriptors.ndim == 2 else 0) // self.members
        return (n_crys, n_desc) if self.members == 1 else (n_crys, n_desc, self.members)


def source_record(source: SourceModel) -> dict:
    """What a last layer records of a model: file name, SHA-256, ``crys_fea`` length, target."""
    return {"name": source.path.name, "sha256": source.sha256, "crys_fea_len": source.crys_fea_len,
            "target": source.target.get("name", "")}


def default_property_models(first_source) -> list[Path]:
    """The bundled property models' paths, beside the first source model (they may not exist)."""
    folder = Path(first_source).parent
    return [folder / name for name in PROPERTY_MODEL_FILES]


def with_members(paths: Sequence, prop_paths: Sequence) -> tuple[list[str], list[Path]]:
    """Source and property-model paths with the ensemble members of ``paths[0]`` added
    (:func:`member_folders`): each member's source model after the given ones, its three
    property models after the given ones, member after member.  Callers use it with one
    source model and the default property models."""
    folders = member_folders(paths[0])
    return ([str(p) for p in paths] + [str(f / Path(paths[0]).name) for f in folders],
            [Path(p) for p in prop_paths] + [f / name for f in folders for name in PROPERTY_MODEL_FILES])


def member_folders(first_source) -> list[Path]:
    """Folders of the further ensemble members of a source model: the ``seed*`` folders beside it
    that hold a source model of the same file name and the three property models
    (:data:`PROPERTY_MODEL_FILES`), in name order.  The bundled ``models/source.pth.tar`` has
    two, ``models/seed1`` and ``models/seed2``: the same networks trained from other seeds."""
    first = Path(first_source)
    return [d for d in sorted(first.parent.glob("seed*"))
            if d.is_dir() and (d / first.name).is_file() and all((d / f).is_file() for f in PROPERTY_MODEL_FILES)]


def load_property_models(paths: Sequence, device=None) -> dict:
    """Load the lower-order-property models that ``--descriptors slack`` needs.

    Parameters
    ----------
    paths : sequence of path
        Checkpoints whose stored target names are those of :data:`PROPERTY_TARGETS`
        (log10 θ_D in K, log10 bulk and shear moduli in GPa), in any order.

    Returns
    -------
    dict
        Role (``debye``, ``bulk``, ``shear``) → :class:`SourceModel`, in that order; with
        several models of each role (one set per ensemble member, in the order given),
        the k-th set's keys are ``debye@k``, ``bulk@k``, ``shear@k`` (k ≥ 1), set after set.

    Raises
    ------
    InputError
        A missing file, a model of another target, or a role left without a model or
        with another number of models than the others.
    """
    by_target = {v: k for k, v in PROPERTY_TARGETS.items()}
    models: dict = {}
    sets: dict = {r: [] for r in PROPERTY_TARGETS}
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise InputError(f"{path}: property model not found (--descriptors slack needs the Debye-temperature, "
                             "bulk- and shear-modulus models; give --property-models or --descriptors structure)")
        kwargs = {"device": device} if device is not None else {}
        model = SourceModel.load(path, require_regression=True, **kwargs)
        role = by_target.get(model.target.get("name", ""))
        if role is None:
            raise InputError(f"{path}: not a property model (its target is {model.target.get('name') or 'unnamed'}; "
                             f"expected one of {', '.join(PROPERTY_TARGETS.values())})")
        sets[role].append(model)
    missing = [r for r in PROPERTY_TARGETS if not sets[r]]
    if missing:
        raise InputError(f"--property-models: no model of {', '.join(PROPERTY_TARGETS[r] for r in missing)}")
    counts = {len(v) for v in sets.values()}
    if len(counts) != 1:
        raise InputError("--property-models: give as many models of each property ("
                         + ", ".join(f"{len(v)} of {PROPERTY_TARGETS[r]}" for r, v in sets.items()) + ")")
    for k in range(counts.pop()):
        for r in PROPERTY_TARGETS:
            models[r if k == 0 else f"{r}@{k}"] = sets[r][k]
    return models


def compute_features(sources: Sequence[SourceModel], folder, batch_size: int = 500, workers: int | None = None,
                     atom_init=None, cache_dir=None, progress: bool = True, descriptors: str = "none",
                     property_models: dict | None = None, structure_types: bool = False) -> Features:
    """Last-layer inputs of every crystal of ``folder``.

    Each model reads the folder with its own graph parameters and atom features
    (:meth:`SourceModel.dataset`); models that share both share one set of graphs.

    Parameters
    ----------
    sources : sequence of SourceModel
        The κ source model(s).
    folder : path
        CGCNN data folder.
    batch_size, workers, atom_init, cache_dir, progress
        As :meth:`SourceModel.run` and :meth:`SourceModel.dataset`.
    descriptors : {"none", "structure", "slack"}
        Descriptor level (module docstring).
    property_models : dict, optional
        :func:`load_property_models` result; needed for ``slack``.
    structure_types : bool
        Also give each crystal's structure type (:attr:`Features.structure_types`).

    The structure descriptors and types come from the structures read to build the first
    model's graphs (:func:`cgcnn.transfer.descriptors.structure_facts`): each CIF is parsed once.

    Raises
    ------
    InputError
        For the folder, CIF and checkpoint faults of :class:`cgcnn.data.CIFData` and
        :meth:`SourceModel.check_data`; an unknown descriptor level; ``slack`` without
        property models.
    """
    if descriptors not in DESCRIPTOR_SETS:
        raise InputError(f"unknown descriptors {descriptors!r}; choose one of {', '.join(DESCRIPTOR_SETS)}")
    if descriptors == "slack" and not property_models:
        raise InputError("--descriptors slack needs the property models (--property-models)")
    models = list(sources) + (list(property_models.values()) if descriptors == "slack" else [])
    datasets: dict = {}
    keys, digests = [], []
    facts = None
    if descriptors != "none" or structure_types:
        facts = functools.partial(structure_facts, with_type=structure_types)
    for model in models:
        data = model.dataset(folder, atom_init=atom_init, cache_dir=cache_dir,
                             **({"structure_info": facts} if not datasets and facts else {}))
        digest = atom_init_digest(data.atom_init)
        datasets.setdefault((data.params, digest), data)
        keys.append((data.params, digest))
        digests.append(digest)
    base = datasets[keys[0]]
    feas, preds = run_batches(ModelSet(models, keys), datasets, batch_size, workers, progress)
    structure_desc = types = None
    if facts is not None:
        rows = [base.info(i) for i in range(len(base.ids))]
        structure_desc = np.stack([desc for desc, _ in rows]) if descriptors != "none" else None
        types = [kind for _, kind in rows] if structure_types else None
    features = assemble_features(base, models, feas, preds, digests, len(sources), descriptors, structure_desc)
    features.structure_types = types
    return features


def assemble_features(base, models, feas, preds, digests, n_sources: int, descriptors: str, structure_desc) -> Features:
    """:class:`Features` from each model's ``crys_fea`` and predictions and the structure descriptors
    (shape (n, 5), or None for ``none``); Slack descriptors from the property models' predictions."""
    from cgcnn.transfer.descriptors import slack_descriptors

    n_props = len(models) - n_sources if descriptors == "slack" else 0
    members = n_props // 3 if n_props > 3 else 1
    if members > 1 and (n_props % 3 or n_sources != members):
        raise InputError(f"an ensemble of {members} members needs one source model and three property models "
                         f"per member, not {n_sources} and {n_props}")
    # the models of each member: its source model(s), then its Debye, bulk and shear models
    order = ([list(range(n_sources)) + list(range(n_sources, len(models)))] if members == 1 else
             [[k, n_sources + 3 * k, n_sources + 3 * k + 1, n_sources + 3 * k + 2] for k in range(members)])
    n = len(base.ids)
    if descriptors != "none":
        if structure_desc is None:
            raise InputError(f"--descriptors {descriptors} needs the structure descriptors of the crystals")
        structure = np.asarray(structure_desc, dtype=np.float64).reshape(n, len(STRUCTURE_DESCRIPTORS))
    crys, descs, names = [], [], []
    for k, idx in enumerate(order):
        tag = "" if k == 0 else f"@{k}"
        crys += [feas[i] for i in idx]
        names += [f"{models[i].path.name}{tag}:crys_fea[{j}]" for i in idx for j in range(feas[i].shape[1])]
        if descriptors != "none":
            desc = structure
            names_k = list(STRUCTURE_DESCRIPTORS)
            if descriptors == "slack":
                debye, bulk, shear = preds[n_sources + 3 * k:n_sources + 3 * k + 3]
                desc = np.concatenate([desc, slack_descriptors(desc, debye, bulk, shear)], axis=1)
                names_k += list(SLACK_DESCRIPTORS)
            descs.append(desc)
            names += [name + tag for name in names_k]
    desc = np.concatenate(descs, axis=1) if descs else np.zeros((n, 0))  # names: in the order of Features.X
    return Features(list(base.ids), base.targets, np.concatenate(crys, axis=1),
                    np.stack(preds[:n_sources], axis=1), desc, names, digests, members)


def features_from_datasets(models: Sequence[SourceModel], datasets: Sequence, n_sources: int,
                           descriptors: str = "none", structure_desc: np.ndarray | None = None,
                           batch_size: int = 500) -> Features:
    """Last-layer inputs of a list of crystals whose graphs are already built (a chunk of a
    screening run, :mod:`cgcnn.screening.run`), as :func:`compute_features` gives them for a folder.

    Rows, batches and arithmetic are those of :func:`compute_features`: for crystals
    ``k * batch_size ...`` of a folder, the same ``float32`` ``crys_fea`` bit for bit (a
    network's output depends, in the last bits, on its batch, so chunks must start at a
    multiple of ``batch_size`` to agree).

    Parameters
    ----------
    models : sequence of SourceModel
        The source models, then (for ``slack``) the Debye, bulk and shear models.
    datasets : sequence
        One dataset per model (``len(datasets) == len(models)``), each of the same n
        crystals in the same order, with that model's graph parameters and atom table
        (a :class:`cgcnn.data.CIFData` or anything with its ``__getitem__``, ``graph``,
        ``ids`` and ``targets``).
    n_sources : int
        How many of ``models`` are source models.
    descriptors : {"none", "structure", "slack"}
    structure_desc : ndarray of shape (n, 5), optional
        :func:`cgcnn.transfer.descriptors.structure_descriptors` of the crystals; needed unless
        ``descriptors`` is ``none``.
    batch_size : int
        Crystals per batch of each network.

    Returns
    -------
    Features
        ``atom_init`` digests taken from each dataset's ``atom_init`` table.

    Raises
    ------
    InputError
        An unknown descriptor level; descriptors asked for without ``structure_desc``.
    """
    if descriptors not in DESCRIPTOR_SETS:
        raise InputError(f"unknown descriptors {descriptors!r}; choose one of {', '.join(DESCRIPTOR_SETS)}")
    keys = [(data.params, atom_init_digest(data.atom_init)) for data in datasets]
    inputs = dict(zip(keys, datasets))
    feas, preds = run_batches(ModelSet(models, keys), inputs, batch_size, workers=0, progress=False)
    digests = [key[1] for key in keys]
    return assemble_features(datasets[0], models, feas, preds, digests, n_sources, descriptors, structure_desc)


def inputs_record(sources: Sequence[SourceModel], features: Features, descriptors: str,
                  property_models: dict | None) -> dict:
    """The record of what the last layer's inputs are (see :attr:`cgcnn.transfer.lastlayer.LastLayer.inputs`)."""
    props = list(property_models.values()) if (descriptors == "slack" and property_models) else []
    groups = list(features.groups)
    record = {"sources": [source_record(s) for s in sources], "descriptors": descriptors,
              "property_models": [source_record(m) for m in props], "atom_init": list(features.atom_init),
              "names": list(features.names), "n_features": (groups[0] + groups[1]) * features.members,
              "groups": groups}
    if features.members > 1:  # where the further members' models are, beside the first source model
        first = Path(sources[0].path).resolve().parent
        record["member_folders"] = [Path(os.path.relpath(Path(s.path).resolve().parent, first)).as_posix()
                                    for s in sources[1:]]
    return record


def source_order_problem(saved: dict, inputs: dict) -> str:
    """Why a run's source models are those a last layer was fit on (``saved``, its
    :attr:`~cgcnn.transfer.lastlayer.LastLayer.inputs`) in another order (``inputs``, this run's
    :func:`inputs_record`), and what to do: ensemble members found in their recorded folders
    whose files were swapped (the user gave one MODELPATH and no order), or MODELPATH listing
    the models in another order."""
    have = [s["sha256"] for s in inputs.get("sources", [])]
    want = [s["sha256"] for s in saved["sources"]]
    folders = saved.get("member_folders") or []
    where = [saved["sources"][0]["name"]] + [f"{f}/{s['name']}" for f, s in zip(folders, saved["sources"][1:])]
    if folders and inputs.get("member_folders") == folders:
        name = ["MODELPATH", *where[1:]]
        moved = "; ".join(f"{name[i]} holds the model fit as {name[want.index(h)]}" for i, h in enumerate(have)
                          if h != want[i])
        return (f"the source models of its ensemble members are not in the folders they were fit from ({moved}): "
                "put each file back, or refit with --train 1")
    if folders:
        return (f"MODELPATH lists the source models it was fit on in another order; give the first alone (its "
                f"ensemble members are found beside it: {', '.join(where[1:])}), or list them in that order")
    return (f"MODELPATH lists the source models it was fit on in another order; list them as at fitting "
            f"({','.join(s['name'] for s in saved['sources'])}), or refit with --train 1")
