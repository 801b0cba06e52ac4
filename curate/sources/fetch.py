"""Fetching declared public sources: resumable, verified downloads and safe extraction.

Public datasets are tens of gigabytes served by research mirrors that drop connections,
so a download must resume where it stopped (HTTP Range into a `.part` file) rather than
start over, and must prove it got the published bytes (SHA-256, size) before anything
is built from it. Archives come from third parties, so extraction refuses any member that
would land outside the destination instead of trusting the archive. Sources that need a
person (registration, credentialing, a data use agreement) are never scraped: curate
prints the declared steps and stops.

Only the standard library does the HTTP (urllib), so no dependency is added for it.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import stat
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from curate.ingest.files import list_images
from curate.model.errors import CurateError
from curate.model.recipe import Download, SourceSpec, load_source_registry

CHUNK = 1 << 20
COMPRESSED_MAGIC = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00")  # gzip, bzip2, xz
OTHER_ARCHIVES = {b"7z\xbc\xaf\x27\x1c": "7z", b"Rar!": "rar", b"\x28\xb5\x2f\xfd": "zstd"}
USER_AGENT = "curate-fetch/0.1 (research data download; python-urllib)"


class FetchError(CurateError):
    """A source could not be fetched."""


class AccessRequired(FetchError):
    """The source needs a person to register, sign or download; curate will not do it."""


class DownloadFailed(FetchError):
    """The server refused, or kept failing after every retry."""


class ChecksumMismatch(FetchError):
    """The downloaded bytes are not the published ones; the file is kept as `.corrupt`."""


class SizeMismatch(FetchError):
    """The downloaded file's size differs from the declared size."""


class UnsafeArchive(FetchError):
    """An archive member would be written outside the destination (or is a device)."""


class _Retryable(Exception):
    """Internal: a transient failure (connection dropped, 5xx) worth another attempt."""


@dataclass
class FileResult:
    url: str
    path: str
    size: int
    sha256: str
    verified: bool  # the declared sha256 was checked and matched
    downloaded: bool  # False when a complete, verified file was already there
    resumed_from: int = 0  # bytes already in the .part file when the download started
    extracted_to: str | None = None
    extracted_now: bool = False
    note: str | None = None  # e.g. an archive format curate does not extract


@dataclass
class FetchReport:
    source: str
    dest: str
    files: list[FileResult] = field(default_factory=list)
    root: str | None = None  # where the layout's image globs match, when found

    def summary(self) -> str:
        lines = [f"{self.source}: {len(self.files)} file(s) in {self.dest}"]
        for f in self.files:
            state = "downloaded" if f.downloaded else "already present"
            if f.resumed_from:
                state += f" (resumed at {f.resumed_from} bytes)"
            check = "sha256 verified" if f.verified else f"sha256 {f.sha256} (not declared)"
            lines.append(f"  {Path(f.path).name}: {f.size} bytes, {state}, {check}")
            if f.extracted_to:
                how = "extracted" if f.extracted_now else "already extracted"
                lines.append(f"    {how} into {f.extracted_to}")
            if f.note:
                lines.append(f"    note: {f.note}")
        lines.append(f"  data root: {self.root}" if self.root else
                     "  data root: no folder under dest matches the layout's image globs")
        return "\n".join(lines)


def access_steps(spec: SourceSpec) -> str:
    """The declared human steps, numbered, with homepage and licence, for error messages."""
    acc = spec.access
    lines = [f"source {spec.name!r} needs {acc.kind if acc else 'manual'} access:"]
    for i, step in enumerate(acc.steps if acc else [], 1):
        lines.append(f"  {i}. {step}")
    if not acc or not acc.steps:
        lines.append("  (no steps declared; see the homepage)")
    if spec.homepage:
        lines.append(f"  homepage: {spec.homepage}")
    if spec.license:
        lines.append(f"  licence: {spec.license.name}")
    lines.append("Then point a recipe at the local copy (source: NAME, path: DIR) and check it "
                 f"with: curate sources check {spec.name} DIR")
    return "\n".join(lines)


