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
parameters (``graph``) and the target's name, transform and unit (``target``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from cgcnn import InputError
from cgcnn.checkpoint import Normalizer, SourceModel, check_output, load_checkpoint, save_atomic, save_csv
from cgcnn.cli import check_counts, run_main
from cgcnn.data import CIFData, GraphParams, collate_pool
from cgcnn.model import CrystalGraphConvNet

__all__ = ["split_indices", "make_optimizer", "fit_network", "train", "main"]


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


def _freeze(modules) -> None:
    for module in modules:
        for p in module.parameters():
            p.requires_grad_(False)


def make_optimizer(net: nn.Module, optim: str = "SGD", lr: float = 0.01, momentum: float = 0.9,
                   weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """An optimizer of the parameters of ``net`` that require gradients.

    ``optim`` is ``"SGD"`` (with ``momentum``) or ``"Adam"``, as upstream ``main.py``.
    """
    trainable = [p for p in net.parameters() if p.requires_grad]
    if optim == "SGD":
        return torch.optim.SGD(trainable, lr, momentum=momentum, weight_decay=weight_decay)
    if optim == "Adam":
        return torch.optim.Adam(trainable, lr, weight_decay=weight_decay)
    raise InputError(f"unknown optimizer {optim!r}; choose SGD or Adam")


def fit_network(net: CrystalGraphConvNet, dataset, train_idx, val_idx, normalizer: Normalizer, epochs: int,
                lr: float = 0.01, optim: str = "SGD", batch_size: int = 256, patience: int = 0, frozen=(),
                seed: int = 0, *, momentum: float = 0.9, weight_decay: float = 0.0, lr_milestones=(100,),
                workers: int = 0, classification: bool = False, optimizer=None, start_epoch: int = 0,
                best: float | None = None, on_epoch=None, print_freq: int = 0,
                t0: float | None = None) -> CrystalGraphConvNet:
    """Train ``net`` on rows ``train_idx`` of ``dataset``, choosing on the MAE of rows ``val_idx``.

    The training loop of upstream CGCNN ``main.py`` (T. Xie, J. C. Grossman, PRL 120,
    145301 (2018)): MSE on normalised targets (NLL for classification), ``MultiStepLR``
    dropping the rate tenfold at ``lr_milestones``, shuffled batches drawn with a
    generator seeded by ``seed``; with ``patience``, the early stop of ParAIsite
    (L. Klochko et al., arXiv:2411.18259).

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
    epochs : int
        Last epoch (counted from 0, so ``epochs - start_epoch`` are run).
    lr, optim, momentum, weight_decay
        The optimizer of the trainable parameters, as :func:`make_optimizer`;
        ignored when ``optimizer`` is given.
    batch_size, workers : int
        DataLoader settings.
    patience : int
        Stop after this many epochs without a better validation metric (0: never).
    frozen : sequence of nn.Module
        Modules whose parameters stay fixed and which stay in evaluation mode.
    seed : int
        Seed of the batch shuffling.
    optimizer : torch.optim.Optimizer, optional
        An optimizer already built (e.g. with a resumed state).
    start_epoch : int
        First epoch (a resumed run).
    best : float, optional
        Best validation metric so far (a resumed run).
    on_epoch : callable, optional
        Called as ``on_epoch(epoch, net, optimizer, best, is_best)`` after each epoch,
        e.g. to save checkpoints.
    print_freq : int
        Epochs between progress lines on stderr (0: none).
    t0 : float, optional
        ``time.time()`` the progress lines count from (default: the call).

    Returns
    -------
    CrystalGraphConvNet
        ``net``, holding the weights of its best validation epoch of this call (the
        last weights when none improved on ``best``).

    Raises
    ------
    InputError
        If the validation error becomes NaN (training diverged).
    """
    t0 = time.time() if t0 is None else t0
    _freeze(frozen)
    if optimizer is None:
        optimizer = make_optimizer(net, optim, lr, momentum, weight_decay)
    if best is None:
        best = -np.inf if classification else np.inf
    criterion = nn.NLLLoss() if classification else nn.MSELoss()
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(lr_milestones), gamma=0.1,
                                                     last_epoch=start_epoch - 1 if start_epoch else -1)
    gen = torch.Generator().manual_seed(seed)
    loader = lambda idx, shuffle: DataLoader(  # noqa: E731
        Subset(dataset, idx), batch_size=batch_size, shuffle=shuffle, num_workers=workers,
        collate_fn=collate_pool, generator=gen if shuffle else None)
    train_loader, val_loader = loader(train_idx, True), loader(val_idx if len(val_idx) else train_idx, False)
    metric_name = "accuracy" if classification else "MAE"
    # With several threads the backward of the neighbour gather accumulates in a
    # varying order; deterministic algorithms make the same seed give the same model.
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        best, best_state = _run_epochs(
            net, train_loader, val_loader, normalizer, criterion, optimizer, scheduler, classification, frozen,
            start_epoch, epochs, best, patience, on_epoch, print_freq, t0, metric_name)
    finally:
        torch.use_deterministic_algorithms(was_deterministic)
    if best_state is not None:
        net.load_state_dict(best_state)
    net.eval()
    return net


