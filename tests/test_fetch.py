"""fetch: resumable verified downloads from a local HTTP server, and archive safety.

The server runs on 127.0.0.1 in a thread and implements Range itself, so each behaviour
a real mirror shows (dropped connections, no Range support, 5xx) can be switched on.
"""

from __future__ import annotations

import hashlib
import io
import re
import tarfile
import threading
import zipfile
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from curate.model.recipe import Access, Download, Layout, SourceSpec
from curate.sources.fetch import (
    AccessRequired,
    ChecksumMismatch,
    DownloadFailed,
    SizeMismatch,
    UnsafeArchive,
    access_steps,
    extract,
    fetch_source,
)

FAST = {"progress": False, "backoff": 0.0, "timeout": 10.0}


@dataclass
class State:
    files: dict[str, bytes] = field(default_factory=dict)
    ranges: bool = True  # honour Range headers
    cut_once: set[str] = field(default_factory=set)  # drop the connection half-way, once
    fail: dict[str, int] = field(default_factory=dict)  # answer 503 this many times
    log: list[tuple[str, str | None]] = field(default_factory=list)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def _send(self, code: int, body: bytes = b"", headers: dict | None = None) -> None:
        self.send_response(code)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        st: State = self.server.state
        rng = self.headers.get("Range")
        st.log.append((self.path, rng))
        data = st.files.get(self.path)
        if data is None:
            return self._send(404)
        if st.fail.get(self.path, 0) > 0:
            st.fail[self.path] -= 1
            return self._send(503)
        start, code, headers = 0, 200, {}
        if rng and st.ranges:
            start = int(re.fullmatch(r"bytes=(\d+)-", rng)[1])
            if start >= len(data):
                return self._send(416, headers={"Content-Range": f"bytes */{len(data)}"})
            code = 206
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        body = data[start:]
        self.send_response(code)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.path in st.cut_once:
            st.cut_once.discard(self.path)
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.state = State()
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02},
                              daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield base, httpd.state
    httpd.shutdown()
    httpd.server_close()


def tar_bytes(members: dict[str, bytes], mode: str = "w:gz") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(zipfile.ZipInfo(name), data)
    return buf.getvalue()


def spec_for(url: str, data: bytes | None = None, *, sha256: str | None = None,
             size: int | None = None) -> SourceSpec:
    if data is not None and sha256 is None:
        sha256 = hashlib.sha256(data).hexdigest()
    return SourceSpec(
        name="t", format="nifti", layout=Layout(images=["imagesTr/*.nii.gz"]),
        access=Access(kind="direct", urls=[Download(url=url, sha256=sha256, size=size)]),
    )


# a payload big enough for several chunks of progress but quick to hash
PAYLOAD = {f"Task01/imagesTr/case{i}.nii.gz": bytes([i]) * 300_000 for i in range(3)}


def test_full_download_verify_extract_and_rerun(server, tmp_path, capsys, monkeypatch):
    base, st = server
    data = tar_bytes(PAYLOAD)
    st.files["/d/Task01.tar.gz"] = data
    spec = spec_for(base + "/d/Task01.tar.gz", data, size=len(data))
    dest = tmp_path / "dest"
    rep = fetch_source(spec, dest, progress=True, backoff=0.0)
    f = rep.files[0]
    assert f.verified and f.downloaded and f.extracted_now and f.size == len(data)
    assert (dest / "Task01.tar.gz").read_bytes() == data
    assert (dest / "Task01/imagesTr/case2.nii.gz").read_bytes() == PAYLOAD["Task01/imagesTr/case2.nii.gz"]
    assert rep.root == str(dest / "Task01")
    assert not list(dest.glob("*.part"))
    assert "Task01.tar.gz" in capsys.readouterr().err  # tqdm progress on the terminal
    assert "sha256 verified" in rep.summary() and "data root" in rep.summary()

    n = len(st.log)
    monkeypatch.setattr("curate.sources.fetch.sha256_file", lambda p: pytest.fail("hashed again"))
    again = fetch_source(spec, dest, **FAST)
    assert len(st.log) == n, "a verified file must not be downloaded again"
    assert not again.files[0].downloaded and not again.files[0].extracted_now


