"""The prediction stage: models that predict windows (``inference``) and DeepPostures' CSVs
(``predictions``)."""
