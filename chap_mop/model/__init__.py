"""The CHAP CNN-BiLSTM and what says how good it is: ``chap_model``, ``metrics``, ``ranking``."""
