"""The real Docker engine in tests: a client, and a busybox image made locally.

No registry is reachable here, so the test image is ``docker import``-ed from a rootfs tar that
holds Debian's static busybox (``/bin/busybox``, from ``busybox-static``) with a link per applet
(``sh``, ``httpd``, ``wget``, ``sleep`` ...), an ``/etc/passwd`` with ``nobody`` (65534), and
``/tmp`` and ``/work``. The tag carries a hash of that content, so every test process builds it at
most once and concurrent builds of the same tag are harmless.

``docker_or_skip`` skips when no engine answers, except under ``CI=true`` where that is a failure
(the CI script starts ``dockerd``; ``make test`` does too, through ``scripts/test-services.sh``).

The fixtures the engine tests share: ``engine`` (a client for the module), ``image`` (the busybox
tag) and :func:`label_fixture` (a ``label`` value per test, whose objects are removed after it).
A test module uses them by naming them at module level (``engine, image = docker_support.engine,
docker_support.image``; ``label = docker_support.label_fixture(KEY, "containers", ...)``).
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import tarfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

BUSYBOX = Path("/bin/busybox")
IMAGE_REPOSITORY = "devops-test/busybox"
IN_CI = os.environ.get("CI", "").lower() == "true"
PASSWD = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
GROUP = "root:x:0:\nnogroup:x:65534:\n"


def docker_or_skip():
    """A connected ``docker.DockerClient``; skip (fail under CI) when there is no engine."""
    import docker

    try:
        client = docker.from_env(timeout=60)
        client.ping()
    except Exception as exc:  # noqa: BLE001 - any failure to reach the engine means the same
        message = f"no Docker engine answers ({type(exc).__name__}: {exc}); run scripts/test-services.sh"
        if IN_CI:
            pytest.fail(f"{message} (under CI=true a skipped Docker test is a failure)")
        pytest.skip(message)
    return client


def _applets() -> list[str]:
    out = subprocess.run([str(BUSYBOX), "--list"], check=True, capture_output=True, text=True).stdout
    return sorted({line.strip() for line in out.splitlines() if line.strip() and "/" not in line})


def _rootfs_tar(extra_files: dict[str, bytes] | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for directory, mode in (("bin", 0o755), ("etc", 0o755), ("tmp", 0o1777), ("work", 0o777),
                                ("root", 0o700), ("proc", 0o755), ("sys", 0o755), ("dev", 0o755)):
            info = tarfile.TarInfo(directory)
            info.type, info.mode = tarfile.DIRTYPE, mode
            tar.addfile(info)
        data = BUSYBOX.read_bytes()
        info = tarfile.TarInfo("bin/busybox")
        info.size, info.mode = len(data), 0o755
        tar.addfile(info, io.BytesIO(data))
        for applet in _applets():
            if applet == "busybox":
                continue
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type, link.linkname, link.mode = tarfile.SYMTYPE, "busybox", 0o777
            tar.addfile(link)
        files = {"etc/passwd": PASSWD.encode(), "etc/group": GROUP.encode(), **(extra_files or {})}
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(content), 0o644
            tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def busybox_image(client, *, changes: list[str] | None = None, extra_files: dict[str, bytes] | None = None) -> str:
    """The tag of a busybox image built by ``docker import`` (built once per content + changes).

    ``changes`` are Dockerfile instructions applied at import (``CMD``, ``ENV``, ``HEALTHCHECK``
    ...), as ``docker import --change`` takes them."""
    if not BUSYBOX.exists():
        message = "/bin/busybox is missing (apt-get install busybox-static)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    rootfs = _rootfs_tar(extra_files)
    digest = hashlib.sha256(rootfs + "\n".join(changes or []).encode()).hexdigest()[:12]
    tag = f"{IMAGE_REPOSITORY}:{digest}"
    try:
        client.images.get(tag)
        return tag
    except Exception:  # noqa: BLE001 - docker.errors.ImageNotFound, imported lazily
        pass
    command = ["docker", "import"]
    for change in ["CMD [\"/bin/sh\"]", *(changes or [])]:
        command += ["--change", change]
    command += ["-", tag]
    subprocess.run(command, input=rootfs, check=True, capture_output=True)
    return tag


# ---- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def engine():
    client = docker_or_skip()
    yield client
    client.close()


@pytest.fixture(scope="module")
def image(engine) -> str:
    return busybox_image(engine)


def _remove(engine, kind: str, selector: dict[str, list[str]]) -> None:
    if kind == "containers":
        for container in engine.containers.list(all=True, filters=selector):
            container.remove(force=True)
    elif kind == "volumes":
        for volume in engine.volumes.list(filters=selector):
            volume.remove(force=True)
    else:  # services, networks
        for item in getattr(engine, kind).list(filters=selector):
            item.remove()


def label_fixture(key: str, *kinds: str) -> Callable[..., Iterator[str]]:
    """A ``label`` fixture: a value unique to the test; afterwards every object of ``kinds``
    (services, containers, networks, volumes: in the order given) labelled ``key=<value>`` is removed."""
    @pytest.fixture
    def label(engine) -> Iterator[str]:
        value = uuid.uuid4().hex[:10]
        yield value
        selector = {"label": [f"{key}={value}"]}
        for kind in kinds:
            _remove(engine, kind, selector)

    return label
