"""The data stage: DeepPostures' day files in, a Petastorm store out, and how workers read it back.

``h5_format`` (day files), ``schema`` (a window's columns, the store's layout), ``prep`` (the
prep job's steps), ``petastorm_metadata``, ``legacy_arrow`` (the pyarrow bridge Petastorm and
cerebro need), ``data_store`` (checks and counts on a store), ``shard_reader`` (a worker's
reader), ``windows`` (the sequence rules).
"""
