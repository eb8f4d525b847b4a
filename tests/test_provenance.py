"""pipeline.provenance.git_commit reads HEAD from the repository files, as git does."""

from __future__ import annotations

import subprocess

from pipeline.provenance import code_version, git_commit


def _git(cwd, *args) -> str:
    env_args = ["-c", "user.name=t", "-c", "user.email=t@t", "-c", "init.defaultBranch=main"]
    return subprocess.run(["git", *env_args, *args], cwd=cwd, check=True, capture_output=True,
                          text=True).stdout.strip()  # fmt: skip


def test_git_commit_matches_git_in_every_layout(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    assert git_commit(repo) is None  # unborn branch
    (repo / "a.txt").write_text("a")
    _git(repo, "add", "a.txt")
    _git(repo, "commit", "-qm", "one")
    assert git_commit(repo) == _git(repo, "rev-parse", "HEAD")  # loose ref
    _git(repo, "pack-refs", "--all")
    assert git_commit(repo) == _git(repo, "rev-parse", "HEAD")  # packed ref
    (repo / "a.txt").write_text("b")
    _git(repo, "commit", "-qam", "two")
    second = _git(repo, "rev-parse", "HEAD")
    assert git_commit(repo) == second
    _git(repo, "checkout", "-q", "--detach", "HEAD~1")
    assert git_commit(repo) == _git(repo, "rev-parse", "HEAD") != second  # detached
    _git(repo, "worktree", "add", "-q", str(tmp_path / "wt"), "main")
    assert git_commit(tmp_path / "wt") == second  # a worktree: .git is a file
    assert git_commit(tmp_path) is None  # not a repository


def test_code_version_names_the_package_and_commit():
    version, _, sha = code_version().partition("+")
    assert version and (sha == "unknown" or len(sha) == 12)
