"""Training: ``prepare`` readies a run's data, ``run`` trains one model on the ``trainer``'s loop, ``ensemble`` and
``experiment`` make ensembles and cross-validation folds of runs, ``adapt`` onboards new labelers."""
