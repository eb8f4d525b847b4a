"""Compare the metrics of two runs of the pipeline key for key.

``python -m tools.compare_metrics A B`` compares every ``metrics/details/*.json`` and
``metrics/*.json`` under the repositories (or metrics folders) ``A`` and ``B``: the same
files, the same keys, the same values. It ignores what changes from run to run without the
code changing what it computes (wall-clock seconds, memory, code version and provenance
strings: :data:`IGNORED`), and compares a path inside ``A`` or ``B`` relative to it. It
prints every difference (``file: key.path: a != b``) and exits 1 when there is one, 0 when
the two are identical. A refactor that must not change the outputs is checked by running
``dvc repro`` of the same params at both commits (two repos of
:func:`tools.dvc_repo.make_repo`) and comparing them with this.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path

# keys whose values are wall-clock time, memory or code identity, not results
# (``train_s``, ``pairs_per_s``, ``phase_seconds``, ``peak_rss_mb``, ``code_version``...)
IGNORED = re.compile(r"seconds|_s$|_per_s$|rss_mb|uss_mb|^code_version$|^provenance$")


def metrics_files(root: Path) -> dict[str, Path]:
    """``relative name -> path`` of the metrics JSON files under ``root`` (a repository or
    its ``metrics`` folder)."""
    base = root / "metrics" if (root / "metrics").is_dir() else root
    return {str(p.relative_to(base)): p for p in sorted(base.rglob("*.json"))}


def ignored(key: str) -> bool:
    return bool(IGNORED.search(key))


def relative(value, root: Path):
    """``value`` with the absolute path of ``root`` replaced by ``<repo>``, recursively."""
    if isinstance(value, str):
        return value.replace(str(root.resolve()), "<repo>").replace(str(root), "<repo>")
    if isinstance(value, dict):
        return {k: relative(v, root) for k, v in value.items()}
    if isinstance(value, list):
        return [relative(v, root) for v in value]
    return value


def diff(a, b, where: str = "") -> list[str]:
    """The differences between two JSON values, one line each."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b), key=str):
            if ignored(str(key)):
                continue
            here = f"{where}.{key}" if where else str(key)
            if key not in a or key not in b:
                side = "A" if key not in b else "B"
                out.append(f"{here}: only in {side}")
            else:
                out.extend(diff(a[key], b[key], here))
        return out
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{where}: {len(a)} items != {len(b)} items"]
        return [
            d
            for i, (x, y) in enumerate(zip(a, b, strict=True))
            for d in diff(x, y, f"{where}[{i}]")
        ]
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return []
    if type(a) is not type(b) or a != b:
        return [f"{where}: {a!r} != {b!r}"]
    return []


def compare(root_a: Path, root_b: Path) -> tuple[list[str], int]:
    """(differences, number of files compared)."""
    files_a, files_b = metrics_files(root_a), metrics_files(root_b)
    out = [f"{name}: only in A" for name in sorted(set(files_a) - set(files_b))]
    out += [f"{name}: only in B" for name in sorted(set(files_b) - set(files_a))]
    common = sorted(set(files_a) & set(files_b))
    for name in common:
        a = relative(json.loads(files_a[name].read_text()), root_a)
        b = relative(json.loads(files_b[name].read_text()), root_b)
        out.extend(f"{name}: {d}" for d in diff(a, b))
    return out, len(common)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("a", type=Path, help="first repository or metrics folder")
    parser.add_argument("b", type=Path, help="second repository or metrics folder")
    args = parser.parse_args(argv)
    differences, n = compare(args.a, args.b)
    for line in differences:
        print(line)
    verdict = "identical" if not differences else f"{len(differences)} differences"
    print(f"{n} metrics files compared key for key: {verdict}")
    return 1 if differences else 0


if __name__ == "__main__":
    sys.exit(main())
