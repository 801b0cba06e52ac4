"""Archive extraction (curate.sources.fetch.extract) refuses every way out of DEST.

Each malicious tar is built in tmp_path; every case also runs with tarfile's "data"
filter taken away (Python 3.11.0-3.11.3 lack it), to show the checks are curate's own.
"""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import pytest

from curate.sources.fetch import UnsafeArchive, extract


def _reg(name: str, data: bytes = b"x") -> tuple[tarfile.TarInfo, io.BytesIO]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, io.BytesIO(data)


def _sym(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, None


def _tar(path: Path, members: list, mode: str = "w") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, mode) as tf:
        for info, data in members:
            tf.addfile(info, data)
    return path


def _malicious(tmp_path: Path, kind: str) -> Path:
    outside = str(tmp_path / "outside.txt")
    members = {
        # a -> . then a/e -> .. : e would be DEST's parent; then a file through it
        "symlink_chain": [_reg("ok.txt"), _sym("a", "."), _sym("a/e", ".."),
                          _reg("a/e/evil.txt", b"evil")],
        # each link looks inside on its own; together x/.. becomes DEST/..
        "late_link": [_sym("l", "x/.."), _sym("x", "."), _reg("l/evil.txt", b"evil")],
        "late_link_only": [_reg("ok.txt"), _sym("l", "x/.."), _sym("x", ".")],
        "absolute": [_reg("ok.txt"), _reg(str(tmp_path / "abs_evil.txt"), b"evil")],
        "dotdot": [_reg("ok.txt"), _reg("../evil.txt", b"evil")],
        "inner_dotdot": [_reg("ok.txt"), _reg("d/../../evil.txt", b"evil")],
        "hardlink_outside": [_reg("ok.txt"), _sym("h", outside, tarfile.LNKTYPE)],
        "hardlink_dotdot": [_reg("ok.txt"), _sym("h", "../outside.txt", tarfile.LNKTYPE)],
        "hardlink_via_link": [_sym("up", ".."), _sym("h", "up/outside.txt", tarfile.LNKTYPE)],
        "symlink_absolute": [_reg("ok.txt"), _sym("s", outside)],
        "symlink_dotdot": [_reg("ok.txt"), _sym("d/s", "../../outside.txt")],
        "device": [_reg("ok.txt"), _sym("dev", "", tarfile.CHRTYPE)],
        "fifo": [_reg("ok.txt"), _sym("fifo", "", tarfile.FIFOTYPE)],
    }[kind]
    return _tar(tmp_path / "archives" / f"{kind}.tar", members)


@pytest.fixture(params=["filter", "no_filter"])
def filter_mode(request, monkeypatch):
    if request.param == "no_filter":
        for name in ("data_filter", "tar_filter", "fully_trusted_filter", "FilterError"):
            monkeypatch.delattr(tarfile, name, raising=False)
        monkeypatch.delattr(tarfile.TarFile, "extraction_filter", raising=False)
    return request.param


KINDS = ["symlink_chain", "late_link", "late_link_only", "absolute", "dotdot", "inner_dotdot",
         "hardlink_outside", "hardlink_dotdot", "hardlink_via_link", "symlink_absolute",
         "symlink_dotdot", "device", "fifo"]


@pytest.mark.parametrize("kind", KINDS)
def test_malicious_tar_is_refused_and_leaves_nothing(tmp_path, kind, filter_mode):
    (tmp_path / "outside.txt").write_text("secret")
    archive = _malicious(tmp_path, kind)
    dest = tmp_path / "work" / "dest"
    with pytest.raises(UnsafeArchive, match="refused"):
        extract(archive, dest, progress=False)
    assert not list(dest.iterdir()), "a refused archive leaves nothing in DEST"
    assert [p.name for p in (tmp_path / "work").iterdir()] == ["dest"], "no temp folder left"
    assert not list(tmp_path.rglob("evil.txt")) and not (tmp_path / "abs_evil.txt").exists()
    assert (tmp_path / "outside.txt").read_text() == "secret"


@pytest.mark.parametrize("mode", ["w", "w:gz"])
def test_good_tar_with_internal_links(tmp_path, mode, filter_mode):
    archive = _tar(tmp_path / f"good.{mode.replace(':', '.')}", [
        _reg("root/d/real.txt", b"real"),
        _sym("root/d/alias.txt", "real.txt"),
        _sym("root/up", "d"),
        _sym("root/e/back.txt", "../d/real.txt"),
        _sym("root/hard.txt", "root/d/real.txt", tarfile.LNKTYPE),
        _reg("root/up/via.txt", b"via"),  # through an internal link: lands in root/d
    ], mode)
    dest = tmp_path / "dest"
    (dest / "root").mkdir(parents=True)
    (dest / "keep.txt").write_text("kept")  # what DEST held before stays
    assert extract(archive, dest, progress=False) is True
    assert (dest / "root/d/alias.txt").read_bytes() == b"real"
    assert (dest / "root/e/back.txt").read_bytes() == b"real"
    assert (dest / "root/hard.txt").read_bytes() == b"real"
    assert (dest / "root/d/via.txt").read_bytes() == b"via"
    assert (dest / "keep.txt").read_text() == "kept"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    assert extract(archive, dest, progress=False) is False


def test_zip_dotdot_and_absolute_refused(tmp_path):
    for name in ("../evil.txt", "/abs_evil.txt", "d/../../evil.txt"):
        path = tmp_path / "z.zip"
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            zf.writestr("ok.txt", b"ok")
            zf.writestr(zipfile.ZipInfo(name), b"evil")
        path.write_bytes(buf.getvalue())
        dest = tmp_path / "dest"
        with pytest.raises(UnsafeArchive, match="refused"):
            extract(path, dest, progress=False)
        assert not list(dest.iterdir())


def test_good_zip(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("a/b.txt", b"b")
    (tmp_path / "g.zip").write_bytes(buf.getvalue())
    assert extract(tmp_path / "g.zip", tmp_path / "dest", progress=False)
    assert (tmp_path / "dest/a/b.txt").read_bytes() == b"b"
