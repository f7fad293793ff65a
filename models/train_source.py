"""Build the AFLOW-AGL training folder and train the bundled source model.

    python models/train_source.py                      # build + train + export models/source.pth.tar
    python models/train_source.py --build-only         # only write the CGCNN folder

The script imports the installed package (``pip install -e .`` in the repository);
without installing, run it as ``python -m models.train_source`` from the repository's root.

The training set is ``../shared/data/aflow_agl_300K`` (3,330 AFLOW structures with
AGL κ at 300 K; C. Toher et al., PRB 90, 174107 (2014)).  The folder written to
``--work`` holds ``id_prop.csv`` (``cif_id, log10 κ`` in W m⁻¹ K⁻¹, or another
AEL-AGL property with ``--property``), symbolic links to the CIFs, and the project's
``cgcnn/data/atom_init.json``.  Training runs ``python -m cgcnn.train`` with the
hyper-parameters of the model card (models/README.md) and a fixed seed; the best
model by validation MAE is exported.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

try:
    from cgcnn import InputError
except ModuleNotFoundError:  # not installed, and not run from the repository's root
    sys.exit("the cgcnn package is not importable: pip install -e . in the repository, "
             "or run python -m models.train_source from its root")
import torch

from cgcnn import train as cgcnn_train
from cgcnn.cli import run_main
from cgcnn.data import write_data_folder

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "aflow_agl_300K"

# property -> (column of kappa.csv, target name, unit)
PROPERTIES = {
    "kappa": ("kappa_300K_W_mK", "log10 kappa_L", "W m-1 K-1"),
    "shear": ("shear_modulus_vrh_GPa", "log10 G_VRH", "GPa"),
    "bulk": ("bulk_modulus_vrh_GPa", "log10 K_VRH", "GPa"),
    "debye": ("debye_temperature_K", "log10 theta_D", "K"),
    "expansion": ("thermal_expansion_300K_per_K", "log10 alpha_300K", "K-1"),
}

# The bundled model's hyper-parameters (see models/README.md for how they were chosen).
TRAIN_OPTIONS = ["--n-conv", "4", "--h-fea-len", "16", "--atom-fea-len", "64", "--optim", "Adam",
                 "--lr", "0.01", "--epochs", "200", "--lr-milestones", "100", "-b", "200", "--seed", "0",
                 "--print-freq", "10"]


def build_folder(source: Path, work: Path, prop: str = "kappa", rows=None) -> Path:
    """Write the CGCNN folder of ``prop`` (log10 of its ``kappa.csv`` column) and return it.

    ``source`` holds ``kappa.csv`` (an ``id`` column and the property's) and ``cif/``;
    ``rows``, if given, are the row positions of ``kappa.csv`` to keep, in that order.
    See :func:`cgcnn.outputs.files.write_data_folder`.

    Raises
    ------
    InputError
        If ``source`` lacks ``kappa.csv`` or a CIF.
    """
    table = source / "kappa.csv"
    if not table.is_file():
        raise InputError(f"{table}: not found (the AFLOW-AGL set lives in ../shared/data/aflow_agl_300K)")
    return write_data_folder(table, source / "cif", work, column=PROPERTIES[prop][0], transform="log10", rows=rows)


def main(argv=None) -> int:
    """Build the folder of ``--property``, train it with the model card's options (cgcnn.train)
    and copy the best model to ``--export``; 0 on success (faults raise InputError)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--source", default=str(SHARED), help="the AFLOW-AGL folder (kappa.csv, cif/)")
    p.add_argument("--property", default="kappa", choices=sorted(PROPERTIES))
    p.add_argument("--work", default=str(ROOT / "runs"), help="folder for the training folder and run outputs")
    p.add_argument("--build-only", action="store_true")
    p.add_argument("--export", default=str(ROOT / "models" / "source.pth.tar"),
                   help="where to copy the best model ('' to skip)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the initial weights and batches (the card's models: 0); another seed trains into "
                        "train_PROPERTY_seedN")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads; 1 (the default) reproduces the bundled model bit for bit")
    p.add_argument("extra", nargs=argparse.REMAINDER, help="options after -- go to cgcnn.train, overriding the card's")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    work = Path(args.work)
    data = build_folder(Path(args.source), work / f"aflow_agl_300K_{args.property}", args.property)
    print(f"training folder: {data}", file=sys.stderr)
    if args.build_only:
        return 0
    extra = [a for a in args.extra if a != "--"]
    out = work / (f"train_{args.property}" + (f"_seed{args.seed}" if args.seed else ""))
    for i, option in enumerate(extra[:-1]):  # an --out-dir given after --: the export copies from there
        if option == "--out-dir":
            out = Path(extra[i + 1])
    out.mkdir(parents=True, exist_ok=True)
    _, name, unit = PROPERTIES[args.property]
    options = list(TRAIN_OPTIONS)
    options[options.index("--seed") + 1] = str(args.seed)
    opts = [str(data), *options, "--out-dir", str(out), "--cache-dir", str(work / "graph_cache"),
            "--target-name", name, "--target-transform", "log10", "--target-unit", unit, *extra]
    code = cgcnn_train.main(opts)
    if code == 0 and args.export:
        Path(args.export).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(out / "model_best.pth.tar", args.export)
        print(f"exported {out / 'model_best.pth.tar'} to {args.export}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(run_main(main))