def fetch_source(spec: SourceSpec, dest: Path, *, progress: bool = True, retries: int = 5,
                 backoff: float = 1.0, timeout: float = 60.0) -> FetchReport:
    """Download, verify and extract every declared URL of a direct-access source into dest.

    Re-running is cheap: verified files and extracted archives (marker files) are reused.
    """
    acc = spec.access
    if acc is None or acc.kind != "direct":
        raise AccessRequired(access_steps(spec))
    if not acc.urls:
        raise AccessRequired(f"source {spec.name!r} declares direct access but no URLs.\n"
                             + access_steps(spec))
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    report = FetchReport(spec.name, str(dest))
    for i, item in enumerate(acc.urls):
        result = download(item, dest / _file_name(item.url, i, spec.name), progress=progress,
                          retries=retries, backoff=backoff, timeout=timeout)
        kind = archive_format(Path(result.path))
        if item.extract and kind in OTHER_ARCHIVES.values():
            result.note = (f"{kind} archives are not extracted by curate; extract "
                           f"{Path(result.path).name} into {dest} by hand")
        elif item.extract and kind:
            result.extracted_now = extract(Path(result.path), dest, progress=progress)
            result.extracted_to = str(dest)
        report.files.append(result)
    found = find_root(spec, dest)
    report.root = str(found) if found else None
    return report


def _file_name(url: str, index: int, source: str) -> str:
    """The URL's last path segment as a plain file name; SOURCE-INDEX for API-style URLs.

    The name must not depend on the response (Content-Disposition), or a resumed
    download could not find its .part file before asking the server.
    """
    name = PurePosixPath(urllib.parse.unquote(urllib.parse.urlsplit(url).path)).name
    name = name.replace("\\", "_").strip(". ")
    return name if "." in name else f"{source}-{index}"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _digest_note(path: Path) -> Path:
    return path.with_name(f".{path.name}.sha256")


def _cached_digest(path: Path) -> str | None:
    """The sha256 recorded when this very file (same size and mtime) was verified."""
    try:
        note = json.loads(_digest_note(path).read_text())
        st = path.stat()
        return note["sha256"] if [note["size"], note["mtime_ns"]] == [st.st_size,
                                                                     st.st_mtime_ns] else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _remember_digest(path: Path, digest: str) -> None:
    """Record the digest so that a re-run need not hash tens of gigabytes again."""
    st = path.stat()
    _digest_note(path).write_text(json.dumps(
        {"sha256": digest, "size": st.st_size, "mtime_ns": st.st_mtime_ns}))


def _verify(item: Download, path: Path) -> tuple[str, bool]:
    """Check declared size and sha256; a bad file goes to NAME.corrupt so it is never reused."""
    size = path.stat().st_size
    final = path.with_name(path.name.removesuffix(".part"))
    corrupt = final.with_name(final.name + ".corrupt")
    if item.size is not None and size != item.size:
        os.replace(path, corrupt)
        raise SizeMismatch(f"{item.url}: got {size} bytes, the source declares {item.size}; "
                           f"kept as {corrupt}")
    digest = _cached_digest(path) or sha256_file(path)
    if item.sha256 and digest.lower() != item.sha256.lower():
        os.replace(path, corrupt)
        raise ChecksumMismatch(f"{item.url}: sha256 {digest} differs from the declared "
                               f"{item.sha256.lower()}; the file is kept as {corrupt} and will "
                               "not be used (delete it, or fix the declared checksum)")
    return digest, bool(item.sha256)


def download(item: Download, target: Path, *, progress: bool = True, retries: int = 5,
             backoff: float = 1.0, timeout: float = 60.0) -> FileResult:
    """Fetch one URL into target via target.part, resuming, retrying and verifying."""
    part = target.with_name(target.name + ".part")
    if target.exists():
        try:
            digest, verified = _verify(item, target)
            return FileResult(item.url, str(target), target.stat().st_size, digest, verified,
                              downloaded=False)
        except (ChecksumMismatch, SizeMismatch):
            pass  # moved aside as .corrupt by _verify; fetch it again
    resumed_from = part.stat().st_size if part.exists() else 0
    failures, best = 0, resumed_from
    while True:
        try:
            _transfer(item.url, part, progress=progress, timeout=timeout)
            break
        except _Retryable as exc:
            have = part.stat().st_size if part.exists() else 0
            failures = 1 if have > best else failures + 1  # progress resets the count
            best = max(best, have)
            if failures > retries:
                raise DownloadFailed(f"{item.url}: gave up after {retries} retries: {exc}; "
                                     f"{part} is kept and the next run resumes it") from exc
            time.sleep(backoff * 2 ** (failures - 1))
    digest, verified = _verify(item, part)
    os.replace(part, target)
    _remember_digest(target, digest)
    return FileResult(item.url, str(target), target.stat().st_size, digest, verified,
                      downloaded=True, resumed_from=resumed_from)


