"""Importing the package changes nothing: no patch, no bridge, no environment variable, until a stage
(or :func:`chap_mop.cerebro_compat.enable`) asks for them. And no module imports a script."""
import ast
import subprocess
import sys

from conftest import PROJECT

IMPORT_EVERYTHING = """
import importlib, os, pkgutil, sys
before = dict(os.environ)
import chap_mop
names = [m.name for m in pkgutil.walk_packages(chap_mop.__path__, "chap_mop.")]
# cerebro_compat's submodules import cerebro, which needs the bridge: enable() comes first by design.
for name in names:
    if not name.startswith("chap_mop.cerebro_compat."):
        importlib.import_module(name)
assert dict(os.environ) == before, set(os.environ.items()) ^ set(before.items())
assert "pyarrow.filesystem" not in sys.modules, "the pyarrow bridge was installed by an import"
assert "cerebro" not in sys.modules and "petastorm" not in sys.modules
from chap_mop import cerebro_compat
cerebro_compat.enable()
import cerebro.tune.base as base
from chap_mop.model.ranking import is_larger_better
assert base.is_larger_better is is_larger_better, "enable() did not patch cerebro"
print(len(names))
"""


def test_importing_every_module_applies_nothing_until_enable():
    done = subprocess.run([sys.executable, "-c", IMPORT_EVERYTHING], cwd=PROJECT, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert int(done.stdout.split()[-1]) > 40


def test_no_module_imports_a_script():
    scripts = {"prep_petastorm_data", "model_selection", "make_predictions"}
    for path in [*PROJECT.glob("*.py"), *PROJECT.glob("chap_mop/**/*.py"), *PROJECT.glob("tests/*.py"),
                 *PROJECT.glob("bench/*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not scripts & {name.split(".")[0] for name in names}, f"{path} imports a script"


def test_the_scripts_are_front_doors():
    for script in ("prep_petastorm_data.py", "model_selection.py", "make_predictions.py"):
        text = (PROJECT / script).read_text()
        assert len(text.splitlines()) <= 150 and text.count("chap_mop.cli") == 1, script
