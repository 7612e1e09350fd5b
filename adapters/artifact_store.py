"""The artifact store: checked tar archives in a local directory (``settings.resolved_artifact_dir``).

An artifact is always a tar. :meth:`ArtifactStore.store_tar` reads the incoming archive as a
stream (plain, gzip, bzip2 or xz), checks every entry while it copies it into a normalised plain
tar under a temporary name, and renames that into place only when the whole archive passed; a
refused archive leaves nothing behind. :meth:`ArtifactStore.extract_to` applies the same checks
again (a stored file could have been replaced on disk) and Python's ``data`` extraction filter.

The rules (``UnsafeArchive`` names the entry that broke one):

- names are relative and have no ``..`` component (``./`` prefixes are dropped);
- symbolic links are allowed only when their target is relative, stays inside the archive root
  and does not pass through another symbolic link of the archive (``a -> .`` plus ``b -> a/..``
  would escape when extracted, although ``b``'s text alone looks harmless); no entry may have
  a symbolic link among its parent directories;
- hard links must name a regular file that appears earlier in the same archive;
- no device files, FIFOs or sparse files; no duplicate names;
- at most ``max_entries`` entries, ``max_entry_bytes`` per file and ``max_bytes`` of file data in
  all; sizes are checked against each header before any data is read and against the bytes
  actually copied, so a compression bomb stops at the cap, having written only a temp file;
- modes lose setuid, setgid and sticky bits; owners become 0 (the stored tar is normalised).

Exceptions: ``ArtifactError`` is the base; ``UnsafeArchive`` (a rule above, including the caps)
and ``ArtifactNotFound`` (no such key) derive from it.
"""

from __future__ import annotations

import hashlib
import io
import os
import posixpath
import re
import tarfile
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any, NamedTuple

from settings import Settings

DEFAULT_MAX_BYTES = 100 * 1024 * 1024
DEFAULT_MAX_ENTRIES = 10_000
COPY_CHUNK = 1024 * 1024
# Raw input allowed beyond the file data: headers, PAX records and padding of the entries.
HEADER_ALLOWANCE_PER_ENTRY = 3 * 512
_KEY_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")


class ArtifactError(Exception):
    """Base of the artifact store's errors."""


class UnsafeArchive(ArtifactError):
    """The archive breaks a rule of the store (see the module docstring); nothing was written."""


class ArtifactNotFound(ArtifactError):
    """No artifact is stored under that key."""


class StoredTar(NamedTuple):
    size: int
    sha256: str
    entries: int


class _ChunkReader(io.RawIOBase):
    """A file object over an iterable of byte chunks (what ``docker``'s ``get_archive`` yields),
    refusing to read more than ``limit`` bytes in all."""

    def __init__(self, source: Iterable[bytes] | IO[bytes], limit: int) -> None:
        self._file = source if hasattr(source, "read") else None
        self._chunks = None if self._file is not None else iter(source)  # type: ignore[arg-type]
        self._buffer = b""
        self._limit = limit
        self.consumed = 0

    def readable(self) -> bool:
        return True

    def readinto(self, target: Any) -> int:
        wanted = len(target)
        if self._file is not None:
            data = self._file.read(wanted)  # type: ignore[union-attr]
        else:
            while not self._buffer:
                try:
                    self._buffer = bytes(next(self._chunks))  # type: ignore[arg-type]
                except StopIteration:
                    return 0
            data, self._buffer = self._buffer[:wanted], self._buffer[wanted:]
        self.consumed += len(data)
        if self.consumed > self._limit:
            raise UnsafeArchive(f"the archive is larger than the store's limit of {_size_text(self._limit)}")
        target[: len(data)] = data
        return len(data)


def _size_text(size: int) -> str:
    return f"{size / (1024 * 1024):g} MB" if size >= 1024 * 1024 else f"{size} bytes"


