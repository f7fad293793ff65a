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
see :mod:`cgcnn.model.checkpoint`.

The library functions take settings objects (:mod:`cgcnn.model.settings`); :func:`main`
maps the command line onto them.  The training loop itself is :mod:`cgcnn.model.fit`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from cgcnn import InputError, cli
from cgcnn.cli import add_compat_options, add_graph_options, add_loader_options, add_seed_option, run_main
from cgcnn.crystals import data_folder_inputs
from cgcnn.data import CIFData, GraphParams, collate_pool
from cgcnn.model import (
    CrystalGraphConvNet,
    FitSettings,
    ModelInfo,
    NetworkSettings,
    Normalizer,
    SourceModel,
    SplitSettings,
    TrainSettings,
    choose_atom_init,
    finetune,
    fit_network,
    freeze_layers,
    load_checkpoint,
    make_checkpoint,
    make_optimizer,
    normalizer_from_checkpoint,
    run_epoch,
    state_dict_mismatch,
)
from cgcnn.outputs import OutputSet, check_output_dir

#: The files a training run writes into its output folder.
OUTPUTS = ("checkpoint.pth.tar", "model_best.pth.tar", "test_results.csv")

__all__ = [
    "OUTPUTS", "TrainResult", "split_indices", "train", "build_parser", "settings_from_args", "main",
    # the settings and the training loop, defined in cgcnn.model.settings and cgcnn.model.fit
    "FitSettings", "NetworkSettings", "SplitSettings", "TrainSettings", "make_optimizer", "freeze_layers",
    "fit_network", "finetune",
]


