"""The layout's promises: the library imports no command; README numbers sit in blocks that the
measuring commands write, each naming its command and date."""
import ast
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "hpvit_d2"


def _imports(tree: ast.AST):
    """Imported module names, leaving out those under ``if __name__ == "__main__":``."""
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "__main__" in ast.unparse(node.test):
            skip |= {id(n) for n in ast.walk(node)}
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            yield ("." * node.level) + (node.module or "")


def test_library_imports_no_command_module():
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE)
        if relative.parts[0] in ("cli", "configs"):
            continue
        for name in _imports(ast.parse(path.read_text())):
            depth = len(name) - len(name.lstrip("."))
            resolved = name if depth == 0 else ".".join(
                ("hpvit_d2",) + relative.parts[:-1][: len(relative.parts) - depth] + (name.lstrip("."),))
            if resolved.startswith(("hpvit_d2.cli", "hpvit_lab")) or ".cli" in name and depth:
                offenders.append(f"{relative}: {name}")
    assert offenders == []


def test_the_lab_is_beside_the_library_not_in_its_wheel():
    """The harnesses that write README blocks live in projects/HPViT/hpvit_lab; the wheel's
    packages and console commands are the library's and the user commands only."""
    import setuptools

    captured = {}
    original = setuptools.setup
    setuptools.setup = lambda **kw: captured.update(kw)
    try:
        exec(compile((ROOT / "setup.py").read_text(), str(ROOT / "setup.py"), "exec"),
             {"__name__": "__main__", "__file__": str(ROOT / "setup.py")})
    finally:
        setuptools.setup = original
    assert all(p == "hpvit_d2" or p.startswith("hpvit_d2.") for p in captured["packages"])
    commands = {c.split("=")[0] for c in captured["entry_points"]["console_scripts"]}
    assert commands == {"hpvit-train", "hpvit-demo", "hpvit-convert", "hpvit-export", "hpvit-browse",
                        "hpvit-classify"}
    requires = captured["install_requires"]
    assert not any("transformers" in r for r in requires)
    # detectron2's own runtime dependencies, with requirements.txt's pins (the installer route
    # that puts detectron2 in a venv installs none of them).
    for pinned in ("numpy>=1.24,<2", "opencv-python-headless>=4.8,<4.12", "setuptools<81",
                   "cloudpickle", "omegaconf>=2.1,<2.4", "pycocotools>=2.0.6", "timm>=0.9"):
        assert pinned in requires, pinned
    assert not any(r.startswith(("pytest", "onnx")) for r in requires)
    harnesses = {"bench", "bench_attention", "summary", "variants", "demo_run", "study", "tasks",
                 "tune", "claims", "eval_noise", "shipped", "pretrain", "runs", "pretrain_mae", "mae",
                 "blocks", "flops", "memory_probe"}
    assert harnesses <= {p.stem for p in (ROOT / "projects" / "HPViT" / "hpvit_lab").glob("*.py")}
    assert not harnesses & {p.stem for p in PACKAGE.rglob("*.py")}


# Blocks whose command has not been run yet: empty, and said so in the page's text (none today).
PENDING_BLOCKS: set = set()


def test_readme_numbers_are_written_by_commands():
    """README.md and the docs/ pages it links: every measured block names its command and date;
    a pending block is empty (no number without its command)."""
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    names = []
    for page in pages:
        text = page.read_text()
        blocks = re.findall(r"<!-- begin: ([\w-]+) -->\n(.*?)\n?<!-- end: \1 -->", text, re.S)
        assert text.count("<!-- begin:") == len(blocks), page
        for name, body in blocks:
            names.append(name)
            if name in PENDING_BLOCKS and not body.strip():
                assert "not measured yet" in text.lower(), (page, name)
                continue
            assert re.search(r"`(make [\w-]+|python -m hpvit_lab\.\w+)[^`]*`", body), (page, name)
            assert re.search(r"20\d\d-\d\d-\d\d", body), f"{page.name} {name}: no date"
            assert "not measured yet" not in body and "predates" not in body, (page, name)
    assert {"demo", "detection-study", "detection-study-full", "tune-detection", "summary",
            "bench", "semseg-study", "classify-study", "tune-semseg",
            "tune-classify"} <= set(names), names
    assert len(names) == len(set(names)), names


def test_readme_leads_and_its_links_resolve():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 300
    order = ["## Inference on your image", "## Your own data", "## Converting your checkpoint",
             "## Results in brief", "## Commands", "## Installation"]
    assert [readme.index(h) for h in order] == sorted(readme.index(h) for h in order)
    for page in [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text()):
            assert (page.parent / target).exists(), f"{page.name}: link to {target}"


# The library's floors, lowest first (docs/design.md's diagram): a module imports its own floor
# or lower ones, never a higher one, imports inside functions included.
FLOORS = [
    {"known_warnings", "overrides", "cpu_memory", "data", "evaluation"},
    {"modeling", "shipped_configs"},
    {"checkpoint", "solver", "config"},
    {"engine", "model_zoo", "timm_models", "configs"},
    {"predictor"},
    {"cli"},
    {"convert", "__init__"},
]


def _module_graph():
    """{module: set of hpvit_d2 modules it imports}, module names dotted under hpvit_d2."""
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE).with_suffix("")
        parts = relative.parts[:-1] if relative.name == "__init__" else relative.parts
        modules[".".join(("hpvit_d2",) + parts)] = (path, relative)
    graph = {}
    for name, (path, relative) in modules.items():
        package = ("hpvit_d2",) + relative.parts[:-1]
        targets = set()
        for imported in _imports(ast.parse(path.read_text())):
            depth = len(imported) - len(imported.lstrip("."))
            full = imported if depth == 0 else ".".join(
                package[: len(package) - depth + 1] + ((imported.lstrip("."),) if imported.strip(".") else ()))
            while full and full not in modules:
                full = full.rpartition(".")[0]
            if full.startswith("hpvit_d2") and full != name and full != "hpvit_d2":
                targets.add(full)
        graph[name] = targets
    return graph


def _floor(module: str) -> int:
    top = module.split(".")[1] if "." in module else "__init__"
    return next(i for i, floor in enumerate(FLOORS) if top in floor)


def test_the_import_graph_has_no_circle_and_no_arrow_up():
    graph = _module_graph()
    up = sorted(f"{a} -> {b}" for a, targets in graph.items() for b in targets
                if _floor(b) > _floor(a))
    assert up == []
    # no circle between modules: a depth-first search finds no back edge
    state, circles = {}, []

    def visit(node, trail):
        state[node] = "open"
        for target in graph[node]:
            if state.get(target) == "open":
                circles.append(trail[trail.index(target):] + [target])
            elif target not in state:
                visit(target, trail + [target])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert circles == []


def test_importing_the_library_or_the_lab_changes_no_environment():
    """``import hpvit_d2`` (and the commands' package) installs no warning filter and sets no
    environment variable; ``import hpvit_lab`` sets none either (its subprocesses get lab_env())."""
    code = """
import os, warnings
env, filters = dict(os.environ), list(warnings.filters)
import hpvit_d2, hpvit_d2.cli, hpvit_d2.cli.common
assert dict(os.environ) == env and warnings.filters == filters, "hpvit_d2"
import hpvit_lab
assert dict(os.environ) == env, "hpvit_lab"
lab = hpvit_lab.lab_env(FOO="1")
assert lab["FOO"] == "1" and lab["PYTHONPATH"].split(os.pathsep)[0] == hpvit_lab.LAB_ROOT
"""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "projects" / "HPViT")])
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
