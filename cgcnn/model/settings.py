"""Settings objects of training: what ``python -m cgcnn.train`` and the library's
training functions take instead of an argparse ``Namespace`` or long argument lists
(as alignn's ``TrainingConfig``).

:class:`FitSettings` drives the training loop (:func:`cgcnn.model.fit.fit_network`);
:class:`TrainSettings` a whole run of :func:`cgcnn.train.train`, and gives the
``args`` record stored in its checkpoints (:meth:`TrainSettings.record`).  Defaults
are upstream CGCNN ``main.py``'s (T. Xie, J. C. Grossman, PRL 120, 145301 (2018)).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from cgcnn import InputError
from cgcnn.data import GraphParams

__all__ = ["FitSettings", "NetworkSettings", "SplitSettings", "TrainSettings"]

PathLike = str | os.PathLike

#: Most Gaussian edge features (``(radius - dmin) / step + 1``) :meth:`TrainSettings.check` accepts.
MAX_GAUSSIANS = 1000


@dataclass
class FitSettings:
    """How :func:`fit_network` trains: upstream ``main.py``'s optimisation options.

    Attributes
    ----------
    epochs : int
        Last epoch, counted from 0 (``epochs - start_epoch`` are run).
    lr : float
        Learning rate.
    optim : {"SGD", "Adam"}
    momentum : float
        SGD momentum.
    weight_decay : float
    lr_milestones : tuple of int
        Epochs where ``MultiStepLR`` divides the rate by 10.
    batch_size, workers : int
        DataLoader settings.
    patience : int
        Stop after this many epochs without a better validation metric (0: never).
    seed : int
        Seed of the batch shuffling.
    print_freq : int
        Epochs between progress lines on stderr (0: none; the best epochs and the
        last one are always shown otherwise).
    """

    epochs: int = 30
    lr: float = 0.01
    optim: str = "SGD"
    momentum: float = 0.9
    weight_decay: float = 0.0
    lr_milestones: tuple[int, ...] = (100,)
    batch_size: int = 256
    workers: int = 0
    patience: int = 0
    seed: int = 0
    print_freq: int = 0


@dataclass
class NetworkSettings:
    """Sizes of a new CGCNN (upstream defaults): atom feature length after the
    embedding, hidden length after pooling (= ``crys_fea`` length), convolutions,
    hidden layers."""

    atom_fea_len: int = 64
    h_fea_len: int = 128
    n_conv: int = 3
    n_h: int = 1


@dataclass
class SplitSettings:
    """The train/validation/test split of :func:`split_indices` (sizes win over ratios)."""

    train_ratio: float | None = None
    val_ratio: float = 0.1
    test_ratio: float = 0.1
    train_size: int | None = None
    val_size: int | None = None
    test_size: int | None = None


@dataclass
class TrainSettings:
    """Everything :func:`train` needs; ``python -m cgcnn.train`` fills it from its options.

    Attributes
    ----------
    data : path
        CGCNN data folder with targets.
    out_dir : path
        Folder for ``checkpoint.pth.tar``, ``model_best.pth.tar`` and ``test_results.csv``.
    task : {"regression", "classification"}
    fit, network, split
        See :class:`FitSettings`, :class:`NetworkSettings`, :class:`SplitSettings`;
        ``fit.seed`` also seeds the split, the normalizer sample and the initialisation.
    graph : GraphParams
        Graph parameters of a new network (a pretrained one keeps its own).
    atom_init : path, optional
        Atom feature table (default: ``data/atom_init.json``, else a pretrained model's).
    cache_dir : path, optional
        Folder for crystal graphs cached across runs.
    target : dict
        ``name``, ``transform`` and ``unit`` of the target, stored in the checkpoint.  With
        ``pretrained`` and the default name ``"target"``, the pretrained model's is kept.
    resume : path, optional
        A checkpoint of this training to continue (weights, optimizer, normalizer, epoch).
    start_epoch : int
        First epoch of a fresh run (the learning-rate schedule starts there); a
        resumed run starts at its checkpoint's epoch.
    pretrained : path, optional
        Start from this checkpoint's network (staged fine-tuning).
    freeze_embedding : bool
        Keep the embedding layer fixed.
    freeze_convs : int
        Keep the first K convolutions fixed.
    disable_cuda : bool
        Upstream's option, recorded in the checkpoint; training runs on the CPU either way.
    """

    data: PathLike
    out_dir: PathLike = "."
    task: str = "regression"
    fit: FitSettings = field(default_factory=FitSettings)
    network: NetworkSettings = field(default_factory=NetworkSettings)
    split: SplitSettings = field(default_factory=SplitSettings)
    graph: GraphParams = field(default_factory=GraphParams)
    atom_init: PathLike | None = None
    cache_dir: PathLike | None = None
    target: dict = field(default_factory=lambda: {"name": "target", "transform": "none", "unit": ""})
    resume: PathLike | None = None
    start_epoch: int = 0
    pretrained: PathLike | None = None
    freeze_embedding: bool = False
    freeze_convs: int = 0
    disable_cuda: bool = False

    def check(self) -> None:
        """Refuse settings that make no sense, before any work, naming the command-line option.

        Counts (``--epochs``, ``--batch-size``, ``--max-num-nbr``, network sizes) must be at
        least 1; ``--workers``, ``--start-epoch``, ``--patience``, ``--freeze-convs`` and the
        split sizes not negative; ``--radius``, ``--step`` and ``--lr`` positive, with
        ``--step`` below ``--radius`` and at most :data:`MAX_GAUSSIANS` Gaussians; the
        split ratios within 0 ... 1; ``--lr-milestones`` not negative; ``--seed`` within
        0 ... 2**32 - 1.

        Raises
        ------
        InputError
            One line naming the first bad option and its value.
        """
        fit, net, split, graph = self.fit, self.network, self.split, self.graph
        at_least_one = {"--epochs": fit.epochs, "--batch-size": fit.batch_size, "--max-num-nbr": graph.max_num_nbr,
                        "--atom-fea-len": net.atom_fea_len, "--h-fea-len": net.h_fea_len, "--n-conv": net.n_conv,
                        "--n-h": net.n_h, "--train-size": split.train_size}
        non_negative = {"--workers": fit.workers, "--start-epoch": self.start_epoch, "--patience": fit.patience,
                        "--freeze-convs": self.freeze_convs, "--val-size": split.val_size,
                        "--test-size": split.test_size, "--weight-decay": fit.weight_decay,
                        "--momentum": fit.momentum}
        positive = {"--radius": graph.radius, "--step": graph.step, "--lr": fit.lr}
        fractions = {"--train-ratio": split.train_ratio, "--val-ratio": split.val_ratio,
                     "--test-ratio": split.test_ratio}
        for option, value in at_least_one.items():
            if value is not None and value < 1:
                raise InputError(f"{option} must be at least 1, not {value}")
        for option, value in non_negative.items():
            if value is not None and not (value >= 0 and math.isfinite(value)):
                raise InputError(f"{option} must not be negative, not {value}")
        for option, value in positive.items():
            if not (value > 0 and math.isfinite(value)):
                raise InputError(f"{option} must be a positive number, not {value}")
        for option, value in fractions.items():
            if value is not None and not 0 <= value <= 1:
                raise InputError(f"{option} must be between 0 and 1, not {value}")
        if graph.step >= graph.radius - graph.dmin:
            raise InputError(f"--step {graph.step} must be smaller than --radius {graph.radius} "
                             "(the Gaussians span 0 ... radius)")
        n_gaussians = (graph.radius - graph.dmin) / graph.step + 1
        if n_gaussians > MAX_GAUSSIANS:
            raise InputError(f"--radius {graph.radius} and --step {graph.step} give {n_gaussians:.3g} Gaussian edge "
                             f"features, more than {MAX_GAUSSIANS} (upstream: --radius 8 --step 0.2, 41)")
        if any(m < 0 for m in fit.lr_milestones):
            raise InputError(f"--lr-milestones must not be negative, not {list(fit.lr_milestones)}")
        if not 0 <= fit.seed <= 2**32 - 1:
            raise InputError(f"--seed must be within 0 ... 2**32 - 1, not {fit.seed}")
        if self.task not in ("regression", "classification"):
            raise InputError(f"--task must be regression or classification, not {self.task!r}")

    @property
    def classification(self) -> bool:
        """Whether :attr:`task` is ``"classification"`` (NLL loss, accuracy)."""
        return self.task == "classification"

    def record(self, graph: GraphParams | None = None) -> dict:
        """The checkpoint's ``args``: the options by their command-line names, as upstream
        stores them, with paths by name only (a checkpoint carries no folder of the machine
        it was trained on), plus ``data_options`` and ``graph`` (the parameters used: those
        of ``graph`` when given, e.g. a pretrained model's, else :attr:`graph`)."""
        name = lambda v: Path(v).name if v else v
        fit, net, split = self.fit, self.network, self.split
        record = {
            "data": name(self.data), "task": self.task, "disable_cuda": self.disable_cuda, "workers": fit.workers,
            "epochs": fit.epochs,
            "start_epoch": self.start_epoch, "batch_size": fit.batch_size, "lr": fit.lr,
            "lr_milestones": list(fit.lr_milestones), "momentum": fit.momentum, "weight_decay": fit.weight_decay,
            "print_freq": fit.print_freq, "resume": name(self.resume) or "",
            "train_ratio": split.train_ratio, "train_size": split.train_size, "val_ratio": split.val_ratio,
            "val_size": split.val_size, "test_ratio": split.test_ratio, "test_size": split.test_size,
            "optim": fit.optim, "atom_fea_len": net.atom_fea_len, "h_fea_len": net.h_fea_len, "n_conv": net.n_conv,
            "n_h": net.n_h, "radius": self.graph.radius, "max_num_nbr": self.graph.max_num_nbr,
            "step": self.graph.step, "atom_init": name(self.atom_init), "seed": fit.seed,
            "out_dir": name(self.out_dir), "cache_dir": name(self.cache_dir),
            "target_name": self.target.get("name", "target"),
            "target_transform": self.target.get("transform", "none"), "target_unit": self.target.get("unit", ""),
            "pretrained": name(self.pretrained), "freeze_embedding": self.freeze_embedding,
            "freeze_convs": self.freeze_convs, "patience": fit.patience,
        }
        record["data_options"] = [record["data"]]
        record["graph"] = (graph or self.graph).as_dict()
        return record
