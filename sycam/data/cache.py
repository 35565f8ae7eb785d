"""Where fetched material lives, and how a finished group of files is recognised.

The cache root is ``$SYCAM_CACHE`` if set, else ``~/.cache/sycam``. Each fetched group
(``darknet``, ``palapeli``, ``opencv``, ``tuxpaint``, ``imgaug``) is a folder that is
written under a temporary name and renamed into place only when complete, with a
``.complete.json`` marker listing its files; a folder without the marker (an
interrupted run) does not count as fetched.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import DataError

MARKER = ".complete.json"
FETCH_HINT = "run `sycam data fetch` (or sycam.data.fetch.fetch()) first"


def cache_dir(root: str | Path | None = None) -> Path:
    """The cache root: ``root`` if given, else ``$SYCAM_CACHE``, else ``~/.cache/sycam``."""
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get("SYCAM_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "sycam"


def read_marker(group_dir: Path) -> dict | None:
    """The marker of a finished group folder, or None if unfinished/absent."""
    try:
        return json.loads((group_dir / MARKER).read_text())
    except (OSError, ValueError):
        return None


def write_marker(group_dir: Path, info: dict) -> None:
    tmp = group_dir / (MARKER + ".tmp")
    tmp.write_text(json.dumps(info, indent=1, sort_keys=True))
    os.replace(tmp, group_dir / MARKER)


def is_complete(group: str, root: str | Path | None = None, files: list[str] | None = None) -> bool:
    """Whether ``group`` was fetched completely (and contains ``files``, if given)."""
    d = cache_dir(root) / group
    info = read_marker(d)
    if info is None:
        return False
    want = files if files is not None else info.get("files", [])
    return all((d / f).is_file() for f in want)


def group_path(group: str, root: str | Path | None = None, files: list[str] | None = None) -> Path:
    """The folder of a fetched group; :class:`DataError` telling to fetch if it is missing."""
    d = cache_dir(root) / group
    if not is_complete(group, root, files):
        raise DataError(f"fetched material '{group}' is missing or incomplete in {d.parent}: {FETCH_HINT}")
    return d
