"""Run workspaces: who owns them, who a step runs as, and how long they live (issue 10 §1, §7).

Rules (the README's "Security model" repeats them):

* A worker running as root runs the shell steps of account N as uid/gid
  ``settings.step_uid_base + N`` with no supplementary groups, and a container step as the same
  uid:gid unless its template or ``with.user`` names a user. A worker that is not root has no
  one to drop to: steps run as the worker's own user.
* ``<workspace root>/run-<id>`` is created 0700 and handed to the step user before each step
  (``hand_over``: an fd-based walk that never follows a link), so what the worker wrote there
  (a checkout by git as root, an extracted artifact) belongs to the step, and a step of another
  account (another uid) cannot enter it.
* The workspace root is 0711 (enter, not list), and so is every directory between ``data_dir``
  and it; everything else in those directories (the database, ``admin.token``, ``temporal.db``,
  logs, the artifact store) loses its group and other permissions (``secure_data_dir``). The
  directories above ``data_dir`` are the operator's: a root worker refuses to run a step when
  they do not let others pass (o+x), naming the one to fix, rather than changing them.
* The worker's own bookkeeping (the process group file a crashed try leaves) lives outside the
  workspace, in ``<workspace root>/.worker`` (0700), where no step can forge it. Each such file
  names the step's process group and the worker that owns it (pid, process start time, boot id,
  pid namespace): every worker kills, at start and with each workspace sweep, the groups whose
  owner is gone (``kill_orphaned_steps``), never those of a live worker sharing the host and root.
* A finished run's workspace is removed ``workspace_retention_hours`` after the run ended by
  ``sweep_workspaces`` (every worker runs it at start and every
  ``workspace_sweep_interval_seconds``); with 0 the run removes it itself when it ends.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import signal
import stat
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from settings import Settings

WORKER_STATE_DIR = ".worker"
STEP_STATE_DIR = ".devops"
_NOFOLLOW_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True)
class StepUser:
    uid: int
    gid: int


def worker_is_root() -> bool:
    return os.geteuid() == 0


def step_user(settings: Settings, account_id: int) -> StepUser | None:
    """The uid/gid a step of ``account_id`` runs as; None: the worker's own (it is not root)."""
    if not worker_is_root():
        return None
    ident = settings.step_uid_base + int(account_id)
    return StepUser(ident, ident)


def container_user(settings: Settings, account_id: int) -> str:
    """``uid:gid`` for a container step: the workspace owner, never 0 just because the worker is."""
    user = step_user(settings, account_id)
    return f"{user.uid}:{user.gid}" if user else f"{os.getuid()}:{os.getgid()}"


class WorkspaceUnreachable(Exception):
    """A directory above the workspace root does not let the step user pass."""


def workspace_root(settings: Settings) -> Path:
    """The workspace root, created with the modes above (root worker: data_dir tightened too)."""
    root = settings.resolved_workspace_dir
    root.mkdir(parents=True, exist_ok=True)
    if worker_is_root():
        os.chmod(root, 0o711)
        secure_data_dir(settings)
        blocked = _first_closed_ancestor(root)
        if blocked is not None:
            raise WorkspaceUnreachable(
                f"the workspace root {root} cannot be reached by step users: {blocked} does not let other "
                f"users pass (mode {stat.S_IMODE(os.stat(blocked).st_mode):04o}). Set DEVOPS_WORKSPACE_DIR to a "
                f"directory whose parents do (e.g. /var/lib/devops/workspaces), or `chmod o+x {blocked}`")
    else:
        os.chmod(root, 0o700)
    return root


def _first_closed_ancestor(path: Path) -> Path | None:
    for parent in [*reversed(path.parents), path]:
        if not os.stat(parent).st_mode & stat.S_IXOTH:
            return parent
    return None


