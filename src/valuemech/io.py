"""Atomic file writes and crash-safe JSONL append/read for the run directory.

Every write goes through here, and a failed one (a full disk, a read-only file system, a path
through a file) is a one-line :class:`ValuemechError` naming the path and the cause that leaves
nothing partial behind: the temp file of an atomic write is removed, an append is cut back.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable

from valuemech.errors import ValuemechError

#: What an OSError's errno means, in the words of an error message.
CAUSES = {
    errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system", errno.EACCES: "permission denied", errno.EPERM: "permission denied",
    errno.EISDIR: "it is a directory", errno.ENOTDIR: "a part of the path is not a directory",
    errno.EEXIST: "a file of that name exists", errno.EFBIG: "file too large", errno.ENAMETOOLONG: "name too long",
    errno.EIO: "input/output error",
}


_UMASK = os.umask(0)
os.umask(_UMASK)  # read once, at import (os.umask has no read-only form)


def os_cause(exc: OSError, path: Path | None = None) -> str:
    """The cause of ``exc`` in words; for a path through a file, the file."""
    if exc.errno in (errno.ENOTDIR, errno.EEXIST) and path is not None:
        for parent in [Path(path), *Path(path).parents]:
            if parent.exists() and not parent.is_dir():
                return f"{parent} is not a directory"
    return CAUSES.get(exc.errno) or exc.strerror or exc.__class__.__name__


def write_error(path: Path, exc: OSError, what: str = "cannot write") -> ValuemechError:
    """The one-line error of a failed write to ``path``."""
    return ValuemechError(f"{path}: {what} ({os_cause(exc, path)})")


def make_dir(path: Path) -> Path:
    """``mkdir -p path``; a failure is a one-line error naming the path and the cause."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise write_error(path, exc, "cannot create the directory") from None
    return path


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file in the same directory, then rename (a failure leaves
    ``path`` as it was and no temp file)."""
    path = Path(path)
    make_dir(path.parent)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp")
        os.fchmod(fd, 0o666 & ~_UMASK)  # as open() would make it (mkstemp: owner only)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise write_error(path, exc) from None
        raise


def sweep_orphan_temps(directory: Path) -> list[Path]:
    """Remove temp files of :func:`atomic_write_bytes` left in ``directory`` by processes that were
    killed mid-write (``.<name>.<pid>.<random>.tmp`` whose pid is not running); return them."""
    removed = []
    for tmp in Path(directory).glob(".*.tmp"):
        parts = tmp.name.split(".")  # ['', *name parts, pid, random, 'tmp']
        pid = int(parts[-3]) if len(parts) >= 5 and parts[-3].isdigit() else None
        if pid is None or pid == os.getpid() or _alive(pid):
            continue
        try:
            tmp.unlink()
            removed.append(tmp)
        except OSError:
            pass
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. another user's process
        return True
    return True


def tensor_digest(path: Path) -> tuple[str, dict[str, str]]:
    """sha256 over (name, dtype, shape, bytes) of every tensor of a safetensors file in name order,
    and its metadata minus ``library`` (the writer's version). Equal digests mean equal tensors even
    where the file bytes differ (safetensors writes metadata keys in a per-process order)."""
    import hashlib

    import torch
    from safetensors import safe_open

    h = hashlib.sha256()
    with safe_open(str(path), framework="pt") as fh:
        for name in sorted(fh.keys()):
            t = fh.get_tensor(name).contiguous()
            h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
            h.update(t.view(-1).view(torch.uint8).numpy().tobytes())
        meta = {k: v for k, v in (fh.metadata() or {}).items() if k != "library"}
    return h.hexdigest(), meta


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def repair_jsonl(path: Path) -> int:
    """Cut a trailing partial line left by a crash; return the number of bytes removed."""
    path = Path(path)
    if not path.exists():
        return 0
    data = path.read_bytes()
    if not data or data.endswith(b"\n"):
        return 0
    keep = data.rfind(b"\n") + 1
    try:
        with open(path, "r+b") as fh:
            fh.truncate(keep)
    except OSError as exc:
        raise write_error(path, exc, "cannot cut its partial last line") from None
    return len(data) - keep


def read_jsonl(path: Path) -> list[dict]:
    """Read complete JSONL records; a malformed complete line is an error naming the line."""
    path = Path(path)
    if not path.exists():
        return []
    out = []
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            if not raw.endswith(b"\n"):
                break  # partial trailing line from an interrupted append: ignored
            if not raw.strip():
                continue
            try:
                rec = json.loads(raw)
            except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, integers beyond Python's digit limit
                raise ValuemechError(f"{path}:{lineno}: not valid JSON ({_why(exc)})") from None
            if not isinstance(rec, dict):
                raise ValuemechError(f"{path}:{lineno}: expected a JSON object")
            out.append(rec)
    return out


def _why(exc: ValueError) -> str:
    """The reason of a JSON parse failure, in one line."""
    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg} at line {exc.lineno} column {exc.colno}" if exc.lineno > 1 else exc.msg
    return " ".join(str(exc).split())[:200]


def read_bytes(path: Path) -> bytes:
    """A file's bytes; unreadable is a one-line error naming the file."""
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ValuemechError(f"{path}: cannot read ({os_cause(exc, path)})") from None


def read_text(path: Path, encoding: str = "utf-8", newline: str | None = None) -> str:
    """A file's UTF-8 text; unreadable or not UTF-8 is a one-line error naming the file.

    ``encoding="utf-8-sig"`` also drops a byte-order mark (CSV from spreadsheets); ``newline=""``
    keeps line ends as they are (for :mod:`csv`), as in :func:`open`.
    """
    try:
        with open(path, encoding=encoding, newline=newline) as fh:
            return fh.read()
    except UnicodeDecodeError:
        raise ValuemechError(f"{path}: not UTF-8 text") from None
    except OSError as exc:
        raise ValuemechError(f"{path}: cannot read ({exc.strerror or exc.__class__.__name__})") from None


def load_json(path: Path) -> Any:
    """Parse a JSON file; unreadable, not UTF-8 or not JSON is a one-line error naming the file."""
    return parse_json(read_text(path), str(path))


def parse_json(text: str, where: str) -> Any:
    """Parse a user's JSON document; any failure is a one-line error naming ``where``."""
    try:
        return json.loads(text)
    except ValueError as exc:  # JSONDecodeError, or an integer beyond Python's digit limit
        raise ValuemechError(f"{where}: not valid JSON ({_why(exc)})") from None


def parse_jsonl(text: str, where: str) -> list[dict]:
    """Strictly parse JSON Lines given by a user: a bad line is a one-line error naming ``where`` and the line."""
    out = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError as exc:
            raise ValuemechError(f"{where}: line {lineno} is not valid JSON ({_why(exc)})") from None
        if not isinstance(rec, dict):
            raise ValuemechError(f"{where}: line {lineno} is not a JSON object")
        out.append(rec)
    return out


def append_jsonl(path: Path, records: Iterable[dict]) -> None:
    """Append records as whole lines, then fsync. A write that fails (a full disk) or is interrupted
    is cut back to the file's previous end; only a crash can leave a partial last line, which
    :func:`read_jsonl` ignores and :func:`repair_jsonl` removes."""
    payload = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")
    if not payload:
        return
    path = Path(path)
    make_dir(path.parent)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    except OSError as exc:
        raise write_error(path, exc) from None
    try:
        start = os.fstat(fd).st_size
        try:
            view = memoryview(payload)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        except BaseException as exc:
            try:
                os.ftruncate(fd, start)
            except OSError:
                pass
            if isinstance(exc, OSError):
                raise write_error(path, exc) from None
            raise
    finally:
        os.close(fd)