def _run_epochs(net, train_loader, val_loader, normalizer, criterion, optimizer, scheduler, classification, frozen,
                start_epoch, epochs, best, patience, on_epoch, print_freq, t0, metric_name):
    """The epoch loop of :func:`fit_network`; returns the best metric and its weights."""
    since_best = 0
    best_state = None
    for epoch in range(start_epoch, epochs):
        tl, te, _ = _epoch(net, train_loader, normalizer, criterion, optimizer, classification, frozen=frozen)
        vl, ve, _ = _epoch(net, val_loader, normalizer, criterion, None, classification)
        if ve != ve:
            raise InputError("validation error is NaN: training diverged (try a smaller --lr)")
        scheduler.step()
        is_best = ve > best if classification else ve < best
        if is_best:
            best, since_best = ve, 0
            best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
        else:
            since_best += 1
        if on_epoch is not None:
            on_epoch(epoch, net, optimizer, best, is_best)
        if print_freq and ((epoch + 1) % print_freq == 0 or is_best or epoch + 1 == epochs):
            print(f"epoch {epoch + 1:4d}/{epochs}  train loss {tl:.4f} {metric_name} {te:.4f}  "
                  f"val loss {vl:.4f} {metric_name} {ve:.4f}{' *' if is_best else '  '}  {time.time() - t0:7.1f} s",
                  file=sys.stderr, flush=True)
        if patience and since_best >= patience:
            if print_freq:
                print(f"early stop: validation {metric_name} has not improved for {patience} epochs",
                      file=sys.stderr)
            break
    return best, best_state


