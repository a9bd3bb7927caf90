"""The layer rule of the package, checked on its source: imports only go down, the import graph has no cycle, conventions
live in one place, nothing outside core.py touches a private name of DropClass, every method is defined one way."""
import ast
import importlib
import inspect
import re
from pathlib import Path

import pytest

import dropclass

ROOT = Path(dropclass.__file__).parent
LAYERS = {  # module (or package prefix) -> layer; a module may import only from its own layer or the ones below
    "conventions": 0, "exercises": 0, "machine": 0,
    "importance": 1, "features": 1, "losses": 1, "data": 1, "plotting": 1,
    "adapters": 2, "core": 2, "models": 2, "metrics": 2, "tables": 2, "diagnostics": 2,
    "methods": 3, "config": 3, "distributed": 3, "sampling": 3, "build": 3, "checkpoints": 3, "train": 3,
    "explorer_state": 3, "explorer_panels": 3, "explorer_page": 3,
    "analysis": 3, "explorer": 3, "schedule_widget": 3, "probe": 3,
    "experiments": 4, "demo": 4, "ablations": 4,
    "app": 5, "cli": 5,
}
MODULES = sorted(".".join(p.relative_to(ROOT).with_suffix("").parts) for p in ROOT.rglob("*.py")
                 if p.name not in ("__init__.py", "_modidx.py"))


def layer(module: str) -> int:
    top = module.split(".")[0]
    if top not in LAYERS: raise AssertionError(f"dropclass.{module} has no layer: add it to LAYERS and to the README's picture")
    return LAYERS[top]


def imports_in(source: str, module: str) -> set[str]:
    """The dropclass modules that `source` (the text of dropclass.<module>) imports, at the top or inside functions, and
    those it starts as a process (`[sys.executable, "-m", "dropclass.train", ...]`): names relative to the package."""
    package = module.split(".")[:-1]
    out = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            if node.level: base = package[: len(package) - node.level + 1] + (node.module.split(".") if node.module else [])
            elif node.module and node.module.split(".")[0] == "dropclass": base = node.module.split(".")[1:]
            else: continue
            name = ".".join(base)
            for alias in node.names:  # `from dropclass.data import labels` imports a module
                sub = f"{name}.{alias.name}" if name else alias.name
                out.add(sub if sub in MODULES else name)
        elif isinstance(node, ast.Import):
            out |= {a.name[len("dropclass."):] for a in node.names if a.name.startswith("dropclass.")}
        elif isinstance(node, (ast.List, ast.Tuple)):  # a child process: "-m", "dropclass.<module>"
            items = [e.value if isinstance(e, ast.Constant) else None for e in node.elts]
            out |= {b[len("dropclass."):] for a, b in zip(items, items[1:])
                    if a == "-m" and isinstance(b, str) and b.startswith("dropclass.")}
    return {m for m in out if m and m in MODULES and m != module}


def imports(module: str) -> set[str]:
    return imports_in((ROOT / (module.replace(".", "/") + ".py")).read_text(), module)


def test_every_module_has_a_layer():
    for m in MODULES: layer(m)


@pytest.mark.parametrize("module", MODULES)
def test_imports_go_down(module):
    up = {m: layer(m) for m in imports(module) if layer(m) > layer(module)}
    assert not up, f"dropclass.{module} (layer {layer(module)}) imports from layers above it: {up}"


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    "A cycle of the import graph as a list of modules, or None."
    state = {}

    def visit(m, path):
        if state.get(m) == "done": return None
        if state.get(m) == "open": return path[path.index(m):] + [m]
        state[m] = "open"
        for n in sorted(graph.get(m, ())):
            cycle = visit(n, path + [m])
            if cycle: return cycle
        state[m] = "done"
        return None

    for m in sorted(graph):
        cycle = visit(m, [])
        if cycle: return cycle
    return None


def test_import_graph_has_no_cycle():
    cycle = find_cycle({m: imports(m) for m in MODULES})
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_checker_catches_an_upward_import_and_a_cycle():
    "The rule can fail: a data module importing training, and modules importing each other."
    assert layer("data.labels") < layer("train")
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    child = 'cmd = [sys.executable, "-m", "dropclass.cli", "train"]\nsubprocess.run(("python", "-m", "dropclass.demo"))'
    assert imports_in(child, "experiments") == {"cli", "demo"}  # a process started with -m counts as an import
    assert imports_in('from .train import train\nx = ["-m", "numpy"]', "experiments") == {"train"}


EXEMPT_FROM_SIZE = {"data.synthetic"}  # the painter of the synthetic scenes: one drawing routine per class
MAX_LINES = 400


