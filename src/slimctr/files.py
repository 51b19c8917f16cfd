"""Writing files so that a reader never sees half of one, one writer per destination, checksums."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from slimctr.errors import SlimctrError


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary sibling of ``path``; rename it onto ``path`` on success, else delete it."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


@contextmanager
def exclusive(path: Path, what: str) -> Iterator[None]:
    """Hold the exclusive lock of ``path`` (a file or folder, existing or not) or refuse at once.

    The lock is ``flock`` on a hidden sibling, ``.NAME.lock``, removed on release. A process that
    opened the lock file just before it was removed would lock a dead file, so after locking, the
    file at the path must still be the one locked; otherwise locking starts over. A killed holder
    releases its lock with its file descriptors, so a stale lock file never blocks anyone.
    """
    lock = path.with_name(f".{path.name}.lock")
    while True:
        handle = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(handle)
            raise SlimctrError(
                f"another slimctr process is writing {what} {path}; wait for it to finish"
            ) from None
        try:
            if os.stat(lock).st_ino == os.fstat(handle).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(handle)
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)
        os.close(handle)


def json_bytes(data: Any) -> bytes:
    """``data`` as the indented JSON text slimctr writes, encoded."""
    return (json.dumps(data, indent=2) + "\n").encode()


def sha256_bytes(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def read_manifest(file: Path, kind: str, version: int) -> dict[str, Any]:
    """The JSON object in ``file`` that declares ``"format": kind`` at ``format_version``
    ``version``; anything else is a one-line error naming the file."""
    try:
        manifest = json.loads(file.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise SlimctrError(f"{file} is not valid JSON: it is corrupt") from None
    if not isinstance(manifest, dict) or manifest.get("format") != kind:
        raise SlimctrError(f"{file} is not a {kind} manifest")
    if manifest.get("format_version") != version:
        raise SlimctrError(
            f"{file} is of {kind} format {manifest.get('format_version')!r} (written by slimctr "
            f"{manifest.get('slimctr_version', '?')}); this slimctr reads format {version}"
        )
    return manifest


def verified(file: Path, expected: str, manifest: str) -> bytes:
    """The bytes of ``file`` if their sha256 is ``expected`` (as recorded in ``manifest``)."""
    try:
        content = file.read_bytes()
    except FileNotFoundError:
        raise SlimctrError(f"{file} is missing: its folder is incomplete") from None
    except IsADirectoryError:
        raise SlimctrError(f"{file} is a folder where a file belongs") from None
    if sha256_bytes(content) != expected:
        raise SlimctrError(
            f"{file} is corrupt or was changed (its checksum does not match {manifest})"
        )
    return content


def write_manifested(
    folder: Path, files: dict[str, bytes], manifest: str, header: dict[str, Any]
) -> None:
    """Write ``files`` into ``folder``, then the manifest ``header`` with their sha256 under
    ``"files"`` (the counterpart of ``read_manifest`` and ``verified``)."""
    for name, content in files.items():
        (folder / name).write_bytes(content)
    checksums = {name: sha256_bytes(content) for name, content in files.items()}
    (folder / manifest).write_bytes(json_bytes({**header, "files": checksums}))


def sha256_file(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically: a temporary name in the same directory, then a rename."""
    with atomic_path(path) as temporary:
        temporary.write_text(json.dumps(data, indent=2) + "\n")


@contextmanager
def staged(out: Path) -> Iterator[Path]:
    """A fresh hidden sibling of ``out`` to build a folder in: moved onto ``out`` (``publish``)
    when the block ends without an error, and removed whatever happens.

    Callers pass ``out`` resolved (``Path.resolve``) before they check what it holds: a path
    through a folder that does not exist yet (``new/../old``) names nothing when checked, but
    ``old`` once the folder has been created, and publishing would replace ``old`` unchecked.
    """
    staging = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        yield staging
        publish(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def remove_leftovers(out: Path) -> None:
    """Delete the staging (``.NAME.tmp-PID``) and trash (``.NAME.old-PID``) siblings of ``out``.

    Only for a caller holding ``out``'s lock (``files.exclusive``): then no other process stages
    there, so these are what killed processes left behind (a staged store can be 100 MB).
    """
    leftover = re.compile(rf"\.{re.escape(out.name)}\.(tmp|old)-[0-9]+")
    for sibling in out.parent.iterdir():
        if leftover.fullmatch(sibling.name):
            shutil.rmtree(sibling, ignore_errors=True)


def publish(staging: Path, out: Path) -> None:
    """Move a finished folder into place, replacing whatever ``out`` held only at the last step.

    A process killed between the two renames leaves the old folder in ``.NAME.old-PID``, which
    ``remove_leftovers`` deletes on the next locked run.
    """
    if not out.exists():
        os.replace(staging, out)
        return
    trash = out.with_name(f".{out.name}.old-{os.getpid()}")
    os.replace(out, trash)
    try:
        os.replace(staging, out)
    except OSError:
        os.replace(trash, out)  # keep the old folder rather than none
        raise
    shutil.rmtree(trash, ignore_errors=True)
