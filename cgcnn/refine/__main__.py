"""``python -m cgcnn.refine CIFPATH`` (console script ``cgcnn-refine``): κ_L at 300 K from phonons with a
universal interatomic potential and phono3py, one crystal at a time, into ``refined.csv``.

Needs the refine extra (``pip install .[refine]``); without it the command says so in one line.
"""

from __future__ import annotations

import argparse
import sys

from cgcnn import InputError
from cgcnn.cli import run_main
from cgcnn.refine.run import read_flagged, read_ids

_read_flagged, _read_ids = read_flagged, read_ids  # the names of earlier versions


def _triple(text: str) -> tuple[int, int, int]:
    parts = text.lower().replace(",", "x").split("x")
    if len(parts) == 1:
        parts = parts * 3
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != 3 or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give N or NxNxN with whole numbers ≥ 1")
    return values


def _cutoff(text: str) -> float | None:
    if text.lower() in ("none", "all"):
        return None
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r}: a distance in Å > 0, or 'none' for every pair")
    return value


def parser() -> argparse.ArgumentParser:
    """The command line of ``python -m cgcnn.refine``."""
    p = argparse.ArgumentParser(
        prog="python -m cgcnn.refine",
        description="κ_L from anharmonic lattice dynamics with a universal interatomic potential (SevenNet) "
                    "and phono3py, as the Matbench Discovery κ task: relax (FIRE, FrechetCellFilter, "
                    "FixSymmetry), fc2 and fc3 by finite displacements, refuse crystals with imaginary modes, "
                    "then the phonon BTE with isotope scattering.")
    p.add_argument("cifpath", help="a CIF, a folder of CIFs (a CGCNN data folder: id_prop.csv order) or an archive")
    p.add_argument("-o", "--output", default="refined.csv", help="results CSV (default: %(default)s)")
    p.add_argument("--ids", metavar="FILE", help="compute only the cif_id values listed in FILE (one a line, "
                                                 "or a CSV with a cif_id column)")
    p.add_argument("--flagged", metavar="RESULTS_CSV",
                   help="compute the crystals a transfer run's results.csv flags out of its applicability domain "
                        "(in_domain False), with those of --ids if given too")
    p.add_argument("--potential", default="7net-l3i5", choices=("7net-l3i5", "7net-0"),
                   help="SevenNet model shipped inside the sevenn wheel (default: %(default)s)")
    p.add_argument("--supercell", type=_triple, metavar="NxNxN",
                   help="fixed diagonal supercell of the primitive cell (default: from --min-height)")
    p.add_argument("--min-height", type=float, default=6.0, metavar="Å",
                   help="smallest supercell height across each axis when --supercell is not given "
                        "(default: %(default)s Å, 2x2x2 for Si, NaCl, PbTe)")
    p.add_argument("--cutoff", type=_cutoff, default=4.0, metavar="Å",
                   help="fc3 pair cut-off distance, or 'none' (default: %(default)s Å)")
    p.add_argument("--mesh", type=_triple, default=(11, 11, 11), metavar="NxNxN",
                   help="q-point mesh (default: 11x11x11)")
    p.add_argument("--temperature", type=float, default=300.0, metavar="K", help="default: %(default)s K")
    p.add_argument("--method", choices=("rta", "lbte"), default="rta",
                   help="relaxation-time approximation or the full linearised BTE (default: %(default)s)")
    p.add_argument("--no-isotopes", action="store_true", help="leave out isotope scattering")
    p.add_argument("--fmax", type=float, default=1e-4, metavar="eV/Å",
                   help="relaxation stops below this force (default: %(default)s, as Matbench)")
    p.add_argument("--max-steps", type=int, default=300, help="FIRE steps at most (default: %(default)s)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where the potential runs")
    p.add_argument("--threads", type=int, default=1, metavar="N",
                   help="threads per crystal (torch, BLAS, OpenMP; default: %(default)s). κ depends on it in the "
                        "last digits, so it is recorded; for many cores, --dask local runs a crystal per core")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run (its .parts folder)")
    p.add_argument("--on-error", choices=("stop", "skip"), default="stop",
                   help="a crystal that fails: stop, or record the reason and go on (default: %(default)s)")
    p.add_argument("--dask", metavar="ADDRESS", help="run the crystals on this dask.distributed scheduler")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the command (see :func:`parser`); returns the exit status."""
    args = parser().parse_args(argv)
    from cgcnn.refine.phonons import BTESettings, require
    from cgcnn.refine.run import read_crystals, refine

    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise InputError("--device cuda: no CUDA device is available to torch")
    settings = BTESettings(potential=args.potential, min_height=args.min_height, supercell=args.supercell,
                           cutoff=args.cutoff, mesh=args.mesh, temperature=args.temperature, method=args.method,
                           isotopes=not args.no_isotopes, fmax=args.fmax, max_steps=args.max_steps)
    only = None
    if args.flagged or args.ids:
        only = (read_flagged(args.flagged) if args.flagged else []) + (read_ids(args.ids) if args.ids else [])
        if not only:
            raise InputError(f"{args.flagged}: no crystal is flagged out of domain; nothing to refine")
    crystals = read_crystals(args.cifpath, only)
    for module in ("phono3py", "sevenn", "ase"):
        require(module)
    summary = refine(crystals, args.output, settings, device=args.device, resume=args.resume,
                     on_error=args.on_error, quiet=args.quiet, dask=args.dask, threads=args.threads)
    if not args.quiet:
        print(f"refine: {summary.with_value} of {summary.crystals} crystals with a BTE value, "
              f"{summary.without_value} without (reason in {args.output}); {summary.seconds:.0f} s",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