def test_resume_after_connection_cut(server, tmp_path):
    base, st = server
    data = bytes(range(256)) * 8000
    st.files["/big.bin"] = data
    st.cut_once.add("/big.bin")
    rep = fetch_source(spec_for(base + "/big.bin", data), tmp_path, **FAST)
    assert (tmp_path / "big.bin").read_bytes() == data and rep.files[0].verified
    assert st.log[0] == ("/big.bin", None)
    assert st.log[1] == ("/big.bin", f"bytes={len(data) // 2}-")  # continued, not restarted
    assert len(st.log) == 2


def test_resume_from_previous_run_part_file(server, tmp_path):
    base, st = server
    data = b"0123456789" * 50_000
    st.files["/x.bin"] = data
    (tmp_path / "x.bin.part").write_bytes(data[:123_456])
    rep = fetch_source(spec_for(base + "/x.bin", data), tmp_path, **FAST)
    assert rep.files[0].resumed_from == 123_456
    assert st.log == [("/x.bin", "bytes=123456-")]
    assert (tmp_path / "x.bin").read_bytes() == data


def test_server_without_range_restarts_cleanly(server, tmp_path):
    base, st = server
    data = b"abcdefgh" * 40_000
    st.files["/n.bin"] = data
    st.ranges = False
    (tmp_path / "n.bin.part").write_bytes(b"JUNK" * 1000)  # must not be prepended
    fetch_source(spec_for(base + "/n.bin", data), tmp_path, **FAST)
    assert (tmp_path / "n.bin").read_bytes() == data


def test_server_without_range_and_a_cut_connection(server, tmp_path):
    base, st = server
    data = b"abcdefgh" * 40_000
    st.files["/n.bin"] = data
    st.ranges = False
    st.cut_once.add("/n.bin")
    fetch_source(spec_for(base + "/n.bin", data), tmp_path, **FAST)
    assert (tmp_path / "n.bin").read_bytes() == data
    assert len(st.log) == 2


def test_checksum_mismatch_keeps_corrupt_file_aside(server, tmp_path):
    base, st = server
    data = b"real bytes" * 1000
    st.files["/c.bin"] = data
    spec = spec_for(base + "/c.bin", sha256="0" * 64)
    with pytest.raises(ChecksumMismatch, match="c.bin.corrupt"):
        fetch_source(spec, tmp_path, **FAST)
    assert (tmp_path / "c.bin.corrupt").read_bytes() == data
    assert not (tmp_path / "c.bin").exists() and not (tmp_path / "c.bin.part").exists()
    with pytest.raises(ChecksumMismatch):  # never silently reused on a second run
        fetch_source(spec, tmp_path, **FAST)


def test_existing_bad_file_is_replaced(server, tmp_path):
    base, st = server
    data = b"good" * 1000
    st.files["/g.bin"] = data
    (tmp_path / "g.bin").write_bytes(b"tampered")
    rep = fetch_source(spec_for(base + "/g.bin", data), tmp_path, **FAST)
    assert rep.files[0].downloaded and (tmp_path / "g.bin").read_bytes() == data
    assert (tmp_path / "g.bin.corrupt").read_bytes() == b"tampered"


def test_size_mismatch(server, tmp_path):
    base, st = server
    st.files["/s.bin"] = b"x" * 100
    with pytest.raises(SizeMismatch, match="declares 99"):
        fetch_source(spec_for(base + "/s.bin", size=99), tmp_path, **FAST)


def test_retries_on_5xx_then_gives_up_on_404(server, tmp_path):
    base, st = server
    data = b"r" * 1000
    st.files["/r.bin"] = data
    st.fail["/r.bin"] = 2
    fetch_source(spec_for(base + "/r.bin", data), tmp_path, **FAST)
    assert len(st.log) == 3
    with pytest.raises(DownloadFailed, match="404"):
        fetch_source(spec_for(base + "/missing.bin"), tmp_path, **FAST)
    st.fail["/r2.bin"], st.files["/r2.bin"] = 10, data
    with pytest.raises(DownloadFailed, match="gave up after 2 retries"):
        fetch_source(spec_for(base + "/r2.bin"), tmp_path / "b", retries=2, **FAST)


