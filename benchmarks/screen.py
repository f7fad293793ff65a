"""Screening throughput, peak memory and the cost of a resumed run (``--train 0``, cgcnn.screening.run).

    python benchmarks/screen.py N [--cifs DIR] [--last-layer PATH] [--work DIR] [-- OPTIONS...]

Builds a folder of N crystals from renamed copies (hard links where the file system
allows) of the CIFs at hand (default: the shared AFLOW-AGL set, ``../shared/data/
aflow_agl_300K/cif`` next to the repository, else ``data/sample``), cycling through
them, without ``id_prop.csv``.  Without ``--last-layer`` it first fits one on
``data/sample`` (ridge, ``--descriptors slack``: the bundled source and property
models, four networks per crystal).  Then it runs, each in a fresh process::

    transfer_learning_kappa.py --train 0 models/source.pth.tar FOLDER -q [OPTIONS]

1. uninterrupted: wall time, crystals/s, and the peak memory of the whole process
   tree (the sum of the proportional set sizes of the run and its graph-building
   processes, sampled every 0.1 s) and of the main process alone (``ru_maxrss``);
2. killed with SIGKILL once half of the shards are written, then the same command
   with ``--resume``: the wall times of both parts, and the extra cost of the
   interruption, ``t(killed) + t(resumed) - t(uninterrupted)``; the resumed
   results.csv is compared byte for byte with the uninterrupted one.

OPTIONS go to the tool (e.g. ``--chunk-size 1000 -j 2``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TOOL = REPO / "transfer_learning_kappa.py"
MODEL = REPO / "models" / "source.pth.tar"
SHARED_CIFS = REPO.parent / "shared" / "data" / "aflow_agl_300K" / "cif"


def build_folder(folder: Path, cifs: list[Path], n: int) -> None:
    """N crystals named c0000000.cif ..., copies of ``cifs`` in turn (hard links when possible)."""
    folder.mkdir(parents=True)
    link = True
    for i in range(n):
        src, dst = cifs[i % len(cifs)], folder / f"c{i:07d}.cif"
        if link:
            try:
                os.link(src, dst)
                continue
            except OSError:
                link = False
        shutil.copyfile(src, dst)


def tree_rss(pid: int) -> int:
    """Memory of a process and all its descendants, in bytes (0 when it is gone): the sum of their
    proportional set sizes (PSS: pages shared by the forked graph-building processes counted once
    in all), or of their resident sets where the system gives no PSS."""
    import psutil

    try:
        proc = psutil.Process(pid)
        procs = [proc] + proc.children(recursive=True)
    except psutil.Error:
        return 0
    total = 0
    for p in procs:
        try:
            info = p.memory_full_info()
            total += getattr(info, "pss", info.rss)
        except psutil.Error:
            pass
    return total


def timed_run(cmd: list[str], cwd: Path, kill_when=None) -> dict:
    """Run ``cmd``; wall time, peak tree RSS, main ru_maxrss; SIGKILL when ``kill_when()`` is true."""
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=out, stderr=err, text=True)
        peak, killed = 0, False
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            peak = max(peak, tree_rss(proc.pid))
            if kill_when is not None and not killed and kill_when():
                os.kill(proc.pid, signal.SIGKILL)
                killed = True
            time.sleep(0.1)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        out, err = out.read(), err.read()
    if not killed and proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err}")
    maxrss = usage.ru_maxrss * 1024
    return {"wall": wall, "peak": peak, "maxrss": maxrss, "stdout": out, "stderr": err, "killed": killed}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("n", type=int, help="crystals to screen")
    parser.add_argument("--cifs", type=Path, default=None, help="folder of CIFs to copy (default: shared AFLOW set)")
    parser.add_argument("--last-layer", type=Path, default=None, help="a fitted last_layer.sav (default: fit one)")
    parser.add_argument("--work", type=Path, default=None, help="work folder (default: a temporary one, removed)")
    parser.add_argument("--no-resume", action="store_true", help="skip the killed-and-resumed run")
    argv = sys.argv[1:] if argv is None else list(argv)
    options = argv[argv.index("--") + 1:] if "--" in argv else []  # the tool's options, after --
    args = parser.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    cifs_dir = args.cifs or (SHARED_CIFS if SHARED_CIFS.is_dir() else REPO / "data" / "sample")
    cifs = sorted(cifs_dir.glob("*.cif"))
    if not cifs:
        raise SystemExit(f"{cifs_dir}: no CIFs")
    work = args.work or Path(tempfile.mkdtemp(prefix="screen-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        layer = args.last_layer
        if layer is None:
            layer = work / "last_layer.sav"
            print(f"fitting a last layer on data/sample -> {layer}", flush=True)
            subprocess.run([sys.executable, str(TOOL), "--train", "1", str(MODEL), str(REPO / "data" / "sample"),
                            "--last-layer-type", "ridge", "--cv-folds", "3", "--last-layer", str(layer),
                            "--test-results", str(work / "fit_test_results.csv"), "-q"], check=True, cwd=work,
                           stdout=subprocess.DEVNULL)
        folder = work / f"crystals_{args.n}"
        if not folder.exists():
            t = time.perf_counter()
            build_folder(folder, cifs, args.n)
            print(f"built {folder.name}: {args.n:,} crystals from {len(cifs):,} CIFs of {cifs_dir.name} "
                  f"({time.perf_counter() - t:.1f} s)", flush=True)
        cmd = [sys.executable, str(TOOL), "--train", "0", str(MODEL), str(folder), "--last-layer", str(layer),
               "-q", *options]
        print("command:", " ".join(["python", "transfer_learning_kappa.py", *cmd[2:]]), flush=True)

        full_dir = work / "full"
        full_dir.mkdir(exist_ok=True)
        full = timed_run(cmd, full_dir)
        rate = args.n / full["wall"]
        print(f"uninterrupted: {full['wall']:.1f} s, {rate:.1f} crystals/s (wall time, start-up included); "
              f"peak memory {full['peak'] / 2**20:.0f} MiB (process tree, PSS), "
              f"{full['maxrss'] / 2**20:.0f} MiB (main process)", flush=True)
        print("  " + full["stdout"].strip().replace("\n", "\n  "))
        print(f"  load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs", flush=True)
        if args.no_resume:
            return 0

        res_dir = work / "resumed"
        res_dir.mkdir(exist_ok=True)
        parts = res_dir / "results.csv.parts"
        chunk = next((int(options[i + 1]) for i, o in enumerate(options[:-1]) if o == "--chunk-size"), None)
        batch = next((int(options[i + 1]) for i, o in enumerate(options[:-1]) if o in ("-b", "--batch-size")), 500)
        n_chunks = -(-args.n // (chunk or 4 * batch))
        half = max(1, n_chunks // 2)
        first = timed_run(cmd, res_dir, kill_when=lambda: len(list(parts.glob("0*.json"))) >= half)
        done = len(list(parts.glob("0*.json")))
        second = timed_run(cmd + ["--resume"], res_dir)
        same = (res_dir / "results.csv").read_bytes() == (full_dir / "results.csv").read_bytes()
        extra = first["wall"] + second["wall"] - full["wall"]
        print(f"killed (SIGKILL) after {done} of {n_chunks} chunks: {first['wall']:.1f} s; resumed: "
              f"{second['wall']:.1f} s; extra cost of the interruption {extra:.1f} s "
              f"({extra / full['wall']:+.1%} of the uninterrupted run); resumed results.csv "
              f"{'identical' if same else 'DIFFERENT'} to the uninterrupted one", flush=True)
        return 0 if same else 1
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