def train(args: argparse.Namespace) -> dict:
    """Train as upstream ``main.py`` with the options of :func:`build_parser`.

    Returns
    -------
    dict
        ``best_val`` (validation MAE, or accuracy for classification), ``test``
        (the test metric of the best model, or None), ``epochs`` run, ``seconds``.

    Raises
    ------
    InputError
        Bad data folder, bad options, a bad ``--resume``/``--pretrained`` checkpoint.
    """
    t0 = time.time()
    torch.manual_seed(args.seed)
    out_dir = Path(args.out_dir)
    if not out_dir.is_dir():
        raise InputError(f"{out_dir}: output folder does not exist")
    check_output(out_dir / "checkpoint.pth.tar")
    classification = args.task == "classification"
    pretrained = SourceModel.load(args.pretrained) if args.pretrained else None
    params = pretrained.params if pretrained else GraphParams(args.radius, args.max_num_nbr, 0.0, args.step)
    atom_init = args.atom_init
    if pretrained and atom_init is None and not (Path(args.data) / "atom_init.json").exists():
        atom_init = pretrained.atom_init  # a folder without atom_init.json: the pretrained model's table
    dataset = CIFData(args.data, params=params, atom_init=atom_init, cache_dir=args.cache_dir, cache_bytes=2**31)
    if not dataset.has_targets:
        raise InputError(f"{Path(args.data) / 'id_prop.csv'}: training needs targets (cif_id,target rows)")
    if pretrained:
        pretrained.check_data(dataset)
    train_idx, val_idx, test_idx = split_indices(
        len(dataset), args.seed, args.train_ratio, args.val_ratio, args.test_ratio,
        args.train_size, args.val_size, args.test_size)

    # Normalizer from (at most 500 of) the training targets, as upstream.
    rng = np.random.RandomState(args.seed)
    sample = train_idx if len(train_idx) <= 500 else rng.choice(train_idx, 500, replace=False)
    normalizer = Normalizer(torch.tensor(dataset.targets[sample], dtype=torch.float32))
    if classification:
        normalizer = Normalizer(torch.tensor([0.0, 1.0]))

    if pretrained:
        net = pretrained.net
    else:
        net = CrystalGraphConvNet(dataset.orig_atom_fea_len, params.nbr_fea_len, atom_fea_len=args.atom_fea_len,
                                  n_conv=args.n_conv, h_fea_len=args.h_fea_len, n_h=args.n_h,
                                  classification=classification)
    frozen = []
    if args.freeze_embedding:
        frozen.append(net.embedding)
    frozen.extend(net.convs[: args.freeze_convs])
    _freeze(frozen)
    optimizer = make_optimizer(net, args.optim, args.lr, args.momentum, args.weight_decay)
    trainable = [p for p in net.parameters() if p.requires_grad]
    criterion = nn.NLLLoss() if classification else nn.MSELoss()

    start_epoch = 0
    best = -np.inf if classification else np.inf
    if args.resume:
        ckpt = load_checkpoint(args.resume)
        try:
            net.load_state_dict(ckpt["state_dict"])
            optimizer.load_state_dict(ckpt["optimizer"])
        except (RuntimeError, ValueError, KeyError) as exc:
            raise InputError(f"{args.resume}: does not match this model ({str(exc).splitlines()[0]})") from None
        normalizer.load_state_dict(ckpt["normalizer"])
        start_epoch = int(ckpt["epoch"])
        best = float(ckpt["best_mae_error"])
        print(f"resumed from {args.resume} at epoch {start_epoch}", file=sys.stderr)

    test_loader = (DataLoader(Subset(dataset, test_idx), batch_size=args.batch_size, shuffle=False,
                              num_workers=args.workers, collate_fn=collate_pool) if len(test_idx) else None)
    print(f"{len(dataset)} crystals: {len(train_idx)} train, {len(val_idx)} validation, {len(test_idx)} test; "
          f"{sum(p.numel() for p in trainable)} trainable parameters", file=sys.stderr)

    # Paths are stored by name only: a checkpoint carries no folder of the machine it was trained on.
    path_options = ("data", "out_dir", "cache_dir", "resume", "pretrained", "atom_init")
    settings = {k: (Path(v).name if k in path_options and v else v) for k, v in vars(args).items()}
    settings["data_options"] = [settings["data"]]
    settings["graph"] = params.as_dict()
    target = {"name": args.target_name, "transform": args.target_transform, "unit": args.target_unit}
    if pretrained and pretrained.target and args.target_name == "target":
        target = dict(pretrained.target)  # fine-tuning on the same quantity unless told otherwise
    atom_table = {str(z): v.tolist() for z, v in sorted(dataset.atom_init.items())}
    metric_name = "accuracy" if classification else "MAE"
    last = {"epoch": start_epoch, "best": best}

    def save(epoch, net, optimizer, best, is_best):
        last.update(epoch=epoch, best=best)
        state = {
            "epoch": epoch + 1, "state_dict": net.state_dict(), "best_mae_error": float(best),
            "optimizer": optimizer.state_dict(), "normalizer": normalizer.state_dict(), "args": settings,
            "atom_init": atom_table, "graph": params.as_dict(), "target": target,
        }
        save_atomic(state, out_dir / "checkpoint.pth.tar")
        if is_best:
            save_atomic(state, out_dir / "model_best.pth.tar")

    fit_network(net, dataset, train_idx, val_idx, normalizer, args.epochs, batch_size=args.batch_size,
                patience=args.patience, seed=args.seed, optimizer=optimizer, lr_milestones=args.lr_milestones,
                workers=args.workers, classification=classification, frozen=frozen, start_epoch=start_epoch,
                best=best, on_epoch=save, print_freq=max(args.print_freq, 1), t0=t0)
    best = last["best"]
    epoch = last["epoch"]

    test_metric = None
    best_path = out_dir / "model_best.pth.tar"
    if test_loader is not None and best_path.exists():
        net.load_state_dict(load_checkpoint(best_path)["state_dict"])
        _, test_metric, rows = _epoch(net, test_loader, normalizer, criterion, None, classification, collect=True)
        save_csv(pd.DataFrame(rows, columns=["cif_id", "target", "prediction"]), out_dir / "test_results.csv",
                 float_format=None)
        print(f"test {metric_name} of the best model: {test_metric:.4f} on {len(test_idx)} crystals "
              f"({out_dir / 'test_results.csv'})", file=sys.stderr)
    return {"best_val": best, "test": test_metric, "epochs": epoch + 1, "seconds": time.time() - t0}


