"""How screening throughput grows with the machine: the recommended route's ``--train 0`` at ``-j 1`` and on all
cores, the CPU time per crystal of the main process (the serial part) and of the worker processes, and the
speed-up Amdahl's law gives from them at 16 and 64 cores.

    python benchmarks/scaling.py [--sizes 3330,100000] [--cifs DIR] [--work DIR] [--no-gpu]

Set-up (timed, printed): ``--train 1 models/source.pth.tar data/sample`` (the recommended route: three
ensemble members, twelve networks per crystal, Slack's descriptors, ``auto``) and, untimed, the same with
``--original``.  Then, each in a fresh process, ``transfer_learning_kappa.py --train 0 models/source.pth.tar
FOLDER -q`` on folders of N crystals made of renamed copies (hard links) of the CIFs at hand (default: the
3,330 AFLOW-AGL CIFs of ``../shared``, else ``data/sample``), as ``benchmarks/screen.py`` makes them:

- the recommended route at ``-j 1`` and ``-j`` all cores, for each N;
- the ``--original`` route (one network, no descriptors) at ``-j`` all cores on the first N, for the ratio;
- each route once on one crystal: its start-up (imports, models, last layer, pool), subtracted from the
  per-crystal figures;
- with a GPU (``torch.cuda.is_available()``, unless ``--no-gpu``) the recommended route on it at ``-j`` all
  cores (the networks run there, the graphs on the cores).

Per run: wall time (start-up included), crystals/s, CPU time of the main process alone and of its worker
processes (read from ``/proc/PID/stat`` when the main process has exited, before it is reaped: its own
``utime + stime`` and its children's), and the peak memory of the process tree (sum of proportional set
sizes, sampled every 0.5 s).  Amdahl's law: with ``m`` and ``w`` the main-process and worker CPU seconds per
crystal outside start-up, the serial fraction is ``s = m / (m + w)`` and the speed-up on ``p`` cores
``1 / (s + (1 - s) / p)`` (G. M. Amdahl, AFIPS Conf. Proc. 30, 483 (1967)).  The machine may be shared:
the load average is printed beside each run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from screen import SHARED_CIFS, build_folder, tree_rss  # noqa: E402

from cgcnn import available_cores  # noqa: E402

TOOL = REPO / "transfer_learning_kappa.py"
MODEL = REPO / "models" / "source.pth.tar"


def run(cmd: list[str], cwd: Path, memory: bool = False) -> dict:
    """Run ``cmd``; wall time (s), CPU s of the main process and of its children, peak tree PSS (MiB),
    load average at the start.  Exits with the command's output if it fails."""
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    load = os.getloadavg()[0]
    with tempfile.TemporaryFile("w+") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        peak = [0]
        done = threading.Event()

        def sample() -> None:
            while not done.wait(0.5):
                peak[0] = max(peak[0], tree_rss(proc.pid))

        sampler = threading.Thread(target=sample, daemon=True)
        if memory:
            sampler.start()
        os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)  # exited, not yet reaped: /proc/PID/stat holds
        wall = time.perf_counter() - t0
        fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        tick = os.sysconf("SC_CLK_TCK")
        main_cpu = (int(fields[11]) + int(fields[12])) / tick  # utime, stime of the process itself
        _, status, usage = os.wait4(proc.pid, 0)
        done.set()
        total = usage.ru_utime + usage.ru_stime  # the process and the children it waited for
        out.seek(0)
        text = out.read()
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"failed: {' '.join(map(str, cmd))}\n{text[-3000:]}")
    return {"wall": wall, "main": main_cpu, "workers": max(0.0, total - main_cpu), "peak": peak[0] / 2**20,
            "load": load, "out": text}


