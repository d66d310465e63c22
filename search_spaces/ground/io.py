"""File boundaries: atomic writes (a crash never leaves a half-written file behind) and bounded, decoded reads."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from search_spaces.ground.documents import loads_json
from search_spaces.ground.errors import ConfigError


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` on a temporary file beside ``path`` and rename it into place."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{str(path)!r} is a directory; name a file to write")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise ConfigError(f"cannot write {str(path)!r}: a file stands where its folder would be") from None
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the file normal permissions
        write(Path(tmp))
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        _fsync_directory(path.parent)  # the rename itself survives a power loss
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def atomic_write_json(path: str | Path, data: Any) -> Path:
    """Write ``data`` as indented JSON to ``path`` atomically."""
    return atomic_write_text(path, json.dumps(data, indent=2, default=str) + "\n")


#: Largest text file (config, policy, preset, latency table, pruning history) autoprune reads.
MAX_TEXT_BYTES = 16 << 20
#: Largest checkpoint (state dict) autoprune loads.
MAX_CHECKPOINT_BYTES = 8 << 30


def read_text(path: str | Path, *, what: str, limit: int = MAX_TEXT_BYTES) -> str:
    """The UTF-8 text of ``path``; a missing, oversized or undecodable file is a :class:`ConfigError` naming it."""
    check_size(path, what=what, limit=limit)
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what} {str(path)!r} is not UTF-8 text ({exc})") from exc


def read_json_file(path: str | Path, *, what: str, limit: int = MAX_TEXT_BYTES) -> Any:
    """The JSON value in ``path``; a missing, oversized, undecodable, invalid or too deeply nested file, or one
    holding a number out of range (:func:`~search_spaces.ground.documents.loads_json`), is a :class:`ConfigError`
    naming it."""
    return loads_json(read_text(path, what=what, limit=limit), what=f"{what} {str(path)!r}")


def check_size(path: str | Path, *, what: str, limit: int) -> None:
    """Raise :class:`ConfigError` unless ``path`` is an existing file of at most ``limit`` bytes."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} {str(path)!r} does not exist" + (" (it is a directory)" if path.is_dir() else ""))
    size = path.stat().st_size
    if size > limit:
        raise ConfigError(f"{what} {str(path)!r} is {size:,} bytes; at most {limit:,} are read")