def test_no_module_is_a_warehouse():
    "Each module does one job, small enough to read in one sitting."
    long = {m: n for m in MODULES if m not in EXEMPT_FROM_SIZE
            and (n := len((ROOT / (m.replace(".", "/") + ".py")).read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}; split them by job"


def test_conventions_are_defined_once_and_imported_from_the_ground_floor():
    for name in ("IGNORE_INDEX", "check_labels", "upsample_logits", "unwrap", "logits_of", "device_of"):
        defined = [m for m in MODULES if re.search(rf"^(def {name}\(|{name} = )", (ROOT / (m.replace('.', '/') + '.py')).read_text(), re.M)]
        assert defined == ["conventions"], f"{name} is defined in {defined}"
    for m in MODULES:
        text = (ROOT / (m.replace(".", "/") + ".py")).read_text()
        for name in ("IGNORE_INDEX", "check_labels", "upsample_logits"):
            assert not re.search(rf"from \.+(importance|losses|features) import [^\n]*\b{name}\b", text), f"{m} imports {name} from the maths layer"


# spelt in pieces: this file is searched too
PRIVATE = re.compile("|".join(["_drop" + "_logits", r"adapter\.output" + r"\(", "_class_pixel" + "_factor"]))


def test_no_private_name_of_dropclass_outside_core():
    hits = []
    for path in [*ROOT.rglob("*.py"), *(ROOT.parent / "tests").glob("*.py")]:
        if path.name in ("core.py", "adapters.py", "_modidx.py", "test_architecture.py"): continue
        for k, line in enumerate(path.read_text().splitlines(), 1):
            if PRIVATE.search(line): hits.append(f"{path.name}:{k}: {line.strip()}")
    assert not hits, "\n".join(hits)


def _classes():
    for m in MODULES:
        mod = importlib.import_module(f"dropclass.{m}")
        for name, obj in vars(mod).items():
            if inspect.isclass(obj) and obj.__module__ == mod.__name__: yield obj


def test_methods_are_found_by_their_name_and_qualname():
    "Every public method is defined as `def <name>` (in its class or with @patch) and is called Class.name."
    bad = []
    for cls in _classes():
        source = Path(inspect.getsourcefile(cls)).read_text()
        for name, f in vars(cls).items():
            f = getattr(f, "__func__", f)
            if isinstance(f, property): f = f.fget
            if not inspect.isfunction(f) or name.startswith("_"): continue  # public methods
            if f.__qualname__ != f"{cls.__name__}.{name}": bad.append(f"{cls.__name__}.{name}: __qualname__ {f.__qualname__!r}")
            if not re.search(rf"def {re.escape(name)}\(", source): bad.append(f"{cls.__name__}.{name}: no 'def {name}('")
    assert not bad, "\n".join(bad)


def test_no_method_is_attached_by_assignment():
    for path in ROOT.rglob("*.py"):
        if path.name == "_modidx.py": continue
        text = path.read_text()
        assert not re.search(r"^[A-Z]\w*\.\w+(, *[A-Z]\w*\.\w+)* = ", text, re.M), f"{path.name} attaches a method by assignment"
        assert not re.search(r"setattr\([A-Z]\w*, ", text), f"{path.name} attaches methods with setattr"
        assert not re.search(r"^\w+ = property\(", text, re.M), f"{path.name} defines a property at module level"


NEW_OPTION = '''    shade: str = setting("light", "a test option added in this one place", choices=("light", "dark"))
'''
CHECK_NEW_OPTION = r'''
import sys, segmentation_models_pytorch as smp
from dropclass.core import DropClass, DROPCLASS_OPTIONS
from dropclass.config import config_from
from dropclass.cli import main
m = DropClass(smp.FPN("resnet18", encoder_weights=None, classes=3), shade="dark")
assert "shade" in DROPCLASS_OPTIONS and m.shade == "dark" and m.options.shade == "dark"
m.shade = "light"
try: m.shade = "grey"
except ValueError as e: assert "shade must be one of" in str(e)
else: raise AssertionError("a bad value was accepted")
cfg = config_from("tiny", ["shade=dark"])
assert cfg.dropclass.shade == "dark" and cfg.to_dict()["shade"] == "dark"
assert main(["train", "--preset", "tiny", "--set", "shade=grey", "--out", sys.argv[1]]) == 2
print("all know it")
'''


def test_a_new_dropclass_option_is_written_in_one_place(tmp_path, capfd):
    "One field added to DropClassOptions (in a copy of the package) is known to DropClass, the config and the CLI."
    import shutil, subprocess, sys
    pkg = tmp_path / "dropclass"
    shutil.copytree(ROOT, pkg, ignore=shutil.ignore_patterns("__pycache__"))
    core = (pkg / "core.py").read_text()
    anchor = "    drop_prob: float = setting("
    assert core.count(anchor) == 1, "DropClassOptions no longer ends with drop_prob: update this test's anchor"
    (pkg / "core.py").write_text(core.replace(anchor, NEW_OPTION + anchor))
    r = subprocess.run([sys.executable, "-c", CHECK_NEW_OPTION, str(tmp_path / "run")], cwd=tmp_path, capture_output=True,
                       text=True, env={**__import__("os").environ, "PYTHONPATH": str(tmp_path)}, timeout=300)
    assert r.returncode == 0 and "all know it" in r.stdout, r.stdout + r.stderr
    assert "dropclass train: error:" in r.stderr and "shade must be one of 'light', 'dark'" in r.stderr, r.stderr