def secure_data_dir(settings: Settings) -> None:
    """``data_dir`` and the directories down to the workspace root: 0711 (a step may pass through
    to its workspace, never list); all else they hold: no group/other permissions. Without a
    workspace root inside ``data_dir`` nobody but the worker needs it: 0700."""
    data = settings.data_dir.resolve()
    if not data.is_dir():
        return
    root = settings.resolved_workspace_dir
    if data not in root.parents:
        os.chmod(data, 0o700)
        return
    chain = [p for p in reversed(root.parents) if p == data or data in p.parents]
    for directory in chain:
        os.chmod(directory, 0o711)
        for entry in os.scandir(directory):
            path = Path(entry.path)
            if path == root or path in chain or entry.is_symlink():
                continue
            with contextlib.suppress(FileNotFoundError):
                mode = stat.S_IMODE(entry.stat(follow_symlinks=False).st_mode)
                if mode & 0o077:
                    os.chmod(entry.path, mode & 0o700, follow_symlinks=False)


def make_workspace(settings: Settings, run_id: int, account_id: int | None = None) -> Path:
    """``run-<id>`` under the root, 0700; handed to the step user when the account is known."""
    path = workspace_root(settings) / f"run-{run_id}"
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    if account_id is not None:
        user = step_user(settings, account_id)
        if user is not None and os.lstat(path).st_uid != user.uid:
            os.chown(path, user.uid, user.gid, follow_symlinks=False)
    return path


def worker_state_file(settings: Settings, run_id: int, name: str) -> Path:
    """A file of the worker's about a run, out of every step's reach."""
    state = workspace_root(settings) / WORKER_STATE_DIR
    with contextlib.suppress(FileExistsError):
        os.mkdir(state, 0o700)
    os.chmod(state, 0o700)
    return state / f"run-{run_id}-{name}"


# ---- step process groups and the workers that own them ---------------------------------

PROCESS_GROUP_PREFIX = "pgid-"
ORPHAN_KILL_GRACE_SECONDS = 3.0


def _process_start(pid: int) -> int | None:
    """The start time of ``pid`` (clock ticks since boot), None if it does not exist: with the
    pid it names one process for the lifetime of the machine (pids are reused)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def record_process_group(path: Path, pgid: int, **about: object) -> None:
    """Write the step's process group (a session leader, so its pid is the group id) and the
    worker owning it, so a later worker can tell an orphan from a live worker's step."""
    me = os.getpid()
    record = {"pgid": pgid, "leader_start": _process_start(pgid), "worker_pid": me,
              "worker_start": _process_start(me), "boot_id": _boot_id(), "pid_ns": _pid_namespace(), **about}
    path.write_text(json.dumps(record))


def read_process_group(path: Path) -> dict | None:
    """The record ``record_process_group`` wrote (a bare pid from older releases: no owner)."""
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    if text.isdigit():
        return {"pgid": int(text)}
    try:
        record = json.loads(text)
    except ValueError:
        return None
    return record if isinstance(record, dict) and isinstance(record.get("pgid"), int) else None


def _owner_state(record: dict) -> str:
    """``alive``, ``dead`` (its processes are orphans), ``rebooted`` (nothing of it runs, and its
    numbers may name other processes now) or ``unknown`` (another pid namespace, or a record
    without owner: not ours to judge)."""
    if "worker_pid" not in record or record.get("worker_start") is None:
        return "unknown"
    if record.get("boot_id") and record["boot_id"] != _boot_id():
        return "rebooted"
    if record.get("pid_ns") != _pid_namespace():
        return "unknown"  # its pids mean other processes here
    start = _process_start(int(record["worker_pid"]))
    return "alive" if start is not None and start == record.get("worker_start") else "dead"


