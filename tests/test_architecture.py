"""The shape of the package: the import graph has no cycles, and the config machinery
sits at the bottom (it imports nothing of the project)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def module_name(path: Path, root: Path = ROOT) -> str:
    name = ".".join(path.relative_to(root).with_suffix("").parts)
    return name.removesuffix(".__init__")


def project_imports(path: Path, modules: set[str]) -> set[str]:
    """Project modules ``path`` imports anywhere (top level, in functions, under
    TYPE_CHECKING): ``from a.b import c`` counts ``a.b.c`` when it is a module, else ``a.b``."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in modules else node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found & modules


def import_graph(package: str = "pipeline") -> dict[str, set[str]]:
    files = {module_name(p): p for p in (ROOT / package).rglob("*.py")}
    modules = set(files)
    return {name: project_imports(path, modules) - {name} for name, path in files.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_cycle_finder_finds_a_known_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_pipeline_import_graph_has_no_cycles():
    graph = import_graph()
    assert "pipeline.params" in graph and "pipeline.config" in graph
    assert cycles(graph) == []


def test_config_machinery_imports_nothing_of_the_project():
    graph = import_graph()
    assert graph["pipeline.config"] == set()
    # Params and load_params sit on top of every section's config
    assert "pipeline.config" in graph["pipeline.params"]
    assert "pipeline.train.config" in graph["pipeline.params"]


def code_closure(script: Path) -> set[Path]:
    """The project files Python loads to run ``script``: every project module it imports,
    directly or not, anywhere in a module (including function bodies), with the packages'
    ``__init__.py`` on the way, plus the script itself."""
    files = {module_name(p): p for p in (ROOT / "pipeline").rglob("*.py")}
    modules = set(files)
    seen: set[str] = set()
    todo = list(project_imports(script, modules))
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        parts = name.split(".")
        todo.extend(".".join(parts[:k]) for k in range(1, len(parts)))  # parent packages
        todo.extend(project_imports(files[name], modules) - seen)
    return {files[m].relative_to(ROOT) for m in seen if m in files} | {script.relative_to(ROOT)}


def dvc_stages() -> dict[str, dict]:
    import yaml

    return yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def code_deps(stage: dict) -> list[Path]:
    deps = [d if isinstance(d, str) else next(iter(d)) for d in stage.get("deps", [])]
    return [Path(d) for d in deps if d.startswith(("pipeline/", "stages/"))]


def test_stage_names_match_dvc_yaml_and_scripts():
    from pipeline.runner import STAGE_NAMES

    assert tuple(dvc_stages()) == STAGE_NAMES
    for name, stage in dvc_stages().items():
        assert stage["cmd"] == f"python stages/{name}.py"
        assert (ROOT / "stages" / f"{name}.py").is_file()


def test_every_stage_lists_exactly_the_code_it_runs():
    """dvc.yaml's code deps are truthful: every project file a stage's script loads is a dep
    (or inside a folder dep), and every code dep is loaded (no stale entries)."""
    problems = []
    for name, stage in dvc_stages().items():
        used = code_closure(ROOT / "stages" / f"{name}.py")
        deps = code_deps(stage)
        for f in sorted(used):
            if not any(f == d or d in f.parents for d in deps):
                problems.append(f"{name}: loads {f} but does not list it in deps")
        for d in deps:
            if not (ROOT / d).exists():
                problems.append(f"{name}: dep {d} does not exist")
            elif (ROOT / d).is_dir():
                if not any(d in f.parents for f in used):
                    problems.append(f"{name}: lists folder {d} but loads nothing from it")
            elif d not in used:
                problems.append(f"{name}: lists {d} but does not load it")
    assert problems == [], "\n".join(problems)


def test_no_stage_dep_in_the_repository_is_empty():
    """DVC warns "'<path>' is empty." for an empty file or folder among a stage's deps (an
    empty ``__init__.py``, issue 26), on every run: a user reads it as something wrong."""
    empty = []
    for name, stage in dvc_stages().items():
        for d in [d if isinstance(d, str) else next(iter(d)) for d in stage.get("deps", [])]:
            path = ROOT / d
            if "${" in d or not path.exists():  # an artifact, made by another stage
                continue
            if (path.is_file() and path.stat().st_size == 0) or (
                path.is_dir() and not any(f.is_file() for f in path.rglob("*"))
            ):
                empty.append(f"{name}: {d}")
    assert empty == []


def test_code_closure_follows_function_level_imports(tmp_path):
    closure = code_closure(ROOT / "stages" / "scenes.py")
    assert Path("pipeline/runner.py") in closure  # the runner writes every metrics file
    assert Path("pipeline/data/scenes/writer.py") in closure
    assert Path("pipeline/train/loop.py") not in closure


def test_mechanism_independent_stages_read_nothing_of_the_mechanism():
    """The original network's evaluation and the ground-truth diagnosis run once per
    dataset and backbone: no proposal, pair, target or training output is a dep of theirs,
    and no switch or section of the SCN side is one of their params, so an experiment that
    changes the mechanism (`-S proposal=...`), the method or training reruns none of them."""
    stages = dvc_stages()
    mechanism_outputs = ("${paths.proposals}", "${paths.pairs}", "${paths.targets}",
                         "${paths.train}", "${paths.classify}", "${paths.detect}")  # fmt: skip
    mechanism_params = ("proposal", "method", "proposals.", "train.", "doersch.", "targets.")
    for name in ("classify_original", "detect_original", "diagnose_objects"):
        deps = [d if isinstance(d, str) else next(iter(d)) for d in stages[name]["deps"]]
        params = [p if isinstance(p, str) else next(iter(p)) for p in stages[name]["params"]]
        # the detection proposals (detect_proposals, proposals.detect_method) are not SCN's
        read = [d for d in deps if d != "${paths.proposals}/detect"]
        assert not [d for d in read if d.startswith(mechanism_outputs)], name
        assert not [p for p in params if p == "proposal" or p.startswith(mechanism_params)], name
    # ...while the mechanism-dependent part of the diagnosis reads them, and the rest
    assert "${paths.metrics}/details/diagnose_objects.json" in stages["diagnose"]["deps"]
    assert "${paths.pairs}" in stages["diagnose"]["deps"]
