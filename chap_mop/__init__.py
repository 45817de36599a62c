"""Distributed model selection for DeepPostures' CHAP posture classifiers on Spark, with cerebro-dl's
model hopper parallelism.

The three stages, each a function that takes one settings object:

* :func:`chap_mop.data.prepare.prepare_store` (``chap-prep``): day files -> a Petastorm store;
* :func:`chap_mop.selection.stage.run_selection` (``chap-select``): the best configuration;
* :func:`chap_mop.predict.stage.predict` (``chap-predict``): predictions in DeepPostures' format.

Subpackages by stage and concern: ``data``, ``model``, ``selection``, ``predict``, ``output``,
``runtime``, ``cerebro_compat`` (every change to cerebro-dl), ``cli`` (the three programs) and
``dev`` (demo data and a local cluster, for developers). Importing any module changes nothing:
the stages set up what they need when they run.
"""
__version__ = "1.0.0"
