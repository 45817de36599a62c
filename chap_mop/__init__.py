"""Shared machinery for DeepPostures CHAP model selection with cerebro-dl on Spark.

One module per job: ``runtime_env`` (environment the driver and executors need),
``spark_session`` (a SparkSession that ships this package), ``schema`` (the Petastorm
schema and dataset layout), ``h5_format`` (reading DeepPostures day files),
``demo_data`` (realistic synthetic recordings), ``cerebro_compat`` (every change to
cerebro-dl, a module per concern), ``windows`` (sequence rules), ``chap_model`` (the
CNN-BiLSTM), ``metrics``, ``run_state`` (a run's saved state and what it may delete) and
``results``.
"""
