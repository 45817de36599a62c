"""Tools for developers and the demo, not used by the three stages: synthetic day files
(``demo_data``) and a throw-away standalone Spark cluster on 127.0.0.1 (``local_cluster``)."""