# --------------------------------------------------------------------------------------------------
# a training run

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
        If a ratio lies outside 0 ... 1 or a size is negative, the sizes do not fit in ``n``
        or the training split is empty.
    """
    for name, value in (("train_ratio", train_ratio), ("val_ratio", val_ratio), ("test_ratio", test_ratio)):
        if value is not None and not 0 <= value <= 1:
            raise InputError(f"--{name.replace('_', '-')} must be between 0 and 1, not {value}")
    for name, value in (("train_size", train_size), ("val_size", val_size), ("test_size", test_size)):
        if value is not None and value < 0:
            raise InputError(f"--{name.replace('_', '-')} must not be negative, not {value}")
    if train_ratio is None:
        train_ratio = 1 - val_ratio - test_ratio
    n_train = train_size if train_size is not None else int(train_ratio * n)
    n_test = test_size if test_size is not None else int(test_ratio * n)
    n_val = val_size if val_size is not None else int(val_ratio * n)
    if n_train <= 0 or n_train + n_val + n_test > n:
        raise InputError(f"split of {n} crystals into {n_train} train, {n_val} validation, {n_test} test is impossible")
    perm = np.random.RandomState(seed).permutation(n)
    return perm[:n_train], perm[n_train:n_train + n_val], perm[n - n_test:] if n_test else perm[:0]



def _resume(settings: TrainSettings, net, optimizer, normalizer: Normalizer):
    """Load ``settings.resume`` into ``net``, ``optimizer`` and ``normalizer``; returns (epoch, best).

    Raises
    ------
    InputError
        A checkpoint that is unreadable, does not match the model, lacks the normalizer
        of a regression, or has nothing left to train.
    """
    ckpt = load_checkpoint(settings.resume)
    mismatch = state_dict_mismatch(net.state_dict(), ckpt["state_dict"])
    if mismatch:
        raise InputError(f"{settings.resume}: does not match this model ({mismatch}); give the options it was "
                         f"trained with ({_shape_options(ckpt)})")
    optim = (ckpt.get("args") or {}).get("optim")
    if isinstance(optim, str) and optim != settings.fit.optim:
        raise InputError(f"{settings.resume}: was trained with --optim {optim}, not {settings.fit.optim}; "
                         f"give --optim {optim} to resume")
    try:
        net.load_state_dict(ckpt["state_dict"])
        optimizer.load_state_dict(ckpt["optimizer"])
    except (RuntimeError, ValueError, KeyError, TypeError) as exc:
        cause = " ".join(str(exc).split()) or type(exc).__name__
        raise InputError(f"{settings.resume}: does not match this model ({cause})") from None
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


def _check_class_labels(dataset, id_prop: Path) -> None:
    """Refuse classification targets other than 0 and 1 (upstream's two classes), naming the first."""
    bad = ~np.isin(dataset.targets, (0.0, 1.0))
    if bad.any():
        row = int(np.argmax(bad))
        raise InputError(f"{id_prop}: --task classification needs targets 0 or 1; {dataset.ids[row]} has "
                         f"{dataset.targets[row]:g}")


def _shape_options(ckpt: dict) -> str:
    """The network-size options a checkpoint records, as ``--atom-fea-len 8 --n-conv 1 ...``."""
    args = ckpt.get("args") or {}
    names = ("atom_fea_len", "h_fea_len", "n_conv", "n_h", "task")
    given = [f"--{k.replace('_', '-')} {args[k]}" for k in names if k in args]
    return " ".join(given) if given else "its args are not recorded"


def train(settings: TrainSettings) -> TrainResult:
    """Train as upstream ``main.py``: split, normalizer, network, epochs, checkpoints, test.

    The three outputs in ``settings.out_dir`` are one :class:`cgcnn.outputs.files.OutputSet`:
    ``checkpoint.pth.tar`` is staged after every epoch and ``model_best.pth.tar`` after
    each better validation epoch (each staging atomic), then ``test_results.csv``
    (``cif_id,target,prediction``, test rows) of the best model; all are renamed over
    the earlier files together when the run ends.  A run that fails or is interrupted
    (Ctrl-C, SIGTERM) leaves every earlier output as it was and no temporary file.
    Outputs that are inputs (the data folder's ``id_prop.csv``, the ``pretrained``
    model, the ``atom_init`` file) are refused before any work; ``resume`` may name this
    run's own ``checkpoint.pth.tar`` (upstream's way to continue), which is read first.
    Progress lines go to stderr.

    Parameters
    ----------
    settings : TrainSettings

    Returns
    -------
    TrainResult

    Raises
    ------
    InputError
        Bad data folder, bad settings (:meth:`TrainSettings.check`), a bad
        ``resume``/``pretrained`` checkpoint, an unwritable output folder, an output that
        is an input, a diverged training.
    """
    t0 = time.time()
    settings.check()
    fit = settings.fit
    torch.manual_seed(fit.seed)
    out_dir = check_output_dir(settings.out_dir, OUTPUTS, must_exist=True)
    inputs = {"--pretrained": settings.pretrained, **data_folder_inputs(settings.data, settings.atom_init)}
    outs = OutputSet({name: out_dir / name for name in OUTPUTS}, inputs=inputs)  # id_prop.csv, CIFs, atom tables
    if settings.start_epoch >= fit.epochs and not settings.resume:
        raise InputError(f"--start-epoch {settings.start_epoch} leaves no epoch below --epochs {fit.epochs}")
    classification = settings.classification
    # on the CPU, where the training loop keeps its tensors
    pretrained = SourceModel.load(settings.pretrained, device="cpu") if settings.pretrained else None
    params = pretrained.params if pretrained else settings.graph
    atom_init = choose_atom_init(settings.data, settings.atom_init, pretrained.atom_init if pretrained else None)
    dataset = CIFData(settings.data, params=params, atom_init=atom_init, cache_dir=settings.cache_dir,
                      cache_bytes=2**31)
    if not dataset.has_targets:
        raise InputError(f"{Path(settings.data) / 'id_prop.csv'}: training needs targets (cif_id,target rows)")
    if pretrained:
        pretrained.check_data(dataset)
    if classification:
        _check_class_labels(dataset, Path(settings.data) / "id_prop.csv")
    split = settings.split
    id_prop = Path(settings.data) / "id_prop.csv"
    try:
        train_idx, val_idx, test_idx = split_indices(
            len(dataset), fit.seed, split.train_ratio, split.val_ratio, split.test_ratio,
            split.train_size, split.val_size, split.test_size)
    except InputError as exc:
        raise InputError(f"{id_prop}: {exc}") from None
    if not classification and len(train_idx) < 2:
        raise InputError(f"{id_prop}: {len(dataset)} crystal(s) leave {len(train_idx)} for training; the target "
                         "normalizer needs at least 2 (add crystals, or lower --val-ratio/--test-ratio)")

    normalizer = Normalizer.from_targets(dataset.targets[train_idx], seed=fit.seed)
    if classification:
        normalizer = Normalizer(torch.tensor([0.0, 1.0]))

    if pretrained:
        net = pretrained.net
    else:
        n = settings.network
        net = CrystalGraphConvNet(dataset.orig_atom_fea_len, params.nbr_fea_len, atom_fea_len=n.atom_fea_len,
                                  n_conv=n.n_conv, h_fea_len=n.h_fea_len, n_h=n.n_h, classification=classification)
    if settings.freeze_convs > len(net.convs):
        raise InputError(f"--freeze-convs {settings.freeze_convs}: the network has only {len(net.convs)} "
                         "convolution(s)")
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
    checkpoint_path, best_path, results_path = (out_dir / name for name in OUTPUTS)

    def save(epoch, net, optimizer, best, is_best):
        last.update(epoch=epoch, best=best)
        ckpt = make_checkpoint(net, optimizer, normalizer, epoch=epoch + 1, best=best, args=args, info=info)
        outs.save(checkpoint_path, ckpt)
        if is_best:
            outs.save(best_path, ckpt)

    test_metric = None
    with outs:
        fit_network(net, dataset, train_idx, val_idx, normalizer, fit, classification=classification, frozen=frozen,
                    optimizer=optimizer, start_epoch=start_epoch, best=best, on_epoch=save, t0=t0)
        best_file = outs.current(best_path)  # this run's best, else (resumed, no better epoch) the earlier one
        if len(test_idx) and best_file is not None:
            test_loader = DataLoader(Subset(dataset, test_idx), batch_size=fit.batch_size, shuffle=False,
                                     num_workers=fit.workers, collate_fn=collate_pool)
            criterion = nn.NLLLoss() if classification else nn.MSELoss()
            net.load_state_dict(load_checkpoint(best_file)["state_dict"])
            _, test_metric, rows = run_epoch(net, test_loader, normalizer, criterion, None, classification,
                                             collect=True)
            outs.write_csv(results_path, pd.DataFrame(rows, columns=["cif_id", "target", "prediction"]),
                           float_format=None)
            metric_name = "accuracy" if classification else "MAE"
            print(f"test {metric_name} of the best model: {test_metric:.4f} on {len(test_idx)} crystals "
                  f"({results_path})", file=sys.stderr)
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
    add_seed_option(p, help="seed of split, normalizer sample and initialisation")
    p.add_argument("--out-dir", default=".", help="folder for checkpoint.pth.tar, model_best.pth.tar, test_results.csv")
    p.add_argument("--target-name", default="target", help="name of the target stored in the checkpoint")
    p.add_argument("--target-transform", default="none", help="transform of the target, e.g. log10")
    p.add_argument("--target-unit", default="", help="unit of the untransformed target, e.g. 'W m-1 K-1'")
    p.add_argument("--pretrained", default=None, help="start from this checkpoint (staged fine-tuning)")
    p.add_argument("--freeze-embedding", action="store_true", help="keep the embedding layer fixed")
    p.add_argument("--freeze-convs", default=0, type=int, metavar="K", help="keep the first K convolutions fixed")
    p.add_argument("--patience", default=0, type=int,
                   help="stop after this many epochs without a better validation (0: never)")
    return cli.document_ranges(p)


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
    cli.check_options(args)  # every numeric option in its range, before any work
    settings = settings_from_args(args)
    settings.check()  # before anything else; train() checks again for library callers
    torch.set_num_threads(max(1, min(torch.get_num_threads(), os.cpu_count() or 1)))
    train(settings)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
