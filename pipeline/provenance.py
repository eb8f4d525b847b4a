"""Provenance recorded in every artifact: code version, file hashes, resolved params."""

from __future__ import annotations

import functools
import hashlib
import subprocess
from pathlib import Path

from pipeline import __version__


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def _git_dir(root: Path) -> Path | None:
    dot = root / ".git"
    if dot.is_dir():
        return dot
    if dot.is_file():  # a worktree or submodule: "gitdir: <path>"
        text = dot.read_text().strip()
        if text.startswith("gitdir:"):
            path = Path(text.split(":", 1)[1].strip())
            return path if path.is_absolute() else (root / path).resolve()
    return None


def _read_head(git_dir: Path) -> str | None:
    """The commit HEAD points to, read from the files (no ``git`` process: a fork of a
    large stage process would also inflate its children's peak-memory figure)."""
    head = (git_dir / "HEAD").read_text().strip()
    if not head.startswith("ref:"):
        return head  # detached
    ref = head.split(":", 1)[1].strip()
    common = git_dir
    if (git_dir / "commondir").is_file():  # worktrees keep refs in the main .git
        common = (git_dir / (git_dir / "commondir").read_text().strip()).resolve()
    for base in (git_dir, common):
        if (base / ref).is_file():
            return (base / ref).read_text().strip()
    packed = common / "packed-refs"
    if packed.is_file():
        for line in packed.read_text().splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[1] == ref:
                return parts[0]
    return None  # an unborn branch


def git_commit(root: Path) -> str | None:
    """The full commit SHA of the work tree at ``root``, or None outside a repository."""
    try:
        git_dir = _git_dir(root)
        sha = _read_head(git_dir) if git_dir is not None else None
    except (OSError, UnicodeDecodeError):
        sha = None
    if sha is None and (root / ".git").exists():
        try:  # layouts the reader above does not know
            sha = subprocess.run(
                ["git", "rev-parse", "HEAD"],
                cwd=root,
                capture_output=True,
                text=True,
                timeout=5,
                check=True,
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            sha = None
    return sha or None


@functools.cache
def code_version() -> str:
    """Package version plus the git commit of the working tree when there is one."""
    sha = git_commit(Path(__file__).resolve().parent.parent)
    return f"{__version__}+{sha[:12] if sha else 'unknown'}"