def amdahl(serial: float, cores: int) -> float:
    return 1.0 / (serial + (1.0 - serial) / cores)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="3330,100000", help="crystals per folder, comma-separated")
    p.add_argument("--cifs", type=Path, default=None, help="CIFs to copy (default: the shared AFLOW-AGL set)")
    p.add_argument("--work", type=Path, default=None, help="work folder (default: a temporary one, removed)")
    p.add_argument("--no-gpu", action="store_true", help="no GPU runs even where torch sees one")
    args = p.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    cifs_dir = args.cifs or (SHARED_CIFS if SHARED_CIFS.is_dir() else REPO / "data" / "sample")
    cifs = sorted(cifs_dir.glob("*.cif"))
    cores = available_cores()
    gpu = False
    if not args.no_gpu:
        import torch

        gpu = torch.cuda.is_available()
    work = args.work or Path(tempfile.mkdtemp(prefix="scaling-"))
    work.mkdir(parents=True, exist_ok=True)
    py = sys.executable
    try:
        fit = run([py, str(TOOL), "--train", "1", str(MODEL), str(REPO / "data" / "sample"), "--last-layer",
                   "rec.sav", "--test-results", "fit_rec.csv"], work)
        run([py, str(TOOL), "--train", "1", str(MODEL), str(REPO / "data" / "sample"), "--original",
             "--last-layer", "orig.sav", "--test-results", "fit_orig.csv"], work)
        print(f"{cores} cores{', a GPU' if gpu else ', no GPU'}; CIFs from {cifs_dir}")
        print(f"--train 1 {MODEL.relative_to(REPO)} data/sample (recommended route): {fit['wall']:.1f} s wall, "
              f"{fit['main'] + fit['workers']:.1f} s CPU, load {fit['load']:.1f}")
        print("  " + "\n  ".join(line for line in fit["out"].splitlines() if not line.startswith("source model")))

        def screen(folder: Path, route: str, jobs: int, device: str, memory: bool = False) -> dict:
            layer = "rec.sav" if route == "recommended" else "orig.sav"
            cmd = [py, str(TOOL), "--train", "0", str(MODEL), str(folder), "--last-layer", layer, "-q",
                   "-j", str(jobs), "--results", "res.csv", "--test-results", "test.csv"]
            return run(cmd + (["--disable-cuda"] if device == "cpu" else []), work, memory)

        one = work / "crystals_1"
        if not one.exists():
            build_folder(one, cifs, 1)
        start: dict = {}
        rows = []
        for n in sizes:
            folder = work / f"crystals_{n}"
            if not folder.exists():
                build_folder(folder, cifs, n)
            plan = [("recommended", 1, "cpu"), ("recommended", cores, "cpu")]
            if n == sizes[0]:
                plan.append(("original", cores, "cpu"))
            plan += [("recommended", cores, "gpu")] if gpu else []
            for route, jobs, device in plan:
                if (route, jobs, device) not in start:
                    start[(route, jobs, device)] = screen(one, route, jobs, device)
                r = screen(folder, route, jobs, device, memory=n == max(sizes))
                s = start[(route, jobs, device)]
                m = max(0.0, r["main"] - s["main"]) / n
                w = max(0.0, r["workers"] - s["workers"]) / n
                rows.append((n, route, device, jobs, r, m, w))
                print(f"  done: {n} crystals, {route}, {device}, -j {jobs}: {r['wall']:.1f} s", flush=True)
        print()
        print("| crystals | route | device | -j | wall s | crystals/s | main CPU ms/crystal | workers CPU ms/crystal "
              "| Amdahl 16 cores | Amdahl 64 cores | peak MiB | load |")
        print("|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for n, route, device, jobs, r, m, w in rows:
            serial = m / (m + w) if m + w > 0 else 1.0
            peak = f"{r['peak']:.0f}" if r["peak"] else ""
            print(f"| {n:,} | {route} | {device} | {jobs} | {r['wall']:.1f} | {n / r['wall']:.0f} | {m * 1e3:.2f} | "
                  f"{w * 1e3:.2f} | {amdahl(serial, 16):.1f}x | {amdahl(serial, 64):.1f}x | {peak} | "
                  f"{r['load']:.1f} |")
        for (route, jobs, device), s in start.items():
            print(f"start-up ({route}, {device}, -j {jobs}, one crystal): {s['wall']:.1f} s wall, main "
                  f"{s['main']:.1f} s CPU, workers {s['workers']:.1f} s CPU, load {s['load']:.1f}")
        first = {(route, jobs, device): r for n, route, device, jobs, r, _, _ in rows if n == sizes[0]}
        rec, orig = first[("recommended", cores, "cpu")], first[("original", cores, "cpu")]
        print(f"recommended / original route on {sizes[0]:,} crystals, -j {cores}: {rec['wall'] / orig['wall']:.2f}x "
              f"the wall time ({rec['wall']:.1f} s / {orig['wall']:.1f} s)")
        return 0
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
