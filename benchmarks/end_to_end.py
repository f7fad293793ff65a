"""Time this project's commands against the original tool and cgcnn2, side by side, in one run.

    python benchmarks/end_to_end.py [FOLDER] [--model PATH] [--atom-init PATH] [--fit-folder DIR]
                                    [--original DIR] [--cgcnn2 CMD] [--repeat N] [-j N]

FOLDER is a CGCNN data folder (``id_prop.csv`` with targets, the CIFs, ``atom_init.json``);
by default the 3,330 AFLOW-AGL structures of ../shared/data/aflow_agl_300K are made into one
in a temporary directory, with ``--atom-init`` (default: the package's table) as its
``atom_init.json``.  Every timed command runs in a fresh process, one after the other on
the same CPUs; wall time is measured from outside (interpreter start-up and imports
included); CPU time (user + system, all processes) and peak memory (the largest resident set
size among the process and the children it waited for) come from ``os.wait4``, in s and MB.
CPU time is the steadier figure on a shared machine; wall time is what a user waits.  With
``--repeat N`` each timed command runs N times, round-robin, and the median is printed (the
machine may be shared: say so).

Timed, with the same model and folder:

- ``transfer_learning_kappa.py --train 0`` of this project (after an untimed ``--train 1`` on FOLDER
  or ``--fit-folder``; with
  ``--original``, the original's route, where the tool has that option), without a graph cache,
  then filling an on-disk cache and reusing it (once each);
- ``python -m cgcnn.predict`` of this project;
- with ``--original DIR``, the original transfer tool of T. Zhu, S. Gong et al. (Energy
  Environ. Sci. 14, 3559 (2021); a checkout of github.com/shenggong1996/Transfer-learning-CGCNN:
  ``transfer_learning_kappa.py`` and its ``cgcnn`` package, or the ``cgcnn_transfer_kappa.tar``
  it ships the package in), ``--train 0`` after an untimed ``--train 1``, with its defaults
  (``-b 500 -j 0``).  It runs from a temporary copy with the two changes today's Python and
  torch need, and nothing else: ``.cuda(async=True)`` (a SyntaxError since Python 3.7) becomes
  ``.cuda(non_blocking=True)``, and ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` in its environment
  lets torch >= 2.6 load its checkpoint as older torch did;
- with ``--cgcnn2 CMD`` (``cgcnn-pr`` of cgcnn2, e.g. from a virtual environment of its own;
  default: ``cgcnn-pr`` when on PATH), ``cgcnn-pr -mp MODEL -as FOLDER`` (its defaults: batch
  256, ``-j 0``; it also draws its parity plot).

Then the ratios: the original's ``--train 0`` over this project's, ``cgcnn-pr`` over
``python -m cgcnn.predict``; and how far the source model's predictions of the tools are apart.
This project's commands get ``-j N`` (default: all cores, :func:`cgcnn.available_cores`).

Example (the figures of issue 17)::

    python benchmarks/end_to_end.py --model ../shared/models/cgcnn_original/gong2021_source.pth.tar \\
        --atom-init ../shared/models/cgcnn_original/atom_init.json \\
        --original path/to/Transfer-learning-CGCNN --cgcnn2 path/to/cgcnn2-venv/bin/cgcnn-pr --repeat 3
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / "transfer_learning_kappa.py"
AFLOW = ROOT.parent / "shared" / "data" / "aflow_agl_300K"
sys.path.insert(0, str(ROOT))  # the package, also when it is not installed

from cgcnn import available_cores  # noqa: E402


def run(cmd: list[str], cwd: Path, env: dict | None = None, log: Path | None = None) -> dict:
    """Run ``cmd`` in a fresh process; return wall time (s), CPU time (user + system, s) and peak RSS (MB)
    of it and the children it waited for.

    Exits with the command's output if it fails.
    """
    cwd.mkdir(parents=True, exist_ok=True)
    log = log or cwd / "log.txt"
    with open(log, "w") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}): {' '.join(map(str, cmd))}\n{log.read_text()[-3000:]}")
    return {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "peak_mb": usage.ru_maxrss / 1024}


def our_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def foreign_env(**extra: str) -> dict:
    """The environment of another tool: without this project on PYTHONPATH (both have a ``cgcnn`` package)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(extra)
    return env