def _transfer(url: str, part: Path, *, progress: bool, timeout: float) -> None:
    """One attempt: ask for the bytes after what part holds; append, or restart on 200."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        req = urllib.request.Request(url, headers=headers)
        resp = urllib.request.urlopen(req, timeout=timeout)
    except ValueError as exc:  # not a URL urllib can open
        raise DownloadFailed(f"{url}: {exc}") from exc
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:
            total = _range_total(exc.headers.get("Content-Range"))
            if total == offset:
                return  # the .part already holds the whole file
            part.unlink()  # the .part is longer than the file: start again
            raise _Retryable(f"HTTP 416 at offset {offset}") from exc
        if exc.code >= 500 or exc.code in (408, 429):
            raise _Retryable(f"HTTP {exc.code}") from exc
        raise DownloadFailed(f"{url}: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        raise _Retryable(str(exc)) from exc
    with resp:
        if resp.status == 206:
            start = _range_start(resp.headers.get("Content-Range"))
            if start != offset:
                part.unlink(missing_ok=True)
                raise _Retryable(f"server answered a different range ({start}, not {offset})")
            mode, done = "ab", offset
        else:  # 200: the server ignored Range; the body is the whole file
            mode, done = "wb", 0
        length = resp.headers.get("Content-Length")
        expected = done + int(length) if length and length.isdigit() else None
        bar = tqdm(total=expected, initial=done, unit="B", unit_scale=True, unit_divisor=1024,
                   desc=part.name.removesuffix(".part"), disable=not progress)
        try:
            with open(part, mode) as f:
                while True:
                    try:
                        chunk = resp.read(CHUNK)
                    except (OSError, http.client.HTTPException) as exc:
                        raise _Retryable(f"connection lost at {done} bytes: {exc}") from exc
                    if not chunk:
                        break
                    f.write(chunk)
                    done += len(chunk)
                    bar.update(len(chunk))
        finally:
            bar.close()
    if expected is not None and done < expected:
        raise _Retryable(f"connection closed at {done} of {expected} bytes")


def _range_start(header: str | None) -> int | None:
    try:
        return int(header.split()[1].split("-")[0])  # "bytes 100-199/200"
    except (AttributeError, IndexError, ValueError):
        return None


def _range_total(header: str | None) -> int | None:
    try:
        return int(header.rsplit("/", 1)[1])  # "bytes */200"
    except (AttributeError, IndexError, ValueError):
        return None


def archive_format(path: Path) -> str | None:
    """'zip', 'tar', 'tar-compressed', '7z'/'rar'/'zstd', or None, from the bytes, not the name.

    API-style URLs give names without extensions, and a .nii.gz is gzip but no archive.
    """
    with open(path, "rb") as f:
        head = f.read(8)
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "zip"
    for magic, kind in OTHER_ARCHIVES.items():
        if head.startswith(magic):
            return kind
    try:
        if not tarfile.is_tarfile(path):
            return None
    except (OSError, EOFError, tarfile.TarError):
        return None
    return "tar-compressed" if head.startswith(COMPRESSED_MAGIC) else "tar"


def _inside(root: str, path: str) -> bool:
    """Whether path (already resolved) is root or below it."""
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _check_name(name: str, archive: Path) -> None:
    """Refuse absolute names and any '..' component, before anything is resolved."""
    norm = name.replace("\\", "/")
    if norm.startswith("/") or PurePosixPath(norm).is_absolute() or (
            len(norm) > 1 and norm[1] == ":"):
        raise UnsafeArchive(f"{archive.name}: member {name!r} has an absolute path; refused")
    if ".." in PurePosixPath(norm).parts:
        raise UnsafeArchive(f"{archive.name}: member {name!r} has a '..' component and "
                            "escapes the destination; refused")


def _resolved_target(root: str, name: str, archive: Path) -> str:
    """Where member `name` lands below root, following every link already extracted.

    The parent folder is resolved on disk (os.path.realpath follows symlinks written by
    earlier members, so a chain like `a -> .`, `a/e -> ..` is seen for what it is); the
    result must stay below root, else UnsafeArchive.
    """
    _check_name(name, archive)
    rel = PurePosixPath(name.replace("\\", "/"))
    parts = [p for p in rel.parts if p not in ("", ".")]
    if not parts:
        return root
    parent = os.path.realpath(os.path.join(root, *parts[:-1]))
    target = os.path.join(parent, parts[-1])
    if not _inside(root, parent) or not _inside(root, target):
        raise UnsafeArchive(f"{archive.name}: member {name!r} escapes the destination "
                            "(through a link extracted before it); refused")
    return target


def _link_target(root: str, where: str, linkname: str, what: str, name: str,
                 archive: Path) -> str:
    """The resolved path a link would point at; UnsafeArchive when outside root."""
    if not linkname or os.path.isabs(linkname) or linkname.startswith(("/", "\\")) or (
            len(linkname) > 1 and linkname[1] == ":"):
        raise UnsafeArchive(f"{archive.name}: {what} {name!r} -> {linkname!r} "
                            "points outside the destination; refused")
    resolved = os.path.realpath(os.path.join(where, linkname))
    if not _inside(root, resolved):
        raise UnsafeArchive(f"{archive.name}: {what} {name!r} -> {linkname!r} "
                            "points outside the destination; refused")
    return resolved


def check_tar_member(m: tarfile.TarInfo, dest: Path, archive: Path) -> tarfile.TarInfo:
    """The member, or UnsafeArchive for a bad name, a device or a link out of dest.

    A check of the header alone; extraction (`extract`) checks again against what is on
    disk when the member is written, which also catches chains of links.
    """
    _check_name(m.name, archive)
    if not (m.isreg() or m.isdir() or m.issym() or m.islnk()):
        raise UnsafeArchive(f"{archive.name}: member {m.name!r} is a device or FIFO; refused")
    root = os.path.realpath(dest)
    if m.issym():
        where = os.path.join(root, os.path.dirname(m.name))
        _link_target(root, os.path.normpath(where), m.linkname, "symlink", m.name, archive)
    if m.islnk():
        _check_name(m.linkname, archive)
        _link_target(root, root, m.linkname, "hard link", m.name, archive)
    return m


def _clear(path: str) -> None:
    """Remove what is at path (a file, link or folder) so a member can take its place."""
    if os.path.islink(path) or (os.path.lexists(path) and not os.path.isdir(path)):
        os.unlink(path)
    elif os.path.isdir(path):
        shutil.rmtree(path)


def _write_tar_member(tf: tarfile.TarFile, m: tarfile.TarInfo, root: str,
                      archive: Path) -> None:
    """Write one checked member below root, on our own terms (no tarfile filter needed)."""
    check_tar_member(m, Path(root), archive)
    target = _resolved_target(root, m.name, archive)
    if target == root:
        return
    if m.isdir():
        if os.path.lexists(target) and not os.path.isdir(target) or os.path.islink(target):
            _clear(target)
        os.makedirs(target, exist_ok=True)
        os.chmod(target, 0o755)
        return
    os.makedirs(os.path.dirname(target), exist_ok=True)
    if m.issym():
        _link_target(root, os.path.dirname(target), m.linkname, "symlink", m.name, archive)
        _clear(target)
        os.symlink(m.linkname, target)
        return
    if m.islnk():
        source = _link_target(root, root, m.linkname, "hard link", m.name, archive)
        if not os.path.isfile(source):
            raise UnsafeArchive(f"{archive.name}: hard link {m.name!r} -> {m.linkname!r} "
                                "does not name a file extracted before it; refused")
        _clear(target)
        shutil.copyfile(source, target)
        return
    _clear(target)
    src = tf.extractfile(m)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0),
                 0o644 | (0o111 if m.mode & 0o100 else 0))
    with os.fdopen(fd, "wb") as out:
        if src is not None:
            shutil.copyfileobj(src, out, CHUNK)
    try:
        os.utime(target, (m.mtime, m.mtime))
    except (OverflowError, OSError, ValueError):
        pass


def check_zip(zf: zipfile.ZipFile, dest: Path, archive: Path) -> list[zipfile.ZipInfo]:
    """Every member, or UnsafeArchive for a bad name or a symlink out of dest."""
    root = os.path.realpath(dest)
    infos = zf.infolist()
    for info in infos:
        _check_name(info.filename, archive)
        if stat.S_ISLNK(info.external_attr >> 16):
            target = zf.read(info).decode("utf-8", "replace")
            where = os.path.normpath(os.path.join(root, os.path.dirname(info.filename)))
            _link_target(root, where, target, "symlink", info.filename, archive)
    return infos


def _check_links(root: str, archive: Path) -> None:
    """After extraction: no symlink in the tree may resolve outside root."""
    for d, dirs, files in os.walk(root):
        for n in dirs + files:
            p = os.path.join(d, n)
            if os.path.islink(p) and not _inside(root, os.path.realpath(p)):
                rel = os.path.relpath(p, root)
                raise UnsafeArchive(f"{archive.name}: symlink {rel!r} -> {os.readlink(p)!r} "
                                    "points outside the destination; refused")


def _merge(src: str, dst: str) -> None:
    """Move src's entries into dst (same file system); folders merge, the rest replace."""
    for n in os.listdir(src):
        s, d = os.path.join(src, n), os.path.join(dst, n)
        s_dir = os.path.isdir(s) and not os.path.islink(s)
        if s_dir and os.path.isdir(d) and not os.path.islink(d):
            _merge(s, d)
            continue
        if os.path.lexists(d):
            _clear(d)
        os.replace(s, d)


