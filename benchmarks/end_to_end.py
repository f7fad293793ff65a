"""Time ``transfer_learning_kappa.py --train 0`` on a folder: wall time, structures/s, peak memory.

    python benchmarks/end_to_end.py [FOLDER] [--model PATH]

FOLDER defaults to the 3,330 AFLOW-AGL structures of ../shared/data/aflow_agl_300K
(made into a CGCNN folder in a temporary directory).  A last layer is fit first
(``--train 1``, not timed), then ``--train 0`` runs three times, each in a fresh
process: without a graph cache, filling an on-disk cache, and reusing it.  Peak
memory is the process's maximum resident set size.  For comparison, the original
tool took 34 s and 4.3 GB on this folder on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / "transfer_learning_kappa.py"
AFLOW = ROOT.parent / "shared" / "data" / "aflow_agl_300K"

_RUNNER = """
import json, resource, runpy, sys, time
sys.argv = sys.argv[1:]
sys.path.insert(0, sys.argv[0].rsplit("/", 1)[0])
t0 = time.perf_counter()
code = 0
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
except SystemExit as exc:
    code = exc.code or 0
wall = time.perf_counter() - t0
print(json.dumps({"code": code, "wall": wall, "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}),
      file=sys.stderr)
"""


def run(args: list[str], cwd: Path) -> dict:
    """Run the tool in a fresh interpreter; return exit code, wall time (s, from start of
    the interpreter to exit, imports included) and peak RSS (kB)."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _RUNNER, str(TOOL), *args, "-q"], cwd=cwd,
                          capture_output=True, text=True)
    total = time.perf_counter() - t0
    stats = json.loads(proc.stderr.strip().splitlines()[-1])
    if stats["code"] != 0:
        sys.exit(f"failed: {' '.join(args)}\n{proc.stderr}")
    stats["total"] = total
    return stats


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folder", nargs="?", help="CGCNN data folder (default: the AFLOW-AGL set)")
    p.add_argument("--model", default=str(ROOT / "models" / "source.pth.tar"))
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.folder:
            folder = Path(args.folder).resolve()
        else:
            if not (AFLOW / "kappa.csv").is_file():
                sys.exit("no FOLDER given and ../shared/data/aflow_agl_300K is absent")
            sys.path.insert(0, str(ROOT / "models"))
            from train_source import build_folder

            folder = build_folder(AFLOW, tmp / "aflow", "kappa")
        n = sum(1 for line in (folder / "id_prop.csv").read_text().splitlines() if line.strip()) \
            if (folder / "id_prop.csv").exists() else len(list(folder.glob("*.cif")))
        model = str(Path(args.model).resolve())
        run(["--train", "1", model, str(folder)], tmp)
        cache = tmp / "graphs"
        rows = [
            ("--train 0, no cache", run(["--train", "0", model, str(folder)], tmp)),
            ("--train 0, filling cache", run(["--train", "0", model, str(folder), "--cache-dir", str(cache)], tmp)),
            ("--train 0, cached graphs", run(["--train", "0", model, str(folder), "--cache-dir", str(cache)], tmp)),
        ]
    print(f"{n} structures in {args.folder or 'the AFLOW-AGL set'}; model {Path(args.model).name}")
    print(f"{'run':28s} {'wall s':>8s} {'structures/s':>13s} {'peak MB':>8s}")
    for name, s in rows:
        print(f"{name:28s} {s['total']:8.1f} {n / s['total']:13.0f} {s['maxrss_kb'] / 1024:8.0f}")
    print(f"cached rerun vs no cache: {rows[0][1]['total'] / rows[2][1]['total']:.1f}x faster")


if __name__ == "__main__":
    main()
