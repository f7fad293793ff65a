"""The training loop of a CGCNN: epochs, optimizer, schedule, early stop, fine-tuning.

Upstream CGCNN ``main.py``'s ``train``/``validate`` loop (T. Xie, J. C. Grossman,
PRL 120, 145301 (2018)), seeded and deterministic, with the staged fine-tuning of
ParAIsite (L. Klochko et al., arXiv:2411.18259): :func:`fit_network` trains a
network on rows of a dataset, :func:`finetune` a copy of a source model.  A whole
training run with checkpoints and a test split is :func:`cgcnn.train.train`.
"""

from __future__ import annotations

import copy
import dataclasses
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from cgcnn import InputError
from cgcnn.data import collate_pool
from cgcnn.model.checkpoint import Normalizer
from cgcnn.model.network import CrystalGraphConvNet
from cgcnn.model.settings import FitSettings
from cgcnn.model.source import SourceModel

__all__ = ["EpochCallback", "run_epoch", "freeze_layers", "make_optimizer", "fit_network", "finetune"]


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


def run_epoch(net, loader, normalizer, criterion, optimizer=None, classification=False, collect=False, frozen=()):
    """One pass over ``loader``; trains when ``optimizer`` is given (upstream ``train``/``validate``).

    Parameters
    ----------
    net : CrystalGraphConvNet
    loader : DataLoader
        Batches of :func:`cgcnn.data.collate_pool`.
    normalizer : Normalizer
        Targets are normalised for the loss, predictions de-normalised.
    criterion : nn.Module
        ``MSELoss`` (regression) or ``NLLLoss`` (classification).
    optimizer : torch.optim.Optimizer, optional
        Train with it; without, evaluate (no gradients).
    classification : bool
    collect : bool
        Also return the rows ``(cif_id, target, prediction)``.
    frozen : sequence of nn.Module
        Modules kept in evaluation mode (their BatchNorm statistics fixed).

    Returns
    -------
    loss : float
        Mean loss per crystal.
    metric : float
        Mean absolute error in the target's units (accuracy for classification).
    rows : list of (str, float, float)
        Per crystal, in loader order (empty unless ``collect``); the prediction is the
        de-normalised output (the probability of class 1 for classification).
    """
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
            tl, te, _ = run_epoch(self.net, self.train_loader, self.normalizer, self.criterion, self.optimizer,
                               self.classification, frozen=self.frozen)
            vl, ve, _ = run_epoch(self.net, self.val_loader, self.normalizer, self.criterion, None, self.classification)
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
        As :func:`fit_network`; a dataset without targets or fewer than 2 training rows
        (naming its ``id_prop.csv``).
    """
    if not dataset.has_targets:
        raise InputError(f"{dataset.root / 'id_prop.csv'}: fine-tuning needs targets (cif_id,target rows)")
    if len(train_idx) < 2:
        raise InputError(f"{dataset.root / 'id_prop.csv'}: fine-tuning needs at least 2 training crystals, "
                         f"got {len(train_idx)}")
    net = copy.deepcopy(source.net)
    normalizer = Normalizer.from_targets(dataset.targets[train_idx], seed=fit.seed)
    frozen = freeze_layers(net, freeze_embedding, freeze_convs)
    fit_network(net, dataset, train_idx, val_idx, normalizer, fit, frozen=frozen)
    return dataclasses.replace(source, net=net, normalizer=normalizer)
