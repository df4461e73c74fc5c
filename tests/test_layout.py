"""The shape of the house: common/ is a leaf, nothing imports in a circle, a
service process never loads the CLI or benchmark code, and an installed chatd
(`pip install .`, the README's quick start) holds every module and page asset."""
from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).parent.parent
PACKAGES = ("analytics", "chatd", "common", "edge", "clue", "exchange", "loadtest", "web")


def imports_of(path: Path) -> set[str]:
    """Project modules a file imports (type-checking-only imports included: a cycle is a cycle)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        found |= {name for name in names if name.split(".")[0] in PACKAGES}
    return found


def module_graph() -> dict[str, set[str]]:
    modules = {
        ".".join(path.relative_to(ROOT).with_suffix("").parts): path
        for package in PACKAGES for path in (ROOT / package).rglob("*.py")
    }
    return {name: {m for m in imports_of(path) if m in modules and m != name} for name, path in modules.items()}


def test_common_imports_no_service_and_nothing_else_of_the_project():
    for module, deps in module_graph().items():
        if module.startswith("common."):
            assert all(dep.startswith("common.") for dep in deps), (module, deps)


def test_no_module_imports_another_in_a_circle():
    graph = module_graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for dep in sorted(graph[module]):
            assert state.get(dep) != 1, " -> ".join([*path, module, dep])
            if dep not in state:
                visit(dep, [*path, module])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [])


def test_a_service_process_loads_neither_the_cli_nor_benchmark_code():
    probe = ("import sys, edge.__main__, clue.__main__, exchange.__main__; "
             "print(sorted({m.split('.')[0] for m in sys.modules} & {'chatd', 'loadtest', 'locust', 'matplotlib'}))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_analytics_cores_do_no_io_and_import_only_common():
    io = {"asyncio", "aiohttp", "redis", "socket", "urllib", "websockets", "subprocess", "os"}
    for path in (ROOT / "analytics").glob("*.py"):
        tree = ast.parse(path.read_text())
        names = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                 for alias in node.names}
        names |= {node.module.split(".")[0] for node in ast.walk(tree)
                  if isinstance(node, ast.ImportFrom) and node.module and node.level == 0}
        assert not names & io, (path.name, names & io)
        assert not names & (set(PACKAGES) - {"common", "analytics"}), (path.name, names)


def test_the_wheel_holds_every_module_and_page_asset(tmp_path):
    # Built from the tracked files alone, as on a fresh machine (a build/ folder left here would fill
    # gaps); the suite itself runs from an editable install, which would hide a package left out.
    tracked = subprocess.run(["git", "ls-files"], capture_output=True, text=True, cwd=ROOT, check=True).stdout.split()
    source = tmp_path / "source"
    for name in tracked:
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "-q", "-w",
                             str(tmp_path)], check=False, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    [wheel] = tmp_path.glob("*.whl")
    held = set(zipfile.ZipFile(wheel).namelist())
    wanted = {name for name in tracked if name.split("/")[0] in PACKAGES and
              (name.endswith(".py") or name.startswith("web/static/"))}
    assert wanted and not wanted - held, sorted(wanted - held)
