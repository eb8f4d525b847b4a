"""Atomic file writes: outputs appear complete or not at all.

Every artifact is written under a temporary name beside its final path and renamed
into place only when complete, so an interrupted stage never leaves a file that looks
complete (readers and DVC only ever see the final name).
"""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import os
import shutil
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

TMP_MARK = ".tmp-"


def tmp_name(path: Path) -> Path:
    return path.with_name(f"{path.name}{TMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path (file or directory) that is renamed to ``path`` on success.

    On an exception the temporary is removed and ``path`` is left as it was.
    An existing ``path`` is replaced only after the new one is complete.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    tmp = tmp_name(path)
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"{tmp}: nothing was written for {path}")
        if path.is_dir() and not path.is_symlink():
            old = tmp_name(path)
            path.rename(old)
            tmp.rename(path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def remove_stale_temporaries(path: str | Path) -> list[Path]:
    """Remove the temporaries of ``path`` whose writing process is gone (killed mid-write).

    A killed stage leaves ``<name>.tmp-<pid>-<id>`` beside ``path``; inside a directory
    output (``data/train/``) DVC would otherwise hash and cache it with the output.
    Temporaries of running processes (a concurrent writer) are left alone.
    """
    path = Path(path)
    removed = []
    for stale in path.parent.glob(f"{glob.escape(path.name)}{TMP_MARK}*"):
        pid = stale.name[len(path.name) + len(TMP_MARK) :].split("-")[0]
        if not pid.isdigit() or _alive(int(pid)):
            continue
        log.warning("removing %s, left by an interrupted run", stale)
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)
        removed.append(stale)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def write_json(path: str | Path, data: Any, sort_keys: bool = True) -> None:
    """Write ``data`` as indented JSON (keys sorted unless ``sort_keys`` is false),
    atomically."""
    with atomic_path(path) as tmp:
        text = json.dumps(data, indent=2, sort_keys=sort_keys, default=_json_default)
        tmp.write_text(text + "\n")


def canonical(obj: Any) -> Any:
    """A copy of nested dicts/lists/tuples whose strings are interned, for ``torch.save``.

    Pickle writes a repeated object once and refers back to it by identity, so equal
    payloads whose equal strings are distinct objects (a history loaded back from a
    checkpoint beside one built in this process) pickle to different bytes, and DVC then
    sees a changed output. With every string interned, equal content gives equal bytes.
    Tensors and other leaves are kept as they are.
    """
    if isinstance(obj, str):
        return sys.intern(str(obj))
    if isinstance(obj, dict):
        return {canonical(k): canonical(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [canonical(v) for v in obj]
    if isinstance(obj, tuple) and not hasattr(obj, "_fields"):
        return tuple(canonical(v) for v in obj)
    return obj


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_figure(fig: Any, path: str | Path, dpi: int = 110, **savefig: Any) -> None:
    """Save a matplotlib figure as PNG at ``path`` atomically (parents made), then close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, **savefig)
    plt.close(fig)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item"):  # numpy / torch scalars
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