def patched_original(checkout: Path, into: Path) -> Path:
    """A copy of the original tool in ``into`` that runs on today's Python and torch.

    The one source change: ``async=True`` (a keyword since Python 3.7) becomes ``non_blocking=True``
    (torch's name for it since 0.4).  Its checkpoint loading needs ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1``
    in the environment (:func:`foreign_env`), not a change of source.
    """
    script = checkout / "transfer_learning_kappa.py"
    if not script.is_file():
        sys.exit(f"{checkout}: no transfer_learning_kappa.py (a checkout of the original tool is needed)")
    into.mkdir(parents=True)
    if (checkout / "cgcnn").is_dir():
        shutil.copytree(checkout / "cgcnn", into / "cgcnn", ignore=shutil.ignore_patterns("__pycache__"))
    elif (checkout / "cgcnn_transfer_kappa.tar").is_file():
        with tarfile.open(checkout / "cgcnn_transfer_kappa.tar") as tar:
            members = [m for m in tar.getmembers() if m.name.startswith("cgcnn/") and "__pycache__" not in m.name
                       and (m.isfile() or m.isdir())]
            tar.extractall(into, members=members)
    else:
        sys.exit(f"{checkout}: neither a cgcnn folder nor cgcnn_transfer_kappa.tar")
    for path in [script, *sorted((into / "cgcnn").glob("*.py"))]:
        text = path.read_text()
        (into / path.name if path == script else path).write_text(re.sub(r"\basync=True", "non_blocking=True", text))
    return into / script.name


def count_rows(folder: Path) -> int:
    if (folder / "id_prop.csv").exists():
        return sum(1 for line in (folder / "id_prop.csv").read_text().splitlines() if line.strip())
    return len(list(folder.glob("*.cif")))


