"""Build steps that pyproject.toml cannot state: install ``chap_mop_bridge.pth`` at the top of
site-packages, beside the package, in a wheel and in an editable install (``pip install -e``).

Python runs a ``.pth`` file's ``import`` line when it starts; this one registers the import hook of
:mod:`chap_mop.data.bridge_on_import`, so Petastorm and cerebro import in any process of the
environment (Spark's Python workers included). Everything else is in pyproject.toml.
"""
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.editable_wheel import editable_wheel

PTH = Path(__file__).resolve().parent / "chap_mop" / "data" / "chap_mop_bridge.pth"


class BuildPyWithPth(build_py):
    """build_py, then the ``.pth`` at the top of build_lib, which becomes the wheel's root."""

    def run(self):
        super().run()
        self.copy_file(str(PTH), str(Path(self.build_lib) / PTH.name))


class EditableWheelWithPth(editable_wheel):
    """The editable wheel with the ``.pth`` at its root (setuptools 64 to 69 put their own there)."""

    def _install_namespaces(self, installation_dir, pth_prefix):
        super()._install_namespaces(installation_dir, pth_prefix)
        shutil.copy(PTH, Path(installation_dir) / PTH.name)


setup(cmdclass={"build_py": BuildPyWithPth, "editable_wheel": EditableWheelWithPth})
