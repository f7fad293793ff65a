"""Train a CGCNN: ``python -m cgcnn.train DATA [options]``.

Faithful to upstream CGCNN ``main.py`` (T. Xie, J. C. Grossman, PRL 120, 145301
(2018)): the same options and defaults, the same checkpoint dict, the files
``checkpoint.pth.tar``, ``model_best.pth.tar`` (chosen on the validation split)
and ``test_results.csv`` (``cif_id,target,prediction`` on the test split).
Added: ``--seed`` (split, normalizer sample and initialisation, so the same seed
gives the same model), ``--out-dir``, a progress line per epoch, and the staged
fine-tuning of ParAIsite (L. Klochko et al., arXiv:2411.18259): ``--pretrained``
starts from a checkpoint, ``--freeze-embedding`` and ``--freeze-convs K`` keep
the first layers fixed, ``--patience`` stops early on the validation MAE.

Checkpoints also carry the atom feature table (``atom_init``), the graph
parameters (``graph``) and the target's name, transform and unit (``target``);
see :mod:`cgcnn.checkpoint`.

The library functions take settings objects (:class:`TrainSettings`,
:class:`FitSettings`, ...); :func:`main` maps the command line onto them.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from cgcnn import InputError
from cgcnn.checkpoint import (
    ModelInfo,
    Normalizer,
    load_checkpoint,
    make_checkpoint,
    normalizer_from_checkpoint,
    save_checkpoint,
)
from cgcnn.cli import add_compat_options, add_graph_options, add_loader_options, check_counts, run_main
from cgcnn.data import CIFData, GraphParams, collate_pool
from cgcnn.files import check_output, save_csv
from cgcnn.model import CrystalGraphConvNet
from cgcnn.source import SourceModel, choose_atom_init

__all__ = [
    "FitSettings", "NetworkSettings", "SplitSettings", "TrainSettings", "TrainResult", "split_indices",
    "make_optimizer", "freeze_layers", "fit_network", "finetune", "train", "build_parser", "main",
]

PathLike = str | os.PathLike


# --------------------------------------------------------------------------------------------------
# settings


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

    @property
    def classification(self) -> bool:
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


@dataclass
class TrainResult:
    """What :func:`train` reports.

    Attributes
    ----------
    best_val : float
        Best validation MAE (accuracy for classification).
    test : float or None
        The test metric of the best model (None without a test split).
    epochs : int
        Epochs completed, the resumed ones included.
    seconds : float
        Wall time.
    """

    best_val: float
    test: float | None
    epochs: int
    seconds: float


# --------------------------------------------------------------------------------------------------
# the pieces


def split_indices(n: int, seed: int, train_ratio=None, val_ratio=0.1, test_ratio=0.1,
                  train_size=None, val_size=None, test_size=None):
    """Random train/validation/test split of ``n`` rows (upstream ``get_train_val_test_loader``).

    Rows are permuted with ``np.random.RandomState(seed)``; sizes come from the
    ``*_size`` arguments when given, else from the ratios (``train_ratio`` defaults
    to ``1 - val_ratio - test_ratio``).

    Returns
    -------
    train, val, test : ndarray of int
        Disjoint row indices.

    Raises
    ------
    InputError
        If the sizes do not fit in ``n`` or the training split is empty.
    """
    if train_ratio is None:
        train_ratio = 1 - val_ratio - test_ratio
    n_train = train_size if train_size is not None else int(train_ratio * n)
    n_test = test_size if test_size is not None else int(test_ratio * n)
    n_val = val_size if val_size is not None else int(val_ratio * n)
    if n_train <= 0 or n_train + n_val + n_test > n:
        raise InputError(f"split of {n} crystals into {n_train} train, {n_val} validation, {n_test} test is impossible")
    perm = np.random.RandomState(seed).permutation(n)
    return perm[:n_train], perm[n_train:n_train + n_val], perm[n - n_test:] if n_test else perm[:0]


class _Meter:
    def __init__(self):
        self.sum = 0.0
        self.n = 0

    def update(self, value: float, n: int) -> None:
        self.sum += value * n
        self.n += n

    @property
    def avg(self) -> float:
        return self.sum / max(self.n, 1)


def _epoch(net, loader, normalizer, criterion, optimizer=None, classification=False, collect=False, frozen=()):
    """One pass; trains when ``optimizer`` is given.  Returns (loss, metric, rows).

    ``frozen`` modules stay in evaluation mode (their BatchNorm statistics fixed)."""
    training = optimizer is not None
    net.train(training)
    for module in frozen:
        module.eval()
    loss_m, err_m = _Meter(), _Meter()
    rows = []
    with torch.set_grad_enabled(training):
        for (atom_fea, nbr_fea, nbr_fea_idx, crystal_atom_idx), target, cif_ids in loader:
            out = net(atom_fea, nbr_fea, nbr_fea_idx, crystal_atom_idx)
            if classification:
                labels = target.view(-1).long()
                loss = criterion(out, labels)
                metric = (out.argmax(1) == labels).float().mean().item()
                pred = torch.exp(out[:, 1])
            else:
                loss = criterion(out, normalizer.norm(target))
                pred = normalizer.denorm(out.detach())
                metric = torch.mean(torch.abs(target - pred)).item()
            if training:
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            n = target.size(0)
            loss_m.update(loss.item(), n)
            err_m.update(metric, n)
            if collect:
                rows.extend(zip(cif_ids, target.view(-1).tolist(), pred.view(-1).tolist()))
    return loss_m.avg, err_m.avg, rows


def freeze_layers(net: CrystalGraphConvNet, embedding: bool = False, convs: int = 0) -> list[nn.Module]:
    """Fix the parameters of the embedding (when ``embedding``) and of the first ``convs``
    convolutions of ``net`` (ParAIsite's staged fine-tuning).

    Returns
    -------
    list of nn.Module
        The frozen modules; pass them as ``frozen`` to :func:`fit_network` so that they
        also stay in evaluation mode (BatchNorm statistics fixed).
    """
    frozen = ([net.embedding] if embedding else []) + list(net.convs[:convs])
    for module in frozen:
        for p in module.parameters():
            p.requires_grad_(False)
    return frozen


def make_optimizer(net: nn.Module, optim: str = "SGD", lr: float = 0.01, momentum: float = 0.9,
                   weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """An optimizer of the parameters of ``net`` that require gradients.

    ``optim`` is ``"SGD"`` (with ``momentum``) or ``"Adam"``, as upstream ``main.py``.

    Raises
    ------
    InputError
        For another ``optim``.
    """
    trainable = [p for p in net.parameters() if p.requires_grad]
    if optim == "SGD":
        return torch.optim.SGD(trainable, lr, momentum=momentum, weight_decay=weight_decay)
    if optim == "Adam":
        return torch.optim.Adam(trainable, lr, weight_decay=weight_decay)
    raise InputError(f"unknown optimizer {optim!r}; choose SGD or Adam")


#: ``on_epoch(epoch, net, optimizer, best, is_best)``, called after each epoch.
EpochCallback = Callable[[int, CrystalGraphConvNet, torch.optim.Optimizer, float, bool], None]


@dataclass
class _Loop:
    """The epoch loop of :func:`fit_network` and what it needs."""

    net: CrystalGraphConvNet
    train_loader: DataLoader
    val_loader: DataLoader
    normalizer: Normalizer
    criterion: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    fit: FitSettings
    classification: bool
    frozen: Sequence[nn.Module]
    on_epoch: EpochCallback | None
    t0: float

    def run(self, start_epoch: int, best: float):
        """Epochs ``start_epoch .. fit.epochs - 1``; returns the best metric and its weights (or None)."""
        fit, metric_name = self.fit, "accuracy" if self.classification else "MAE"
        since_best = 0
        best_state = None
        for epoch in range(start_epoch, fit.epochs):
            tl, te, _ = _epoch(self.net, self.train_loader, self.normalizer, self.criterion, self.optimizer,
                               self.classification, frozen=self.frozen)
            vl, ve, _ = _epoch(self.net, self.val_loader, self.normalizer, self.criterion, None, self.classification)
            if ve != ve:
                raise InputError("validation error is NaN: training diverged (try a smaller --lr)")
            self.scheduler.step()
            is_best = ve > best if self.classification else ve < best
            if is_best:
                best, since_best = ve, 0
                best_state = {k: v.detach().clone() for k, v in self.net.state_dict().items()}
            else:
                since_best += 1
            if self.on_epoch is not None:
                self.on_epoch(epoch, self.net, self.optimizer, best, is_best)
            if fit.print_freq and ((epoch + 1) % fit.print_freq == 0 or is_best or epoch + 1 == fit.epochs):
                print(f"epoch {epoch + 1:4d}/{fit.epochs}  train loss {tl:.4f} {metric_name} {te:.4f}  "
                      f"val loss {vl:.4f} {metric_name} {ve:.4f}{' *' if is_best else '  '}  "
                      f"{time.time() - self.t0:7.1f} s", file=sys.stderr, flush=True)
            if fit.patience and since_best >= fit.patience:
                if fit.print_freq:
                    print(f"early stop: validation {metric_name} has not improved for {fit.patience} epochs",
                          file=sys.stderr)
                break
        return best, best_state


def _fit_settings(fit, legacy: dict) -> FitSettings:
    """``fit`` as :class:`FitSettings`; an int is the old call ``fit_network(..., epochs, lr=..., ...)``."""
    if isinstance(fit, FitSettings):
        if legacy:
            raise TypeError(f"fit_network() got unexpected keyword arguments {sorted(legacy)}")
        return fit
    names = {f.name for f in dataclasses.fields(FitSettings)}
    unknown = sorted(set(legacy) - names)
    if unknown:
        raise TypeError(f"fit_network() got unexpected keyword arguments {unknown}")
    if "lr_milestones" in legacy:
        legacy = {**legacy, "lr_milestones": tuple(legacy["lr_milestones"])}
    return FitSettings(epochs=int(fit), **legacy)


def fit_network(net: CrystalGraphConvNet, dataset, train_idx, val_idx, normalizer: Normalizer,
                fit: FitSettings | int, *, classification: bool = False, frozen: Sequence[nn.Module] = (),
                optimizer: torch.optim.Optimizer | None = None, start_epoch: int = 0, best: float | None = None,
                on_epoch: EpochCallback | None = None, t0: float | None = None,
                **legacy) -> CrystalGraphConvNet:
    """Train ``net`` on rows ``train_idx`` of ``dataset``, choosing on the MAE of rows ``val_idx``.

    The training loop of upstream CGCNN ``main.py`` (T. Xie, J. C. Grossman, PRL 120,
    145301 (2018)): MSE on normalised targets (NLL for classification), ``MultiStepLR``
    dropping the rate tenfold at ``fit.lr_milestones``, shuffled batches drawn with a
    generator seeded by ``fit.seed``; with ``fit.patience``, the early stop of ParAIsite
    (L. Klochko et al., arXiv:2411.18259).  Deterministic algorithms are switched on for
    the call, so the same settings give the same weights.

    Parameters
    ----------
    net : CrystalGraphConvNet
        Trained in place (e.g. a copy of a pretrained source network).
    dataset : CIFData
        Crystal graphs with targets.
    train_idx, val_idx : ndarray of int
        Rows to train on and to choose the best epoch on (the training rows when empty).
    normalizer : Normalizer
        Target normalizer (the loss is taken on normalised targets).
    fit : FitSettings
        Epochs, optimizer, schedule, batches, patience, seed, progress lines.  (An int
        with the old keyword arguments ``lr=``, ``optim=``, ... is still accepted, as
        :class:`FitSettings` fields.)
    classification : bool
        NLL loss and accuracy instead of MSE and MAE.
    frozen : sequence of nn.Module
        Modules whose parameters stay fixed and which stay in evaluation mode
        (see :func:`freeze_layers`).
    optimizer : torch.optim.Optimizer, optional
        An optimizer already built (e.g. with a resumed state); by default one of the
        trainable parameters, as :func:`make_optimizer` with ``fit``'s settings.
    start_epoch : int
        First epoch; the learning rate is the schedule's at that epoch.
    best : float, optional
        Best validation metric so far (a resumed run).
    on_epoch : callable, optional
        Called as ``on_epoch(epoch, net, optimizer, best, is_best)`` after each epoch,
        e.g. to save checkpoints.
    t0 : float, optional
        ``time.time()`` the progress lines count from (default: the call).

    Returns
    -------
    CrystalGraphConvNet
        ``net``, in evaluation mode, holding the weights of its best validation epoch of
        this call (the last weights when none improved on ``best``).

    Raises
    ------
    InputError
        If the validation error becomes NaN (training diverged), or ``fit.optim`` is unknown.
    """
    fit = _fit_settings(fit, legacy)
    t0 = time.time() if t0 is None else t0
    for module in frozen:
        for p in module.parameters():
            p.requires_grad_(False)
    if optimizer is None:
        optimizer = make_optimizer(net, fit.optim, fit.lr, fit.momentum, fit.weight_decay)
    if best is None:
        best = -np.inf if classification else np.inf
    for group in optimizer.param_groups:  # MultiStepLR starting past epoch 0 needs it
        group.setdefault("initial_lr", group["lr"])
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(fit.lr_milestones), gamma=0.1,
                                                     last_epoch=start_epoch - 1 if start_epoch else -1)
    if start_epoch:  # the rate of epoch start_epoch, whether the optimizer is fresh or resumed
        drops = sum(m <= start_epoch for m in fit.lr_milestones)
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"]
            for _ in range(drops):
                group["lr"] *= 0.1  # as MultiStepLR multiplies, step by step
    gen = torch.Generator().manual_seed(fit.seed)
    loader = lambda idx, shuffle: DataLoader(
        Subset(dataset, idx), batch_size=fit.batch_size, shuffle=shuffle, num_workers=fit.workers,
        collate_fn=collate_pool, generator=gen if shuffle else None)
    loop = _Loop(net=net, train_loader=loader(train_idx, True),
                 val_loader=loader(val_idx if len(val_idx) else train_idx, False), normalizer=normalizer,
                 criterion=nn.NLLLoss() if classification else nn.MSELoss(), optimizer=optimizer,
                 scheduler=scheduler, fit=fit, classification=classification, frozen=frozen, on_epoch=on_epoch,
                 t0=t0)
    # With several threads the backward of the neighbour gather accumulates in a
    # varying order; deterministic algorithms make the same seed give the same model.
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        _, best_state = loop.run(start_epoch, best)
    finally:
        torch.use_deterministic_algorithms(was_deterministic)
    if best_state is not None:
        net.load_state_dict(best_state)
    net.eval()
    return net


def finetune(source: SourceModel, dataset, train_idx, val_idx, fit: FitSettings, *, freeze_embedding: bool = True,
             freeze_convs: int = 0) -> SourceModel:
    """Staged fine-tuning (ParAIsite, L. Klochko et al., arXiv:2411.18259) of a copy of a source model.

    The same steps as ``python -m cgcnn.train --pretrained``: the normalizer of the
    training targets (:meth:`Normalizer.from_targets`, seed ``fit.seed``), the chosen
    layers frozen, then :func:`fit_network`.  ``source`` itself is not changed.

    Parameters
    ----------
    source : SourceModel
        The pretrained model (a regression).
    dataset : CIFData
        Crystal graphs with targets, e.g. ``source.dataset(folder)``.
    train_idx, val_idx : ndarray of int
        Rows to train on and to choose the best epoch on.
    fit : FitSettings
    freeze_embedding : bool
        Keep the embedding fixed (default, as evaluate's ``finetune`` row).
    freeze_convs : int
        Keep the first K convolutions fixed.

    Returns
    -------
    SourceModel
        A copy of ``source`` with the tuned network (evaluation mode) and the new normalizer.

    Raises
    ------
    InputError
        As :func:`fit_network`; a dataset without targets.
    """
    if not dataset.has_targets:
        raise InputError(f"{dataset.root / 'id_prop.csv'}: fine-tuning needs targets (cif_id,target rows)")
    net = copy.deepcopy(source.net)
    normalizer = Normalizer.from_targets(dataset.targets[train_idx], seed=fit.seed)
    frozen = freeze_layers(net, freeze_embedding, freeze_convs)
    fit_network(net, dataset, train_idx, val_idx, normalizer, fit, frozen=frozen)
    return dataclasses.replace(source, net=net, normalizer=normalizer)


# --------------------------------------------------------------------------------------------------
# the training run of python -m cgcnn.train


def _resume(settings: TrainSettings, net, optimizer, normalizer: Normalizer):
    """Load ``settings.resume`` into ``net``, ``optimizer`` and ``normalizer``; returns (epoch, best).

    Raises
    ------
    InputError
        A checkpoint that is unreadable, does not match the model, lacks the normalizer
        of a regression, or has nothing left to train.
    """
    ckpt = load_checkpoint(settings.resume)
    try:
        net.load_state_dict(ckpt["state_dict"])
        optimizer.load_state_dict(ckpt["optimizer"])
    except (RuntimeError, ValueError, KeyError) as exc:
        raise InputError(f"{settings.resume}: does not match this model ({str(exc).splitlines()[0]})") from None
    if not settings.classification:  # a classifier keeps the fixed [0, 1] normalizer it does not use
        normalizer.load_state_dict(normalizer_from_checkpoint(ckpt, settings.resume, required=True).state_dict())
    try:
        epoch, best = int(ckpt["epoch"]), float(ckpt["best_mae_error"])
    except (KeyError, TypeError, ValueError):
        raise InputError(f"{settings.resume}: checkpoint has no epoch and best_mae_error; cannot resume") from None
    if epoch >= settings.fit.epochs:
        raise InputError(f"{settings.resume}: already trained {epoch} epochs; give --epochs above {epoch}")
    print(f"resumed from {settings.resume} at epoch {epoch}", file=sys.stderr)
    return epoch, best


def train(settings: TrainSettings) -> TrainResult:
    """Train as upstream ``main.py``: split, normalizer, network, epochs, checkpoints, test.

    Writes ``checkpoint.pth.tar`` after every epoch and ``model_best.pth.tar`` after each
    better validation epoch (both through :func:`cgcnn.checkpoint.save_checkpoint`), then
    ``test_results.csv`` (``cif_id,target,prediction``, test rows) of the best model, all
    in ``settings.out_dir``; progress lines go to stderr.

    Parameters
    ----------
    settings : TrainSettings

    Returns
    -------
    TrainResult

    Raises
    ------
    InputError
        Bad data folder, bad settings, a bad ``resume``/``pretrained`` checkpoint, an
        unwritable output folder, a diverged training.
    """
    t0 = time.time()
    fit = settings.fit
    torch.manual_seed(fit.seed)
    out_dir = Path(settings.out_dir)
    if not out_dir.is_dir():
        raise InputError(f"{out_dir}: output folder does not exist")
    check_output(out_dir / "checkpoint.pth.tar")
    if settings.start_epoch >= fit.epochs and not settings.resume:
        raise InputError(f"--start-epoch {settings.start_epoch} leaves no epoch below --epochs {fit.epochs}")
    classification = settings.classification
    pretrained = SourceModel.load(settings.pretrained) if settings.pretrained else None
    params = pretrained.params if pretrained else settings.graph
    atom_init = choose_atom_init(settings.data, settings.atom_init, pretrained.atom_init if pretrained else None)
    dataset = CIFData(settings.data, params=params, atom_init=atom_init, cache_dir=settings.cache_dir,
                      cache_bytes=2**31)
    if not dataset.has_targets:
        raise InputError(f"{Path(settings.data) / 'id_prop.csv'}: training needs targets (cif_id,target rows)")
    if pretrained:
        pretrained.check_data(dataset)
    split = settings.split
    train_idx, val_idx, test_idx = split_indices(
        len(dataset), fit.seed, split.train_ratio, split.val_ratio, split.test_ratio,
        split.train_size, split.val_size, split.test_size)

    normalizer = Normalizer.from_targets(dataset.targets[train_idx], seed=fit.seed)
    if classification:
        normalizer = Normalizer(torch.tensor([0.0, 1.0]))

    if pretrained:
        net = pretrained.net
    else:
        n = settings.network
        net = CrystalGraphConvNet(dataset.orig_atom_fea_len, params.nbr_fea_len, atom_fea_len=n.atom_fea_len,
                                  n_conv=n.n_conv, h_fea_len=n.h_fea_len, n_h=n.n_h, classification=classification)
    frozen = freeze_layers(net, settings.freeze_embedding, settings.freeze_convs)
    optimizer = make_optimizer(net, fit.optim, fit.lr, fit.momentum, fit.weight_decay)
    n_trainable = sum(p.numel() for p in net.parameters() if p.requires_grad)

    start_epoch, best = settings.start_epoch, -np.inf if classification else np.inf
    if settings.resume:
        start_epoch, best = _resume(settings, net, optimizer, normalizer)

    print(f"{len(dataset)} crystals: {len(train_idx)} train, {len(val_idx)} validation, {len(test_idx)} test; "
          f"{n_trainable} trainable parameters", file=sys.stderr)

    target = dict(settings.target)
    if pretrained and pretrained.target and target.get("name", "target") == "target":
        target = dict(pretrained.target)  # fine-tuning on the same quantity unless told otherwise
    info = ModelInfo(atom_init=dataset.atom_init, graph=params, target=target)
    args = settings.record(graph=params)
    last = {"epoch": start_epoch, "best": best}

    def save(epoch, net, optimizer, best, is_best):
        last.update(epoch=epoch, best=best)
        ckpt = make_checkpoint(net, optimizer, normalizer, epoch=epoch + 1, best=best, args=args, info=info)
        save_checkpoint(ckpt, out_dir / "checkpoint.pth.tar")
        if is_best:
            save_checkpoint(ckpt, out_dir / "model_best.pth.tar")

    fit_network(net, dataset, train_idx, val_idx, normalizer, fit, classification=classification, frozen=frozen,
                optimizer=optimizer, start_epoch=start_epoch, best=best, on_epoch=save, t0=t0)

    test_metric = None
    best_path = out_dir / "model_best.pth.tar"
    if len(test_idx) and best_path.exists():
        test_loader = DataLoader(Subset(dataset, test_idx), batch_size=fit.batch_size, shuffle=False,
                                 num_workers=fit.workers, collate_fn=collate_pool)
        criterion = nn.NLLLoss() if classification else nn.MSELoss()
        net.load_state_dict(load_checkpoint(best_path)["state_dict"])
        _, test_metric, rows = _epoch(net, test_loader, normalizer, criterion, None, classification, collect=True)
        save_csv(pd.DataFrame(rows, columns=["cif_id", "target", "prediction"]), out_dir / "test_results.csv",
                 float_format=None)
        metric_name = "accuracy" if classification else "MAE"
        print(f"test {metric_name} of the best model: {test_metric:.4f} on {len(test_idx)} crystals "
              f"({out_dir / 'test_results.csv'})", file=sys.stderr)
    return TrainResult(best_val=last["best"], test=test_metric, epochs=last["epoch"] + 1,
                       seconds=time.time() - t0)


# --------------------------------------------------------------------------------------------------
# command line


def build_parser() -> argparse.ArgumentParser:
    """Options of upstream CGCNN ``main.py`` (same names and defaults) plus the project's."""
    p = argparse.ArgumentParser(prog="python -m cgcnn.train", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("data", metavar="DATA", help="CGCNN data folder (id_prop.csv, CIFs, atom_init.json)")
    p.add_argument("--task", choices=["regression", "classification"], default="regression")
    add_loader_options(p, batch_size=256, batch_help="mini-batch size")
    add_compat_options(p, print_freq_help="epochs between progress lines")
    p.add_argument("--epochs", default=30, type=int, help="last epoch (counted from 0)")
    p.add_argument("--start-epoch", default=0, type=int,
                   help="first epoch of a fresh run (learning-rate schedule included); --resume sets it")
    p.add_argument("--lr", "--learning-rate", default=0.01, type=float)
    p.add_argument("--lr-milestones", default=[100], nargs="+", type=int, help="epochs where lr drops by 10")
    p.add_argument("--momentum", default=0.9, type=float)
    p.add_argument("--weight-decay", "--wd", default=0.0, type=float)
    p.add_argument("--resume", default="", type=str, help="checkpoint to resume from")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--train-ratio", default=None, type=float)
    g.add_argument("--train-size", default=None, type=int)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--val-ratio", default=0.1, type=float)
    g.add_argument("--val-size", default=None, type=int)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--test-ratio", default=0.1, type=float)
    g.add_argument("--test-size", default=None, type=int)
    p.add_argument("--optim", default="SGD", choices=["SGD", "Adam"])
    p.add_argument("--atom-fea-len", default=64, type=int)
    p.add_argument("--h-fea-len", default=128, type=int)
    p.add_argument("--n-conv", default=3, type=int)
    p.add_argument("--n-h", default=1, type=int)
    p.add_argument("--radius", default=8.0, type=float, help="neighbour cut-off (Å)")
    p.add_argument("--max-num-nbr", default=12, type=int, help="neighbours kept per site")
    p.add_argument("--step", default=0.2, type=float, help="Gaussian spacing (Å)")
    add_graph_options(p, atom_init_help="atom_init.json (default: DATA/atom_init.json, else the --pretrained "
                                        "model's table)")
    p.add_argument("--seed", default=0, type=int, help="seed of split, normalizer sample and initialisation")
    p.add_argument("--out-dir", default=".", help="folder for checkpoint.pth.tar, model_best.pth.tar, test_results.csv")
    p.add_argument("--target-name", default="target", help="name of the target stored in the checkpoint")
    p.add_argument("--target-transform", default="none", help="transform of the target, e.g. log10")
    p.add_argument("--target-unit", default="", help="unit of the untransformed target, e.g. 'W m-1 K-1'")
    p.add_argument("--pretrained", default=None, help="start from this checkpoint (staged fine-tuning)")
    p.add_argument("--freeze-embedding", action="store_true", help="keep the embedding layer fixed")
    p.add_argument("--freeze-convs", default=0, type=int, metavar="K", help="keep the first K convolutions fixed")
    p.add_argument("--patience", default=0, type=int,
                   help="stop after this many epochs without a better validation (0: never)")
    return p


def settings_from_args(args: argparse.Namespace) -> TrainSettings:
    """Map parsed options onto :class:`TrainSettings` (``-p 0`` still prints every epoch, as before)."""
    return TrainSettings(
        data=args.data, out_dir=args.out_dir, task=args.task,
        fit=FitSettings(epochs=args.epochs, lr=args.lr, optim=args.optim, momentum=args.momentum,
                        weight_decay=args.weight_decay, lr_milestones=tuple(args.lr_milestones),
                        batch_size=args.batch_size, workers=args.workers, patience=args.patience, seed=args.seed,
                        print_freq=max(args.print_freq, 1)),
        network=NetworkSettings(atom_fea_len=args.atom_fea_len, h_fea_len=args.h_fea_len, n_conv=args.n_conv,
                                n_h=args.n_h),
        split=SplitSettings(train_ratio=args.train_ratio, val_ratio=args.val_ratio, test_ratio=args.test_ratio,
                            train_size=args.train_size, val_size=args.val_size, test_size=args.test_size),
        graph=GraphParams(args.radius, args.max_num_nbr, 0.0, args.step),
        atom_init=args.atom_init, cache_dir=args.cache_dir,
        target={"name": args.target_name, "transform": args.target_transform, "unit": args.target_unit},
        resume=args.resume or None, start_epoch=args.start_epoch, pretrained=args.pretrained,
        freeze_embedding=args.freeze_embedding, freeze_convs=args.freeze_convs, disable_cuda=args.disable_cuda,
    )


def main(argv: list[str] | None = None) -> int:
    """``python -m cgcnn.train``: parse, train, 0 on success (faults raise :class:`InputError`)."""
    args = build_parser().parse_args(argv)
    check_counts(args, at_least_one=("batch_size", "epochs"), non_negative=("workers", "start_epoch"))
    torch.set_num_threads(max(1, min(torch.get_num_threads(), os.cpu_count() or 1)))
    train(settings_from_args(args))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
