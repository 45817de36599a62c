"""The model selection stage: search plans, the hop schedule and the worker's sub-epoch, a run's
saved state, the ensemble, progress lines and MLflow tracking."""
