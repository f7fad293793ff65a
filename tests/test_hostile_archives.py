"""Issue 24, class 4: archives.  Link members are read when they lead to a member of the archive,
else skipped or refused in one line with the reason; zip members that cannot be read (encrypted, an
unknown compression method) are one line (or a skipped row) and leave no ``.parts`` folder; a CIF
larger than ``MAX_CIF_BYTES`` is refused by its size, unread."""

from __future__ import annotations

import gzip
import io
import os
import shutil
import tarfile
import zipfile
from pathlib import Path

import pandas as pd
import pytest
from test_safety_outputs import assert_error, snapshot

import cgcnn.crystals.members as members
from cgcnn import InputError, predict
from cgcnn.cli import run_main
from cgcnn.crystals import MAX_CIF_BYTES, open_input, read_cif_bytes, read_structure
from conftest import REPO

MODEL = REPO / "models" / "source.pth.tar"  # carries its atom feature table
SAMPLE = REPO / "data" / "sample"
FAST = ["-b", "2", "--chunk-size", "2", "-j", "0", "-q"]

pytestmark = pytest.mark.skipif(not SAMPLE.is_dir() or not MODEL.is_file(), reason="needs data/sample and models")


def _predict(capsys, cifpath, out: Path, *extra) -> tuple[int, str]:
    code = run_main(predict.main, [str(MODEL), str(cifpath), "--out", str(out), *FAST, *extra])
    return code, capsys.readouterr().err


def _linked_folder(tmp_path: Path) -> Path:
    """a.cif, z.cif; b.cif a hard link of a.cif; c.cif -> a.cif; 0.cif -> z.cif (a later member)."""
    d = tmp_path / "linked"
    d.mkdir()
    shutil.copy(SAMPLE / "NaCl.cif", d / "a.cif")
    shutil.copy(SAMPLE / "Si.cif", d / "z.cif")
    os.link(d / "a.cif", d / "b.cif")
    os.symlink("a.cif", d / "c.cif")
    os.symlink("z.cif", d / "0.cif")
    return d