def build_parser() -> argparse.ArgumentParser:
    """Options of upstream CGCNN ``main.py`` (same names and defaults) plus the project's."""
    p = argparse.ArgumentParser(prog="python -m cgcnn.train", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("data", metavar="DATA", help="CGCNN data folder (id_prop.csv, CIFs, atom_init.json)")
    p.add_argument("--task", choices=["regression", "classification"], default="regression")
    p.add_argument("--disable-cuda", action="store_true", help="accepted for compatibility; training runs on the CPU")
    p.add_argument("-j", "--workers", default=0, type=int, help="data loading workers")
    p.add_argument("--epochs", default=30, type=int)
    p.add_argument("--start-epoch", default=0, type=int, help="accepted for compatibility (resume sets it)")
    p.add_argument("-b", "--batch-size", default=256, type=int)
    p.add_argument("--lr", "--learning-rate", default=0.01, type=float)
    p.add_argument("--lr-milestones", default=[100], nargs="+", type=int, help="epochs where lr drops by 10")
    p.add_argument("--momentum", default=0.9, type=float)
    p.add_argument("--weight-decay", "--wd", default=0.0, type=float)
    p.add_argument("-p", "--print-freq", default=10, type=int, help="epochs between progress lines")
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
    p.add_argument("--atom-init", default=None, help="atom_init.json (default DATA/atom_init.json)")
    p.add_argument("--seed", default=0, type=int, help="seed of split, normalizer sample and initialisation")
    p.add_argument("--out-dir", default=".", help="folder for checkpoint.pth.tar, model_best.pth.tar, test_results.csv")
    p.add_argument("--cache-dir", default=None, help="folder for crystal graphs cached across runs")
    p.add_argument("--target-name", default="target", help="name of the target stored in the checkpoint")
    p.add_argument("--target-transform", default="none", help="transform of the target, e.g. log10")
    p.add_argument("--target-unit", default="", help="unit of the untransformed target, e.g. 'W m-1 K-1'")
    p.add_argument("--pretrained", default=None, help="start from this checkpoint (staged fine-tuning)")
    p.add_argument("--freeze-embedding", action="store_true", help="keep the embedding layer fixed")
    p.add_argument("--freeze-convs", default=0, type=int, metavar="K", help="keep the first K convolutions fixed")
    p.add_argument("--patience", default=0, type=int, help="stop after this many epochs without a better validation (0: never)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    check_counts(args, at_least_one=("batch_size", "epochs"))
    torch.set_num_threads(max(1, min(torch.get_num_threads(), os.cpu_count() or 1)))
    result = train(args)
    return 0 if result else 1


if __name__ == "__main__":
    sys.exit(run_main(main))