def read_predictions(path: Path, header: bool) -> dict[str, float]:
    """cif_id → source-model prediction of a CSV (last column)."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return {r[0]: float(r[-1]) for r in rows[1 if header else 0:] if r}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folder", nargs="?", help="CGCNN data folder with targets (default: the AFLOW-AGL set)")
    p.add_argument("--model", default=str(ROOT / "models" / "source.pth.tar"), help="source model checkpoint")
    p.add_argument("--atom-init", default=str(ROOT / "cgcnn" / "data" / "atom_init.json"),
                   help="atom_init.json of the default folder (the model's table)")
    p.add_argument("--original", metavar="DIR", help="checkout of the original transfer tool (Zhu, Gong et al. 2021)")
    p.add_argument("--cgcnn2", metavar="CMD", default=shutil.which("cgcnn-pr"),
                   help="cgcnn2's cgcnn-pr command (default: cgcnn-pr on PATH, if any)")
    p.add_argument("--fit-folder", metavar="DIR",
                   help="folder this project's untimed --train 1 fits on (default: FOLDER; another one where the "
                        "tool refuses FOLDER's targets)")
    p.add_argument("--repeat", type=int, default=1, metavar="N", help="runs of each timed command (median shown)")
    p.add_argument("-j", "--workers", type=int, default=available_cores(), metavar="N",
                   help="-j of this project's commands (default: all cores, %(default)s here)")
    args = p.parse_args()
    model = str(Path(args.model).resolve())
    with tempfile.TemporaryDirectory(prefix="end_to_end.") as tmp:
        tmp = Path(tmp)
        if args.folder:
            folder = Path(args.folder).resolve()
        else:
            if not (AFLOW / "kappa.csv").is_file():
                sys.exit("no FOLDER given and ../shared/data/aflow_agl_300K is absent")
            from cgcnn.data import write_data_folder

            folder = write_data_folder(AFLOW / "kappa.csv", AFLOW / "cif", tmp / "aflow", column="kappa_300K_W_mK",
                                       atom_init=args.atom_init)
        n = count_rows(folder)
        j = ["-j", str(args.workers)]

        # untimed set-up: the last layers each --train 0 reads; this project's on the original's route
        # (crys_fea alone, the linear MLP) where the tool has that option
        ours = tmp / "ours"
        usage = subprocess.run([sys.executable, str(TOOL), "--help"], env=our_env(), capture_output=True, text=True)
        route = ["--original"] if "--original" in usage.stdout else []
        fit = str(Path(args.fit_folder).resolve()) if args.fit_folder else str(folder)
        run([sys.executable, str(TOOL), "--train", "1", model, fit, "-q", *route, *j], ours, our_env())
        timed: dict[str, tuple[list[str], Path, dict]] = {
            "kappa --train 0 (this project)": (
                [sys.executable, str(TOOL), "--train", "0", model, str(folder), "-q", *route, *j], ours, our_env()),
            "cgcnn.predict (this project)": (
                [sys.executable, "-m", "cgcnn.predict", model, str(folder), "-q", *j, "--out", "predict.csv"],
                tmp / "predict", our_env()),
        }
        if args.original:
            script = patched_original(Path(args.original).resolve(), tmp / "original_tool")
            orig_env = foreign_env(TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD="1")
            run([sys.executable, str(script), "--train", "1", model, str(folder)], tmp / "original", orig_env)
            timed["original --train 0"] = (
                [sys.executable, str(script), "--train", "0", model, str(folder)], tmp / "original", orig_env)
        if args.cgcnn2:
            timed["cgcnn2 cgcnn-pr"] = ([args.cgcnn2, "-mp", model, "-as", str(folder), "-ji", "bench"],
                                        tmp / "cgcnn2", foreign_env())
        results: dict[str, list[dict]] = {name: [] for name in timed}
        for _ in range(args.repeat):  # round-robin, so that a busy spell does not fall on one tool only
            for name, (cmd, cwd, env) in timed.items():
                results[name].append(run(cmd, cwd, env))
        cache = ["--cache-dir", str(tmp / "graphs")]
        kappa = timed["kappa --train 0 (this project)"][0]
        results["kappa --train 0, filling cache"] = [run(kappa + cache, ours, our_env())]
        results["kappa --train 0, cached graphs"] = [run(kappa + cache, ours, our_env())]

        agree = {}
        ours_pred = read_predictions(tmp / "predict" / "predict.csv", header=True)
        if args.original:
            agree["original"] = read_predictions(tmp / "original" / "test_results.csv", header=False)
        if args.cgcnn2:
            agree["cgcnn2"] = read_predictions(tmp / "cgcnn2" / "output_bench" / "results.csv", header=True)

    med = {name: (statistics.median(r["wall"] for r in rs), statistics.median(r["peak_mb"] for r in rs), len(rs),
                  statistics.median(r["cpu"] for r in rs))
           for name, rs in results.items()}
    print(f"{n} structures in {args.folder or 'the AFLOW-AGL set'}; model {Path(args.model).name}; "
          f"{available_cores()} cores; this project with -j {args.workers}")
    print(f"{'command':34s} {'runs':>4s} {'wall s':>8s} {'structures/s':>13s} {'CPU s':>7s} {'peak MB':>8s}"
          "   (medians)")
    for name, (wall, peak, runs, cpu) in med.items():
        print(f"{name:34s} {runs:4d} {wall:8.1f} {n / wall:13.0f} {cpu:7.1f} {peak:8.0f}")
    ours_k, ours_p = med["kappa --train 0 (this project)"], med["cgcnn.predict (this project)"]
    if "original --train 0" in med:
        o = med["original --train 0"]
        print(f"original --train 0 / this project's: {o[0] / ours_k[0]:.1f}x the time, "
              f"{o[3] / ours_k[3]:.1f}x the CPU time, {o[1] / ours_k[1]:.1f}x the memory")
    if "cgcnn2 cgcnn-pr" in med:
        c = med["cgcnn2 cgcnn-pr"]
        print(f"cgcnn-pr / python -m cgcnn.predict: {c[0] / ours_p[0]:.1f}x the time, "
              f"{c[3] / ours_p[3]:.1f}x the CPU time, {c[1] / ours_p[1]:.1f}x the memory")
    cached = med["kappa --train 0, cached graphs"][0]
    print(f"cached graphs vs no cache (this project): {ours_k[0] / cached:.1f}x faster")
    for tool, preds in agree.items():
        common = [k for k in ours_pred if k in preds]
        diff = max((abs(ours_pred[k] - preds[k]) for k in common), default=float("nan"))
        print(f"source-model predictions, {tool} vs this project: {len(common)} crystals in common, "
              f"largest difference {diff:.2g}")


if __name__ == "__main__":
    main()