def _tar(folder: Path, path: Path, mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as tf:  # sorted by name, as tar --sort=name; hard links as tar writes them
        for p in sorted(folder.iterdir()):
            tf.add(p, arcname=p.name)
    return path


def test_tar_links_inside_the_archive_are_read(capsys, tmp_path):
    archive = _tar(_linked_folder(tmp_path), tmp_path / "db.tar.gz")
    with tarfile.open(archive) as tf:
        kinds = {m.name: ("hard" if m.islnk() else "sym" if m.issym() else "file") for m in tf}
    assert kinds == {"0.cif": "sym", "a.cif": "file", "b.cif": "hard", "c.cif": "sym", "z.cif": "file"}
    data = open_input(archive)
    assert data.ids == ["0", "a", "b", "c", "z"]
    texts = {c.cif_id: c for _, chunk in data.chunks(2) for c in chunk}
    nacl, si = (SAMPLE / "NaCl.cif").read_bytes(), (SAMPLE / "Si.cif").read_bytes()
    assert {k: c.data for k, c in texts.items()} == {"0": si, "a": nacl, "b": nacl, "c": nacl, "z": si}
    code, err = _predict(capsys, archive, tmp_path / "out.csv")
    assert code == 0, err
    out = pd.read_csv(tmp_path / "out.csv")
    assert list(out.cif_id) == ["0", "a", "b", "c", "z"]
    p = dict(zip(out.cif_id, out.prediction))
    assert p["a"] == pytest.approx(p["b"], rel=1e-5) and p["a"] == pytest.approx(p["c"], rel=1e-5)
    assert p["0"] == pytest.approx(p["z"], rel=1e-5)  # the same crystal (float32 sums differ by batch)


@pytest.mark.parametrize("link, words", [
    ("../outside.cif", ["symbolic link to '../outside.cif', outside the archive"]),
    ("/etc/hostname", ["symbolic link to '/etc/hostname', outside the archive"]),
    ("missing.cif", ["symbolic link to 'missing.cif', which is not in the archive"]),
    ("sub", ["symbolic link to 'sub', which is a folder"]),
    ("loop.cif", ["a loop of links"]),
])
def test_tar_links_elsewhere_refused_or_skipped(capsys, tmp_path, link, words):
    d = tmp_path / "d"
    (d / "sub").mkdir(parents=True)
    shutil.copy(SAMPLE / "NaCl.cif", d / "a.cif")
    os.symlink(link, d / "bad.cif")
    if link == "loop.cif":
        os.symlink("bad.cif", d / "loop.cif")
    archive = _tar(d, tmp_path / "db.tar")
    before = snapshot(tmp_path)
    code, err = _predict(capsys, archive, tmp_path / "out.csv")
    assert_error(code, err, f"{archive}:bad.cif", *words)
    assert snapshot(tmp_path) == before  # no out.csv, no out.csv.parts

    code, err = _predict(capsys, archive, tmp_path / "out.csv", "--on-error", "skip")
    assert code == 0, err
    skipped = pd.read_csv(tmp_path / "skipped.csv")
    assert "bad" in list(skipped.cif_id)
    reason = skipped.set_index("cif_id").reason["bad"]
    assert all(w in reason for w in words)
    assert "a" in list(pd.read_csv(tmp_path / "out.csv").cif_id)


def test_tar_hard_link_to_a_large_member_is_refused_unread(tmp_path, monkeypatch):
    monkeypatch.setattr(members, "MAX_CIF_BYTES", 500)
    archive = _tar(_linked_folder(tmp_path), tmp_path / "db.tar")
    texts = {c.cif_id: c for _, chunk in open_input(archive).chunks(5) for c in chunk}
    for cif_id in ("a", "b", "c", "z", "0"):
        assert texts[cif_id].data is None and "bytes, more than the limit of 500 bytes per CIF" in texts[cif_id].error


def _zip(tmp_path: Path, name: str, text: str | None = None, **info) -> Path:
    """A zip of NaCl.cif and one more member ``bad.cif`` holding ``text`` (default Si.cif), with
    ZipInfo attributes ``info``."""
    path = tmp_path / name
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.write(SAMPLE / "NaCl.cif", "NaCl.cif")
        bad = zipfile.ZipInfo("bad.cif")
        bad.compress_type = zipfile.ZIP_STORED
        for key, value in info.items():
            setattr(bad, key, value)
        zf.writestr(bad, (SAMPLE / "Si.cif").read_text() if text is None else text)
    return path


def _patch_headers(path: Path, local: int, central: int, value: int) -> Path:
    """Set a 2-byte field of ``bad.cif``'s local header (at offset ``local``) and central header
    (``central``) to ``value`` (zipfile itself writes neither an encryption flag nor PPMd)."""
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        start = zf.getinfo("bad.cif").header_offset
    entry = next(i for i in range(len(raw) - 53) if raw[i:i + 4] == b"PK\x01\x02" and raw[i + 46:i + 53] == b"bad.cif")
    for offset in (start + local, entry + central):
        raw[offset:offset + 2] = value.to_bytes(2, "little")
    path.write_bytes(bytes(raw))
    return path


@pytest.mark.parametrize("kind", ["encrypted", "method", "symlink out", "symlink in"])
def test_zip_members_that_cannot_be_read(capsys, tmp_path, kind):
    if kind == "encrypted":
        archive, words = _patch_headers(_zip(tmp_path, "db.zip"), 6, 8, 0x1), ["encrypted", "password"]
    elif kind == "method":  # 98: PPMd
        archive, words = _patch_headers(_zip(tmp_path, "db.zip"), 8, 10, 98), ["compression type 98", "deflate"]
    else:
        target = "../NaCl.cif" if kind == "symlink out" else "NaCl.cif"
        archive = _zip(tmp_path, "db.zip", create_system=3, external_attr=0o120777 << 16, text=target)
        words = ["symbolic link to '../NaCl.cif', outside the archive"]
    with zipfile.ZipFile(archive) as zf:
        assert len(zf.infolist()) == 2
    out = tmp_path / "out.csv"
    before = snapshot(tmp_path)
    code, err = _predict(capsys, archive, out)
    if kind == "symlink in":  # read as the member it leads to
        assert code == 0, err
        frame = pd.read_csv(out)
        assert list(frame.cif_id) == ["NaCl", "bad"]
        assert frame.prediction[0] == pytest.approx(frame.prediction[1], rel=1e-5)
        return
    assert_error(code, err, f"{archive}:bad.cif", *words)
    assert snapshot(tmp_path) == before and not Path(f"{out}.parts").exists()
    code, err = _predict(capsys, archive, out, "--on-error", "skip")
    assert code == 0, err
    skipped = pd.read_csv(tmp_path / "skipped.csv")
    assert list(skipped.cif_id) == ["bad"] and all(w in skipped.reason[0] for w in words)
    assert list(pd.read_csv(out).cif_id) == ["NaCl"]


def test_cif_over_the_limit_refused_by_its_size(capsys, tmp_path):
    """A tar.gz of under 100 kB expanding to 50 MB + 1 byte: refused from the header's size, in one line."""
    assert MAX_CIF_BYTES == 50_000_000
    text = (SAMPLE / "NaCl.cif").read_bytes()
    big = text + b"#" * (MAX_CIF_BYTES + 1 - len(text))
    archive = tmp_path / "bomb.tar.gz"
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tf:
        info = tarfile.TarInfo("big.cif")
        info.size = len(big)
        tf.addfile(info, io.BytesIO(big))
    archive.write_bytes(gzip.compress(buffer.getvalue(), compresslevel=9))
    del big, buffer
    assert archive.stat().st_size < 100_000
    before = snapshot(tmp_path)
    code, err = _predict(capsys, archive, tmp_path / "out.csv")
    assert_error(code, err, f"{archive}:big.cif", "50,000,001 bytes", "limit of 50,000,000 bytes per CIF")
    assert snapshot(tmp_path) == before


def test_folder_cif_over_the_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(members, "MAX_CIF_BYTES", 500)
    path = tmp_path / "NaCl.cif"
    shutil.copy(SAMPLE / "NaCl.cif", path)
    for read in (read_cif_bytes, read_structure):
        with pytest.raises(InputError, match=r"NaCl.cif: 1,007 bytes, more than the limit of 500 bytes per CIF"):
            read(path)


def test_tar_links_read_by_further_passes_when_not_kept(tmp_path, monkeypatch):
    archive = _tar(_linked_folder(tmp_path), tmp_path / "db.tar.gz")
    nacl, si = (SAMPLE / "NaCl.cif").read_bytes(), (SAMPLE / "Si.cif").read_bytes()
    monkeypatch.setattr(members, "MAX_KEPT_BYTES", 0)  # nothing kept: b.cif and c.cif need a further pass each
    texts = {c.cif_id: c.data for _, chunk in open_input(archive).chunks(2) for c in chunk}
    assert texts == {"0": si, "a": nacl, "b": nacl, "c": nacl, "z": si}
    monkeypatch.setattr(members, "MAX_LINK_PASSES", 2)  # 0.cif (a later member), b.cif; not c.cif
    texts = {c.cif_id: c for _, chunk in open_input(archive).chunks(2) for c in chunk}
    assert texts["0"].data == si and texts["b"].data == nacl and texts["c"].data is None
    assert "more than 2 such links" in texts["c"].error and "replace the links by copies" in texts["c"].error
