"""The artifact store: good archives round-trip; malicious ones are refused and write nothing,
neither inside the store nor outside it."""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
from pathlib import Path

import pytest

from adapters.artifact_store import ArtifactNotFound, ArtifactStore, UnsafeArchive


def make_tar(entries: list[tuple[str, str, object]], *, compress: bool = False) -> bytes:
    """``(name, kind, payload)``: kind file (payload bytes), dir, symlink / hardlink (payload:
    target), chr (a device), fifo."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, kind, payload in entries:
            info = tarfile.TarInfo(name)
            if kind == "file":
                data = payload if isinstance(payload, bytes) else str(payload).encode()
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
                continue
            info.type = {"dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE,
                         "chr": tarfile.CHRTYPE, "fifo": tarfile.FIFOTYPE}[kind]
            if kind in ("symlink", "hardlink"):
                info.linkname = str(payload)
            if kind == "chr":
                info.devmajor, info.devminor = 1, 3
            tar.addfile(info)
    raw = buffer.getvalue()
    return gzip.compress(raw, compresslevel=1) if compress else raw


def chunks(data: bytes, size: int = 7000):
    """Like docker's get_archive: an iterator of byte chunks."""
    for i in range(0, len(data), size):
        yield data[i:i + size]


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(tmp_path / "store", max_bytes=1024 * 1024, max_entries=50)


