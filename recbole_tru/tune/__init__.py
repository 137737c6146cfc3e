"""The Ray layer of recbole-tru: hyperparameter sweeps of unlearning methods (Ray Tune) and the
parallel tasks SISA trains its shards with. Nothing else in the package imports Ray.

* :mod:`~recbole_tru.tune.space` -- search-space files -> Ray Tune domains;
* :mod:`~recbole_tru.tune.objective` -- the calibration objective (validation + forget gap);
* :mod:`~recbole_tru.tune.trial` -- the function trainable;
* :mod:`~recbole_tru.tune.sweep` -- :func:`run_sweep`, the driver (``--tune=<file>``);
* :mod:`~recbole_tru.tune.report` -- ``trials.csv``, ``best.yaml``, ``pareto.png``;
* :mod:`~recbole_tru.cluster` -- local Ray or ``--ray_address``; parallel tasks.
"""
from recbole_tru.tune.sweep import run_sweep

__all__ = ["run_sweep"]