def extract(archive: Path, dest: Path, *, progress: bool = True) -> bool:
    """Extract archive into dest, refusing unsafe members; False when already done.

    Members are written into a temporary folder beside dest, each one checked against
    the resolved path it would land at (following links written by earlier members), so
    the check does not depend on Python's tarfile `filter="data"` (3.11.4+). Only when
    the whole archive is written and its links all stay inside is the folder moved into
    dest; a refused archive leaves nothing in dest.

    A marker file (dest/.NAME.extracted, holding the archive's size and mtime) makes a
    re-run skip the work; an interrupted extraction leaves no marker and is redone.
    """
    dest = Path(os.path.realpath(dest))
    dest.mkdir(parents=True, exist_ok=True)
    marker = dest / f".{archive.name}.extracted"
    st = archive.stat()
    ident = {"archive": archive.name, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    if marker.exists():
        try:
            if json.loads(marker.read_text()) == ident:
                return False
        except ValueError:
            pass
    desc, kind = f"extract {archive.name}", archive_format(archive)
    if kind not in ("zip", "tar", "tar-compressed"):
        raise FetchError(f"{archive.name}: not a zip or tar archive ({kind or 'unknown format'})")
    tmp = tempfile.mkdtemp(prefix=f".{dest.name}.extracting-", dir=dest.parent)
    root = os.path.realpath(tmp)
    try:
        if kind == "zip":
            with zipfile.ZipFile(archive) as zf:
                infos = check_zip(zf, Path(root), archive)
                for info in tqdm(infos, desc=desc, disable=not progress, leave=False):
                    _resolved_target(root, info.filename, archive)
                    zf.extract(info, root)
        else:
            try:
                tf = tarfile.open(archive)
            except tarfile.TarError as exc:
                raise FetchError(f"{archive.name}: not a readable tar archive: {exc}") from exc
            with tf:
                for m in tqdm(tf, desc=desc, disable=not progress, leave=False):
                    _write_tar_member(tf, m, root, archive)
        _check_links(root, archive)
        _merge(root, str(dest))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    marker.write_text(json.dumps(ident))
    return True


def find_root(spec: SourceSpec, dest: Path, depth: int = 2) -> Path | None:
    """The folder (dest or one up to `depth` levels below) where the image globs match."""
    level = [Path(dest)]
    for _ in range(depth + 1):
        for d in level:
            if list_images(spec, d):
                return d
        level = [c for d in level for c in sorted(d.iterdir())
                 if c.is_dir() and not c.name.startswith(".")][:50]
    return None


def fetch_command(name: str, dest: str | Path) -> str:
    """`curate sources fetch NAME DEST`: fetch a declared source; returns the report text."""
    registry = load_source_registry()
    if name not in registry:
        raise FetchError(f"unknown source {name!r}; declared: {', '.join(sorted(registry))}")
    return fetch_source(registry[name], Path(dest)).summary()


__all__ = [
    "AccessRequired", "ChecksumMismatch", "DownloadFailed", "FetchError", "FetchReport",
    "FileResult", "SizeMismatch", "UnsafeArchive", "access_steps", "check_tar_member",
    "archive_format", "check_zip", "download", "extract", "fetch_command", "fetch_source", "find_root",
]
