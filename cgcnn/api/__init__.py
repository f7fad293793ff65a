"""The Python API: the transfer tool for notebooks and workflows (:class:`KappaModel`), and the rules that
pick the models of a transfer (:func:`fit_route`, :func:`predict_route`) which the command line shares.

- :mod:`~cgcnn.api.kappa`: :class:`KappaModel` (``fit``, ``save``, ``load``, ``predict``, ``featurize``);
- :mod:`~cgcnn.api.crystals`: pymatgen ``Structure``, ASE ``Atoms`` and structure files as the screening
  engine reads them (:func:`crystals_of`);
- :mod:`~cgcnn.api.routes`: the route of ``--train 1`` and the models of ``--train 0`` (:class:`Route`).

Layer: above :mod:`cgcnn.screening` and :mod:`cgcnn.evaluation`, below the command lines.
"""

from cgcnn.api.crystals import crystals_of
from cgcnn.api.kappa import KappaModel
from cgcnn.api.routes import Route, fit_route, model_paths, predict_route

__all__ = ["KappaModel", "Route", "crystals_of", "fit_route", "model_paths", "predict_route"]