def _clean_name(name: str) -> str:
    """The entry's normalised relative name, or UnsafeArchive."""
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name) or "\\" in name:
        raise UnsafeArchive(f"entry {name!r} has an absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchive(f"entry {name!r} has a '..' component")
    if "\x00" in name:
        raise UnsafeArchive(f"entry {name!r} has a NUL character")
    return "/".join(parts)


def _parents(name: str) -> Iterator[str]:
    parts = name.split("/")
    for i in range(1, len(parts)):
        yield "/".join(parts[:i])


class _Checker:
    """The rules of the module docstring, applied entry by entry; ``finish`` runs the checks
    that need the whole archive (links through links)."""

    def __init__(self, max_bytes: int, max_entries: int, max_entry_bytes: int) -> None:
        self.max_bytes, self.max_entries, self.max_entry_bytes = max_bytes, max_entries, max_entry_bytes
        self.names: set[str] = set()
        self.files: set[str] = set()
        self.symlinks: dict[str, str] = {}
        self.total = 0
        self.entries = 0

    def check(self, member: tarfile.TarInfo) -> str:
        self.entries += 1
        if self.entries > self.max_entries:
            raise UnsafeArchive(f"the archive has more than {self.max_entries} entries")
        name = _clean_name(member.name)
        if not name:
            if member.isdir():
                return ""
            raise UnsafeArchive(f"entry {member.name!r} has no name")
        if name in self.names:
            raise UnsafeArchive(f"entry {name!r} appears twice")
        if member.ischr() or member.isblk():
            raise UnsafeArchive(f"entry {name!r} is a device file")
        if member.isfifo():
            raise UnsafeArchive(f"entry {name!r} is a FIFO")
        if member.type == tarfile.GNUTYPE_SPARSE or member.issparse():
            raise UnsafeArchive(f"entry {name!r} is a sparse file")
        if not (member.isreg() or member.isdir() or member.issym() or member.islnk()):
            raise UnsafeArchive(f"entry {name!r} has an unsupported type {member.type!r}")
        if member.issym():
            target = member.linkname
            if not target or target.startswith("/"):
                raise UnsafeArchive(f"symbolic link {name!r} points to an absolute path {target!r}")
            resolved = posixpath.normpath(posixpath.join(posixpath.dirname(name), target))
            if resolved == ".." or resolved.startswith("../"):
                raise UnsafeArchive(f"symbolic link {name!r} points outside the archive ({target!r})")
            self.symlinks[name] = target
        if member.islnk():
            target = _clean_name(member.linkname)
            if target not in self.files:
                raise UnsafeArchive(f"hard link {name!r} must name a file earlier in the archive, "
                                    f"not {member.linkname!r}")
        if member.isreg():
            if member.size > self.max_entry_bytes:
                raise UnsafeArchive(f"entry {name!r} is {_size_text(member.size)}, above the limit of "
                                    f"{_size_text(self.max_entry_bytes)} per file")
            self.total += member.size
            if self.total > self.max_bytes:
                raise UnsafeArchive(f"the archive's files add up to more than {_size_text(self.max_bytes)}")
            self.files.add(name)
        self.names.add(name)
        return name

    def finish(self) -> None:
        links = self.symlinks
        for name in sorted(self.names):
            through = next((p for p in _parents(name) if p in links), None)
            if through is not None:
                raise UnsafeArchive(f"entry {name!r} is inside the symbolic link {through!r}")
        for name, target in links.items():
            # Walk the target as the kernel would, refusing to step through another link.
            path = posixpath.dirname(name)
            for part in target.split("/"):
                if part in ("", "."):
                    continue
                if path in links:
                    raise UnsafeArchive(f"symbolic link {name!r} points through another link {path!r}")
                path = posixpath.dirname(path) if part == ".." else posixpath.join(path, part)
                if path.startswith(".."):
                    raise UnsafeArchive(f"symbolic link {name!r} points outside the archive ({target!r})")


class ArtifactStore:
    """Checked tars under ``root``, addressed by a relative ``key`` of safe path parts."""

    def __init__(self, root: Path, *, max_bytes: int = DEFAULT_MAX_BYTES, max_entries: int = DEFAULT_MAX_ENTRIES,
                 max_entry_bytes: int | None = None) -> None:
        self.root = Path(root)
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self.max_entry_bytes = max_entry_bytes if max_entry_bytes is not None else max_bytes

    @classmethod
    def from_settings(cls, settings: Settings) -> ArtifactStore:
        return cls(settings.resolved_artifact_dir)

    def path_for(self, key: str) -> Path:
        parts = key.split("/")
        if not parts or not all(_KEY_PART.match(p) for p in parts):
            raise ArtifactError(f"{key!r} is not a valid artifact key")
        return self.root.joinpath(*parts)

    def _checker(self) -> _Checker:
        return _Checker(self.max_bytes, self.max_entries, self.max_entry_bytes)

    def store_tar(self, stream: Iterable[bytes] | IO[bytes], key: str) -> StoredTar:
        """Check the tar in ``stream`` while copying it, then store it under ``key`` (replacing
        what was there, so a retried copy is harmless). Returns its size, sha256 and entry count;
        raises UnsafeArchive, having written nothing, when a rule is broken."""
        final = self.path_for(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        temp = final.parent / f".tmp-{uuid.uuid4().hex}"
        limit = self.max_bytes + (self.max_entries + 2) * HEADER_ALLOWANCE_PER_ENTRY
        reader = io.BufferedReader(_ChunkReader(stream, limit), buffer_size=COPY_CHUNK)
        checker = self._checker()
        try:
            with open(temp, "wb") as raw, tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as out:
                try:
                    source = tarfile.open(fileobj=reader, mode="r|*")  # noqa: SIM115 - closed below
                except tarfile.TarError as exc:
                    raise UnsafeArchive(f"not a tar archive: {exc}") from None
                with source:
                    try:
                        for member in source:
                            name = checker.check(member)
                            if not name:
                                continue
                            clean = _normalised(member, name)
                            if member.isreg():
                                data = source.extractfile(member)
                                assert data is not None
                                out.addfile(clean, _Counted(data, member.size, name))
                            else:
                                out.addfile(clean)
                    except (tarfile.TarError, EOFError) as exc:
                        raise UnsafeArchive(f"the archive is damaged: {exc}") from None
                checker.finish()
                out.close()
                raw.flush()
                os.fsync(raw.fileno())
            digest = hashlib.sha256()
            with open(temp, "rb") as done:
                for block in iter(lambda: done.read(COPY_CHUNK), b""):
                    digest.update(block)
            size = temp.stat().st_size
            os.replace(temp, final)
        finally:
            temp.unlink(missing_ok=True)
        return StoredTar(size=size, sha256=digest.hexdigest(), entries=checker.entries)

    def open_artifact(self, key: str) -> IO[bytes]:
        """The stored tar, for downloads."""
        path = self.path_for(key)
        try:
            return open(path, "rb")  # noqa: SIM115 - the caller closes it
        except FileNotFoundError:
            raise ArtifactNotFound(f"no artifact is stored under {key!r}") from None

    def delete(self, key: str) -> None:
        self.path_for(key).unlink(missing_ok=True)

    def extract_to(self, key: str, dest_dir: Path) -> list[str]:
        """Unpack the artifact into ``dest_dir`` (created if missing), checking it again first;
        returns the names written. Refused archives write nothing."""
        dest = Path(dest_dir)
        checker = self._checker()
        with self.open_artifact(key) as handle, tarfile.open(fileobj=handle, mode="r:") as tar:
            members = []
            try:
                for member in tar:
                    name = checker.check(member)
                    if name:
                        members.append((member, name))
            except tarfile.TarError as exc:
                raise UnsafeArchive(f"the stored archive is damaged: {exc}") from None
            checker.finish()
            dest.mkdir(parents=True, exist_ok=True)
            for member, name in members:
                target = dest / name
                if target.is_symlink() or (target.exists() and not target.is_dir() and member.isdir()):
                    # What is already there must not redirect the write (a link left by an
                    # earlier step, say): replace it.
                    target.unlink()
                member.name = name
                try:
                    tar.extract(member, dest, filter="data")
                except (tarfile.FilterError, OSError) as exc:
                    raise UnsafeArchive(f"entry {name!r} cannot be extracted safely: {exc}") from None
        return [name for _, name in members]


def _normalised(member: tarfile.TarInfo, name: str) -> tarfile.TarInfo:
    clean = tarfile.TarInfo(name)
    clean.type = member.type
    clean.mode = member.mode & 0o777
    clean.mtime = int(member.mtime) if member.mtime else 0
    clean.uid = clean.gid = 0
    clean.uname = clean.gname = ""
    if member.isreg():
        clean.size = member.size
    elif member.issym():
        clean.linkname = member.linkname
    elif member.islnk():
        clean.linkname = _clean_name(member.linkname)
    return clean


class _Counted(io.RawIOBase):
    """A member's data, refusing to yield more than its header said (tarfile copies exactly
    ``size`` bytes; this guards the promise)."""

    def __init__(self, source: IO[bytes], size: int, name: str) -> None:
        self._source, self._left, self._name = source, size, name

    def readable(self) -> bool:
        return True

    def readinto(self, target: Any) -> int:
        if self._left <= 0:
            return 0
        data = self._source.read(min(len(target), self._left))
        if not data:
            raise UnsafeArchive(f"entry {self._name!r} is shorter than its header says")
        self._left -= len(data)
        target[: len(data)] = data
        return len(data)