def test_archive_found_by_content_not_name(server, tmp_path):
    import gzip

    base, st = server
    zipped = zip_bytes({"imagesTr/a.nii.gz": b"x"})
    st.files["/api/collection/42/download"] = zipped
    st.files["/one.nii.gz"] = gzip.compress(b"not a tar")
    st.files["/Mask.7z"] = b"7z\xbc\xaf\x27\x1c" + b"\0" * 100
    spec = SourceSpec(name="api", format="nifti", layout=Layout(images=["imagesTr/*.nii.gz"]),
                      access=Access(kind="direct", urls=[
                          Download(url=base + u) for u in
                          ("/api/collection/42/download", "/one.nii.gz", "/Mask.7z")]))
    rep = fetch_source(spec, tmp_path, **FAST)
    api, nii, seven = rep.files
    assert Path(api.path).name == "api-0" and api.extracted_now  # a zip without a suffix
    assert (tmp_path / "imagesTr/a.nii.gz").read_bytes() == b"x"
    assert nii.extracted_to is None and nii.note is None  # gzip, but no archive
    assert seven.extracted_to is None and "7z archives are not extracted" in seven.note
    assert "extract Mask.7z" in rep.summary() and rep.root == str(tmp_path)


@pytest.mark.parametrize("suffix,mode", [
    ("zip", None), ("tar", "w"), ("tar.gz", "w:gz"), ("tgz", "w:gz"),
    ("tar.bz2", "w:bz2"), ("tar.xz", "w:xz"),
])
def test_extract_formats_idempotent(tmp_path, suffix, mode):
    members = {"root/a.txt": b"a", "root/sub/b.txt": b"b"}
    archive = tmp_path / f"data.{suffix}"
    archive.write_bytes(zip_bytes(members) if mode is None else tar_bytes(members, mode))
    dest = tmp_path / "dest"
    assert extract(archive, dest, progress=False) is True
    assert (dest / "root/sub/b.txt").read_bytes() == b"b"
    (dest / "root/a.txt").write_bytes(b"edited")
    assert extract(archive, dest, progress=False) is False  # marker: not redone
    assert (dest / "root/a.txt").read_bytes() == b"edited"


def _tar_with(tmp_path: Path, kind: str) -> Path:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        ok = tarfile.TarInfo("fine.txt")
        ok.size = 2
        tf.addfile(ok, io.BytesIO(b"ok"))
        if kind in ("dotdot", "absolute"):
            name = "../evil.txt" if kind == "dotdot" else str(tmp_path / "abs_evil.txt")
            info = tarfile.TarInfo(name)
            info.size = 4
            tf.addfile(info, io.BytesIO(b"evil"))
        elif kind in ("symlink", "hardlink"):
            info = tarfile.TarInfo("link")
            info.type = tarfile.SYMTYPE if kind == "symlink" else tarfile.LNKTYPE
            info.linkname = "../../outside.txt" if kind == "symlink" else str(tmp_path / "x")
            tf.addfile(info)
        elif kind == "symlink_then_write":  # a link to '..' then a file through it
            info = tarfile.TarInfo("up")
            info.type, info.linkname = tarfile.SYMTYPE, ".."
            tf.addfile(info)
            inner = tarfile.TarInfo("up/evil.txt")
            inner.size = 4
            tf.addfile(inner, io.BytesIO(b"evil"))
        elif kind == "device":
            info = tarfile.TarInfo("dev_null")
            info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
            tf.addfile(info)
    path = tmp_path / "archives" / f"{kind}.tar"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(buf.getvalue())
    return path


