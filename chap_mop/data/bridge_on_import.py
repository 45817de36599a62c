"""The pyarrow bridge (:mod:`chap_mop.data.legacy_arrow`) installed as Petastorm or cerebro is first
imported, in any Python process of an environment where this package is installed.

Petastorm 0.13.1 cannot be imported on today's pyarrow at all (it imports ``pyarrow.filesystem``),
and cerebro-dl imports Petastorm. A Spark Python worker imports them while it unpickles cerebro's
closures (``prepare_data``'s row conversion, ``KerasModel.transform``'s prediction), before any of
this project's code can run there, and whoever started the SparkSession. So the package installs
``chap_mop_bridge.pth`` beside itself, whose one line calls :func:`register` when Python starts:
that adds :class:`BridgeOnImport` to ``sys.meta_path`` and nothing else (no import of pyarrow,
NumPy or TensorFlow), so a process that never imports Petastorm or cerebro is unchanged.

When ``petastorm`` is imported, the finder installs the modules and NumPy aliases Petastorm needs
while it loads, lets Python load it as usual, and then gives its modules the legacy
``ParquetDataset`` (:func:`chap_mop.data.legacy_arrow.install`). Importing ``pyarrow.filesystem``
or ``pyarrow.hdfs`` (as unpickling a reference to one does) installs them. When ``cerebro`` is imported
before TensorFlow, ``TF_USE_LEGACY_KERAS=1`` is set (unless the environment sets it), because
cerebro-dl works with Keras 2 only. Each happens once per process.
"""
import importlib.abc
import importlib.util
import os
import sys

TRIGGERS = ("petastorm", "cerebro")
# pyarrow's removed modules that the bridge rebuilds: a worker unpickles a reference to one of them
# (cloudpickle ships modules by name) without importing Petastorm first.
BRIDGED_MODULES = ("pyarrow.filesystem", "pyarrow.hdfs")


class _ThenBridge(importlib.abc.Loader):
    """The loader of Petastorm's package, followed by the rest of the bridge once it has loaded."""

    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        self.loader.exec_module(module)
        from chap_mop.data import legacy_arrow
        legacy_arrow.install()

    def __getattr__(self, name: str):  # resources, source, is_package: the wrapped loader's
        return getattr(self.loader, name)


class _Installed(importlib.abc.Loader):
    """The loader of a module the bridge has already put in ``sys.modules``."""

    def __init__(self, module):
        self.module = module

    def create_module(self, spec):
        return self.module

    def exec_module(self, module) -> None:
        pass


class BridgeOnImport(importlib.abc.MetaPathFinder):
    """A finder that finds nothing itself: it prepares the process for Petastorm and cerebro."""

    def __init__(self):
        self._finding = False

    def find_spec(self, fullname: str, path=None, target=None):
        if fullname not in TRIGGERS + BRIDGED_MODULES or self._finding:
            return None
        if fullname in BRIDGED_MODULES:
            return self._bridged_module(fullname)
        if fullname == "cerebro":
            if "tensorflow" not in sys.modules:
                os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
            return None  # cerebro imports Petastorm, which comes back here
        # While the bridge asks whether pyarrow still has its legacy modules, and while the other
        # finders look for Petastorm, this finder stands aside.
        self._finding = True
        try:
            from chap_mop.data import legacy_arrow
            legacy_arrow.install_before_petastorm()
            spec = importlib.util.find_spec(fullname)
        finally:
            self._finding = False
        if spec is None or spec.loader is None:
            return None
        spec.loader = _ThenBridge(spec.loader)
        return spec

    def _bridged_module(self, fullname: str):
        """The spec of ``pyarrow.filesystem`` or ``pyarrow.hdfs``: pyarrow's own where it has one,
        else the bridge's."""
        self._finding = True
        try:
            from chap_mop.data import legacy_arrow
            legacy_arrow.install_before_petastorm()
        finally:
            self._finding = False
        module = sys.modules.get(fullname)
        return importlib.util.spec_from_loader(fullname, _Installed(module)) if module is not None else None


def register() -> None:
    """Put :class:`BridgeOnImport` first on ``sys.meta_path`` (idempotent); the ``.pth`` line calls it."""
    if not any(isinstance(finder, BridgeOnImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, BridgeOnImport())