def files_under(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*")) if path.exists() else []


def test_a_good_archive_is_stored_with_size_sha_and_entries_and_extracts_back(store, tmp_path):
    data = make_tar([("out", "dir", None), ("out/a.txt", "file", b"hello"), ("out/sub", "dir", None),
                     ("out/sub/b.txt", "file", b"world"), ("out/link", "symlink", "sub/b.txt"),
                     ("out/hard", "hardlink", "out/a.txt")])
    size, sha, entries = store.store_tar(chunks(data), "acct-1/inst-1/out.tar")
    stored = store.path_for("acct-1/inst-1/out.tar")
    assert stored.stat().st_size == size and hashlib.sha256(stored.read_bytes()).hexdigest() == sha
    assert entries == 6
    with store.open_artifact("acct-1/inst-1/out.tar") as handle, tarfile.open(fileobj=handle) as tar:
        assert "out/sub/b.txt" in tar.getnames()
    dest = tmp_path / "dest"
    names = store.extract_to("acct-1/inst-1/out.tar", dest)
    assert "out/a.txt" in names
    assert (dest / "out/a.txt").read_bytes() == b"hello"
    assert (dest / "out/link").read_bytes() == b"world"
    assert (dest / "out/hard").read_bytes() == b"hello"


def test_a_gzip_archive_is_accepted_and_stored_as_a_plain_tar(store):
    size, _sha, entries = store.store_tar(io.BytesIO(make_tar([("f.txt", "file", b"x")], compress=True)),
                                          "k/gz.tar")
    assert entries == 1 and size > 0
    with tarfile.open(store.path_for("k/gz.tar"), mode="r:") as tar:
        assert tar.getnames() == ["f.txt"]


def test_setuid_bits_and_owners_are_dropped(store):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo("tool")
        info.size, info.mode, info.uid, info.uname = 1, 0o4755, 1234, "someone"
        tar.addfile(info, io.BytesIO(b"x"))
    store.store_tar(io.BytesIO(buffer.getvalue()), "k/suid.tar")
    with tarfile.open(store.path_for("k/suid.tar")) as tar:
        member = tar.getmember("tool")
    assert member.mode == 0o755 and member.uid == 0 and member.uname == ""


MALICIOUS = {
    "dot-dot": [("ok.txt", "file", b"fine"), ("../escape.txt", "file", b"evil")],
    "dot-dot-inside": [("a/../../escape.txt", "file", b"evil")],
    "absolute": [("/tmp/escape.txt", "file", b"evil")],
    "symlink-escape": [("link", "symlink", "../../etc/passwd")],
    "symlink-absolute": [("link", "symlink", "/etc/passwd")],
    "symlink-then-write-through": [("d", "symlink", ".."), ("d/escape.txt", "file", b"evil")],
    "write-through-inner-symlink": [("sub", "dir", None), ("d", "symlink", "sub"), ("d/x.txt", "file", b"evil")],
    "symlink-chain-escape": [("a", "symlink", "."), ("b", "symlink", "a/..")],
    "hardlink-escape": [("hard", "hardlink", "../../etc/passwd")],
    "hardlink-absolute": [("hard", "hardlink", "/etc/passwd")],
    "hardlink-to-unknown": [("hard", "hardlink", "nothing-here")],
    "device-file": [("null", "chr", None)],
    "fifo": [("pipe", "fifo", None)],
    "duplicate": [("a.txt", "file", b"one"), ("a.txt", "file", b"two")],
}


@pytest.mark.parametrize("case", sorted(MALICIOUS))
def test_a_malicious_archive_is_refused_and_writes_nothing(store, tmp_path, case):
    before_outside = files_under(tmp_path)
    with pytest.raises(UnsafeArchive):
        store.store_tar(chunks(make_tar(MALICIOUS[case])), f"bad/{case}.tar")
    assert [p for p in files_under(store.root) if p.is_file()] == []
    assert [p for p in files_under(tmp_path) if p not in before_outside and p.is_file()] == []
    assert not (tmp_path.parent / "escape.txt").exists()


def test_a_compression_bomb_is_stopped_by_the_size_cap_while_streaming(tmp_path):
    store = ArtifactStore(tmp_path / "store", max_bytes=10 * 1024 * 1024)
    # 64 MB of zeros compress to about 64 KB: the header alone gives it away, before any copy.
    bomb = make_tar([("zeros", "file", bytes(64 * 1024 * 1024))], compress=True)
    assert len(bomb) < 1024 * 1024
    with pytest.raises(UnsafeArchive, match="above the limit"):
        store.store_tar(chunks(bomb, 65536), "bad/bomb.tar")
    # Many files each under the per-file cap but over the total.
    many = make_tar([(f"f{i}", "file", bytes(3 * 1024 * 1024)) for i in range(5)], compress=True)
    with pytest.raises(UnsafeArchive, match="add up to more than"):
        store.store_tar(chunks(many, 65536), "bad/many.tar")
    assert [p for p in files_under(store.root) if p.is_file()] == []


def test_the_default_cap_is_100_mb(tmp_path):
    store = ArtifactStore(tmp_path / "store")
    bomb = make_tar([("zeros", "file", bytes(101 * 1024 * 1024))], compress=True)
    with pytest.raises(UnsafeArchive):
        store.store_tar(chunks(bomb, 65536), "bad/bomb.tar")
    assert [p for p in files_under(store.root) if p.is_file()] == []


def test_too_many_entries_are_refused(store):
    with pytest.raises(UnsafeArchive, match="more than 50 entries"):
        store.store_tar(chunks(make_tar([(f"f{i}", "file", b"x") for i in range(51)])), "bad/entries.tar")
    assert [p for p in files_under(store.root) if p.is_file()] == []


def test_garbage_is_not_a_tar(store):
    with pytest.raises(UnsafeArchive):
        store.store_tar(io.BytesIO(b"this is not a tar" * 100), "bad/garbage.tar")


def test_keys_cannot_leave_the_store(store):
    for key in ("../x.tar", "/abs.tar", "a//b.tar", "a/../b.tar", ""):
        with pytest.raises(Exception, match="not a valid artifact key"):
            store.path_for(key)


def test_open_of_a_missing_key_is_not_found(store):
    with pytest.raises(ArtifactNotFound):
        store.open_artifact("nope/none.tar")


def test_extract_rechecks_a_stored_archive_replaced_on_disk(store, tmp_path):
    store.store_tar(chunks(make_tar([("a.txt", "file", b"ok")])), "k/x.tar")
    store.path_for("k/x.tar").write_bytes(make_tar([("link", "symlink", "../../../etc")]))
    dest = tmp_path / "dest"
    with pytest.raises(UnsafeArchive):
        store.extract_to("k/x.tar", dest)
    assert files_under(dest) == []


def test_extract_replaces_a_symlink_already_in_the_destination(store, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "a.txt").symlink_to(outside / "victim.txt")
    store.store_tar(chunks(make_tar([("a.txt", "file", b"ok")])), "k/y.tar")
    store.extract_to("k/y.tar", dest)
    assert (dest / "a.txt").read_bytes() == b"ok" and not (dest / "a.txt").is_symlink()
    assert not (outside / "victim.txt").exists()