def test_compressed_tar_is_checked_while_streaming(tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name in ("ok.txt", "../evil.txt"):
            info = tarfile.TarInfo(name)
            info.size = 2
            tf.addfile(info, io.BytesIO(b"xx"))
    (tmp_path / "a.tar.gz").write_bytes(buf.getvalue())
    dest = tmp_path / "dest"
    with pytest.raises(UnsafeArchive, match="escapes the destination"):
        extract(tmp_path / "a.tar.gz", dest, progress=False)
    assert not (tmp_path / "evil.txt").exists()
    assert not list(dest.glob(".*.extracted")), "a refused archive is never marked done"


def _zip_dotdot(tmp_path: Path) -> Path:
    path = tmp_path / "archives" / "dotdot.zip"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(zip_bytes({"fine.txt": b"ok", "../evil.txt": b"evil"}))
    return path


@pytest.mark.parametrize("kind", [
    "dotdot", "absolute", "symlink", "hardlink", "symlink_then_write", "device", "zip",
])
def test_malicious_archives_are_refused(tmp_path, kind):
    archive = _zip_dotdot(tmp_path) if kind == "zip" else _tar_with(tmp_path, kind)
    dest = tmp_path / "work" / "dest"
    with pytest.raises(UnsafeArchive, match="refused"):
        extract(archive, dest, progress=False)
    outside = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")}
    assert outside == {"archives", f"archives/{archive.name}", "work", "work/dest"}
    assert not list(dest.iterdir()), "members are checked before anything is written"


def test_internal_symlink_is_allowed(tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        f = tarfile.TarInfo("d/real.txt")
        f.size = 1
        tf.addfile(f, io.BytesIO(b"r"))
        link = tarfile.TarInfo("d/alias.txt")
        link.type, link.linkname = tarfile.SYMTYPE, "real.txt"
        tf.addfile(link)
    (tmp_path / "a.tar").write_bytes(buf.getvalue())
    extract(tmp_path / "a.tar", tmp_path / "dest", progress=False)
    assert (tmp_path / "dest/d/alias.txt").read_bytes() == b"r"


def test_fetch_refuses_malicious_zip_end_to_end(server, tmp_path):
    base, st = server
    data = zip_bytes({"ok.txt": b"ok", "../../evil.txt": b"evil"})
    st.files["/bad.zip"] = data
    dest = tmp_path / "a" / "dest"
    with pytest.raises(UnsafeArchive):
        fetch_source(spec_for(base + "/bad.zip", data), dest, **FAST)
    assert not list(tmp_path.rglob("evil.txt"))
    assert not (dest / "ok.txt").exists() and not list(dest.glob(".*.extracted"))


@pytest.mark.parametrize("kind", ["credentialed", "registration", "manual"])
def test_non_direct_sources_print_their_steps(tmp_path, kind):
    spec = SourceSpec(
        name="needs-dua", format="dicom", layout=Layout(images=["*.dcm"]),
        homepage="https://example.org/data",
        access=Access(kind=kind, steps=["Create an account.", "Sign the data use agreement."]),
    )
    with pytest.raises(AccessRequired) as err:
        fetch_source(spec, tmp_path, **FAST)
    msg = str(err.value)
    assert f"needs {kind} access" in msg
    assert "1. Create an account." in msg and "2. Sign the data use agreement." in msg
    assert "https://example.org/data" in msg and "curate sources check needs-dua" in msg
    assert not list(tmp_path.iterdir())
    assert msg == access_steps(spec)


def test_direct_source_without_urls_says_so(tmp_path):
    spec = SourceSpec(name="nourl", format="dicom", layout=Layout(images=["*.dcm"]),
                      access=Access(kind="direct", steps=["Download it by hand."]))
    with pytest.raises(AccessRequired, match="no URLs"):
        fetch_source(spec, tmp_path, **FAST)


def test_fetch_command_uses_the_registry(tmp_path):
    from curate.model.recipe import load_source_registry
    from curate.sources.fetch import FetchError, fetch_command

    with pytest.raises(FetchError, match="unknown source 'no-such-source'"):
        fetch_command("no-such-source", tmp_path)
    gated = [s for s in load_source_registry().values()
             if s.access is not None and s.access.kind != "direct"]
    if not gated:
        pytest.skip("no declared source needs registration or credentials")
    with pytest.raises(AccessRequired) as err:
        fetch_command(gated[0].name, tmp_path)
    assert all(step in str(err.value) for step in gated[0].access.steps)
