"""The three programs: ``chap-prep`` (:mod:`.chap_prep`), ``chap-select`` (:mod:`.chap_select`) and
``chap-predict`` (:mod:`.chap_predict`), each also run by its top-level script with the script's defaults.

Conventions shared by all three (:mod:`.common`): the same flag name for the same thing (earlier
names kept as aliases), every default in ``--help``, flags in groups, ``--version``, and the exit
codes of :mod:`chap_mop.errors`.
"""