def _group_exists(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _still_our_group(record: dict) -> bool:
    """The group is still the step's: its leader is the process we started, or the leader is
    gone (a pid is not reused while a group still carries its number). Never across a reboot."""
    if record.get("boot_id") and record["boot_id"] != _boot_id():
        return False
    pgid = int(record["pgid"])
    if not _group_exists(pgid):
        return False
    start = _process_start(pgid)
    return start is None or record.get("leader_start") is None or start == record["leader_start"]


def kill_process_groups(records: list[dict], grace: float = ORPHAN_KILL_GRACE_SECONDS) -> list[dict]:
    """SIGTERM each (still ours) group, SIGKILL what is left after ``grace`` (0: SIGKILL at
    once); the ones signalled."""
    targets = [r for r in records if _still_our_group(r)]
    for record in targets if grace > 0 else []:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(int(record["pgid"]), signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(_group_alive(int(r["pgid"])) for r in targets):
        time.sleep(0.05)
    for record in targets:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(int(record["pgid"]), signal.SIGKILL)
    return targets


def _group_alive(pgid: int) -> bool:
    """Some member of the group still runs (zombies waiting for their reaper do not count)."""
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                return True
    return False


def kill_orphaned_steps(settings: Settings) -> list[dict]:
    """Kill the step process groups of workers that are gone (killed, crashed; after a reboot
    there is nothing to kill) and forget them; a live worker's steps, on this host or sharing the root from
    another pid namespace, are left alone. Run by every worker at start, before it takes work,
    and with each workspace sweep. Returns the records of the groups killed."""
    state = settings.resolved_workspace_dir / WORKER_STATE_DIR
    if not state.is_dir():
        return []
    orphans: list[tuple[Path, dict]] = []
    for path in state.glob(f"run-*-{PROCESS_GROUP_PREFIX}*"):
        record = read_process_group(path)
        owner = _owner_state(record) if record is not None else "unknown"
        if owner == "dead":
            orphans.append((path, record))
        elif owner == "rebooted":
            path.unlink(missing_ok=True)
    killed = kill_process_groups([record for _, record in orphans])
    for path, _ in orphans:
        path.unlink(missing_ok=True)
    return killed


def hand_over(workspace: Path, user: StepUser | None) -> None:
    """Give the workspace and everything in it to the step user, 0700 at the top. An fd-based
    walk (``os.fwalk``) that changes links themselves and never descends through one, so a link a
    step planted cannot turn this into a chown of something outside. A file with several hard
    links stays as it is (it might be a link to a file outside the workspace)."""
    if user is None:
        os.chmod(workspace, 0o700)
        return
    top = os.lstat(workspace)
    if not stat.S_ISDIR(top.st_mode):
        raise NotADirectoryError(f"{workspace} is not a directory")
    if (top.st_uid, top.st_gid) != (user.uid, user.gid):
        os.chown(workspace, user.uid, user.gid, follow_symlinks=False)
    os.chmod(workspace, 0o700)
    for _dirpath, dirnames, filenames, dirfd in os.fwalk(workspace, follow_symlinks=False):
        for name in (*dirnames, *filenames):
            try:
                info = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
            except FileNotFoundError:
                continue
            if (info.st_uid, info.st_gid) == (user.uid, user.gid):
                continue
            if not stat.S_ISDIR(info.st_mode) and info.st_nlink > 1:
                continue
            with contextlib.suppress(FileNotFoundError):
                os.chown(name, user.uid, user.gid, dir_fd=dirfd, follow_symlinks=False)


def _open_dir_beneath(root: Path, parts: tuple[str, ...], *, create: bool) -> int:
    """An fd of ``root/parts...``, each component opened without following links; with
    ``create`` missing directories are made (0700) and a link or file in the way is replaced."""
    fd = os.open(root, _NOFOLLOW_DIR)
    try:
        for part in parts:
            if part in ("", ".", "..") or "/" in part:
                raise ValueError(f"bad path component {part!r}")
            try:
                child = os.open(part, _NOFOLLOW_DIR, dir_fd=fd)
            except OSError as exc:
                if not create or exc.errno not in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR):
                    raise
                if exc.errno != errno.ENOENT:
                    os.unlink(part, dir_fd=fd)  # a link or a file where our directory goes
                os.mkdir(part, 0o700, dir_fd=fd)
                child = os.open(part, _NOFOLLOW_DIR, dir_fd=fd)
            os.close(fd)
            fd = child
        return fd
    except BaseException:
        os.close(fd)
        raise


def dir_beneath(root: Path, relative: str) -> Path:
    """Make sure ``root/relative`` is a real directory (a planted link is replaced)."""
    os.close(_open_dir_beneath(root, Path(relative).parts, create=True))
    return root / relative


def fresh_file_beneath(root: Path, relative: str, user: StepUser | None) -> Path:
    """Create (or empty) ``root/relative`` for the step to write, owned by the step user; a link
    planted at any component is replaced, never followed."""
    *dirs, name = Path(relative).parts
    dirfd = _open_dir_beneath(root, tuple(dirs), create=True)
    try:
        with contextlib.suppress(FileNotFoundError, IsADirectoryError):
            info = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
            if not stat.S_ISREG(info.st_mode) or info.st_nlink > 1:
                os.unlink(name, dir_fd=dirfd)
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                     dir_fd=dirfd)
        try:
            if user is not None:
                os.fchown(fd, user.uid, user.gid)
            os.fchmod(fd, 0o600)
        finally:
            os.close(fd)
    finally:
        os.close(dirfd)
    return root.joinpath(*dirs, name)


