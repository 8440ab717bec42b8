"""The control process's modules import one way (docs/architecture.md, "The control
process by job"): each only modules of the layers before its own, so no circle."""

import ast
from pathlib import Path

import cortexd.control

LAYERS = [
    {"errors", "watchers", "journals", "logreads", "monitorfeed", "nodecalls", "listing",
     "waits", "submitcheck", "secrets", "localport"},
    {"state"}, {"finishes"},
    {"offers"}, {"placement"},
    {"attempts"},
    {"reconcile"}, {"sessions"},
    {"janitor", "queuewaits"}, {"cluster"},
    {"submits"}, {"inbox"},
    {"tasks"}, {"intake", "nodes", "shards", "browse"}, {"pagereads", "taskpb"},
    {"runs", "watching", "agents"},
    {"hub"}, {"figures", "service", "shells", "operate", "credentials"},
    {"monitorapi", "operateapi", "policyfiles"},
    {"process"},
]


def imports_of(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return {n.split(".")[2] for n in names if n.startswith("cortexd.control.")}


def test_every_control_module_has_a_layer_and_imports_only_earlier_layers() -> None:
    rank = {name: i for i, layer in enumerate(LAYERS) for name in layer}
    folder = Path(cortexd.control.__file__).parent
    modules = {p.stem: p for p in folder.glob("*.py") if p.stem != "__init__"}
    assert set(modules) == set(rank), "a new control module needs its place in LAYERS"
    for name, path in modules.items():
        for dep in imports_of(path):
            assert rank[dep] < rank[name], f"{name} imports {dep} (a later layer)"


def test_every_control_module_is_at_most_400_lines() -> None:
    folder = Path(cortexd.control.__file__).parent
    for path in folder.glob("*.py"):
        assert len(path.read_text().splitlines()) <= 400, path.name
