"""Where the code runs: the environment of the driver and executors (``runtime_env``), the Spark
session (``spark_session``) and a Spark job's progress lines (``spark_progress``)."""
