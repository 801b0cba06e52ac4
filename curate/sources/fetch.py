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
import stat
import tarfile
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
_FILTER_ERROR = getattr(tarfile, "FilterError", ())  # Python >= 3.11.4
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


def _inside(dest: Path, rel: str) -> bool:
    """Whether dest/rel stays inside dest, resolving '..' textually (nothing exists yet)."""
    target = os.path.normpath(os.path.join(dest, rel))
    return target == str(dest) or target.startswith(str(dest) + os.sep)


def _check_name(dest: Path, name: str, archive: Path) -> None:
    if name.startswith(("/", "\\")) or PurePosixPath(name).is_absolute() or (
            len(name) > 1 and name[1] == ":"):
        raise UnsafeArchive(f"{archive.name}: member {name!r} has an absolute path; refused")
    if not _inside(dest, name.replace("\\", "/")):
        raise UnsafeArchive(f"{archive.name}: member {name!r} escapes the destination; refused")


def check_tar_member(m: tarfile.TarInfo, dest: Path, archive: Path) -> tarfile.TarInfo:
    """The member, or UnsafeArchive when it would land outside dest or is a device."""
    _check_name(dest, m.name, archive)
    if m.ischr() or m.isblk() or m.isfifo() or m.isdev():
        raise UnsafeArchive(f"{archive.name}: member {m.name!r} is a device or FIFO; refused")
    if m.issym():
        link = os.path.join(os.path.dirname(m.name), m.linkname)
        if os.path.isabs(m.linkname) or not _inside(dest, link):
            raise UnsafeArchive(f"{archive.name}: symlink {m.name!r} -> {m.linkname!r} "
                                "points outside the destination; refused")
    if m.islnk() and (os.path.isabs(m.linkname) or not _inside(dest, m.linkname)):
        raise UnsafeArchive(f"{archive.name}: hard link {m.name!r} -> {m.linkname!r} "
                            "points outside the destination; refused")
    return m


def check_zip(zf: zipfile.ZipFile, dest: Path, archive: Path) -> list[zipfile.ZipInfo]:
    infos = zf.infolist()
    for info in infos:
        _check_name(dest, info.filename, archive)
        if stat.S_ISLNK(info.external_attr >> 16):
            target = zf.read(info).decode("utf-8", "replace")
            link = os.path.join(os.path.dirname(info.filename), target)
            if os.path.isabs(target) or not _inside(dest, link):
                raise UnsafeArchive(f"{archive.name}: symlink {info.filename!r} -> {target!r} "
                                    "points outside the destination; refused")
    return infos


def extract(archive: Path, dest: Path, *, progress: bool = True) -> bool:
    """Extract archive into dest, refusing unsafe members; False when already done.

    Zip and plain tar archives are checked whole before anything is written; compressed
    tars are checked member by member in one streaming pass (a second decompression of a
    large archive costs minutes), so a refused one may leave earlier, safe members in dest.

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
    if kind == "zip":
        with zipfile.ZipFile(archive) as zf:
            infos = check_zip(zf, dest, archive)
            for info in tqdm(infos, desc=desc, disable=not progress, leave=False):
                zf.extract(info, dest)
    else:
        try:
            tf = tarfile.open(archive)
        except tarfile.TarError as exc:
            raise FetchError(f"{archive.name}: not a readable tar archive: {exc}") from exc
        with tf:
            if kind == "tar":  # headers only: check all, then write
                members = [check_tar_member(m, dest, archive) for m in tf.getmembers()]
            else:  # compressed: one streaming pass, each member checked before it is written
                members = (check_tar_member(m, dest, archive) for m in tf)
            kw = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            for m in tqdm(members, desc=desc, disable=not progress, leave=False):
                try:
                    tf.extract(m, dest, **kw)
                except _FILTER_ERROR as exc:
                    raise UnsafeArchive(f"{archive.name}: {exc}; refused") from exc
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