def read_beneath(root: Path, relative: str | Path, limit: int = 16 * 1024 * 1024) -> bytes | None:
    """The bytes of the regular file ``root/relative`` (None if missing), reached without
    following any link and without blocking on a FIFO: a step's file, read by a root worker."""
    parts = Path(relative).parts
    if not parts or Path(relative).is_absolute():
        return None
    try:
        dirfd = _open_dir_beneath(root, tuple(parts[:-1]), create=False)
    except (OSError, ValueError):
        return None
    try:
        fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dirfd)
    except OSError:
        return None
    finally:
        os.close(dirfd)
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            return None
        return handle.read(limit)


def remove_workspace(settings: Settings, run_id: int) -> bool:
    """Remove a run's workspace and the worker's files about it; True if there was one."""
    root = settings.resolved_workspace_dir
    path = root / f"run-{run_id}"
    existed = path.exists()
    if existed:
        # rmtree uses fd-based functions on Linux: a link inside is removed, never followed.
        shutil.rmtree(path, ignore_errors=True)
    state = root / WORKER_STATE_DIR
    if state.is_dir():
        leftovers = list(state.glob(f"run-{run_id}-*"))
        # The run has ended: a process group still recorded for it (a try whose worker died, even
        # if another live worker ends the run) has no reason to run on.
        records = [r for r in map(read_process_group, leftovers) if r is not None]
        kill_process_groups(records, grace=0)
        for leftover in leftovers:
            leftover.unlink(missing_ok=True)
    return existed


def sweep_workspaces(settings: Settings, sessions: sessionmaker[Session], now: datetime | None = None) -> list[int]:
    """Remove the workspaces of runs that finished more than the retention ago (and of runs the
    database no longer knows, by age); a running or queued run's workspace stays. Returns the
    run ids removed."""
    from db.models import PipelineRun
    from domain.step_types import FINISHED_RUN_STATUSES

    root = settings.resolved_workspace_dir
    if not root.is_dir():
        return []
    now = now or datetime.now(UTC)
    cutoff = now - timedelta(hours=settings.workspace_retention_hours)
    found: dict[int, Path] = {}
    for entry in root.iterdir():
        if entry.name.startswith("run-") and entry.name[4:].isdigit() and not entry.is_symlink():
            found[int(entry.name[4:])] = entry
    if not found:
        return []
    with sessions() as session:
        rows = {row.id: row for row in session.execute(
            select(PipelineRun.id, PipelineRun.status, PipelineRun.finished_at).where(PipelineRun.id.in_(found)))}
    removed = []
    for run_id, path in sorted(found.items()):
        row = rows.get(run_id)
        if row is None:
            expired = path.stat().st_mtime <= cutoff.timestamp()
        else:
            finished = row.finished_at
            if finished is not None and finished.tzinfo is None:
                finished = finished.replace(tzinfo=UTC)
            expired = row.status in FINISHED_RUN_STATUSES and (finished is None or finished <= cutoff)
        if expired and remove_workspace(settings, run_id):
            removed.append(run_id)
    return removed
