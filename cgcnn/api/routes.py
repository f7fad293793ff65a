"""Which models a transfer uses: the route a fit asks for, and the models a fitted last layer needs.

The rules of ``transfer_learning_kappa.py`` (and of :class:`cgcnn.api.KappaModel`), written once:

- ``--original``: the original tool's route, ``mlp`` on ``crys_fea`` alone (T. Zhu et al., Energy
  Environ. Sci. 14, 3559 (2021));
- the recommended route (default): ``auto`` last layer with the ``slack`` descriptors, the property
  models (Debye temperature, bulk and shear moduli: lower-order-property transfer, S. Ju et al.,
  Phys. Rev. Materials (2021)) found beside the source model, and the ensemble members in its
  ``seed*/`` folders; without property models beside it, the ``structure`` descriptors (with a note);
- a fitted last layer names the property models (by file name) and member folders it was fit with,
  found again beside the source model it is given.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from cgcnn import InputError

__all__ = ["Route", "fit_route", "predict_route", "model_paths"]


@dataclass
class Route:
    """The models and inputs of one transfer.

    Attributes
    ----------
    kind : str
        Last-layer type (``auto``, ``mlp``, ``ridge``, ``rf``, ``gp``, ``ensemble``).
    descriptors : {"none", "structure", "slack"}
    paths : list of str
        The κ source models (with ensemble members: the first source model, then each member's).
    prop_paths : list of Path
        The property models (three per member, in the members' order); empty unless ``slack``.
    note : str or None
        What was decided for the user (e.g. ``structure`` descriptors for want of property models).
    """

    kind: str
    descriptors: str
    paths: list = field(default_factory=list)
    prop_paths: list = field(default_factory=list)
    note: str | None = None

    def model_files(self) -> dict:
        """The model files the transfer reads, by a name for messages (``MODELPATH (path)``, ``property model
        (path)``): no output may overwrite them (:class:`cgcnn.outputs.OutputSet`'s ``inputs``)."""
        inputs = {f"MODELPATH ({p})": p for p in self.paths}
        inputs.update({f"property model ({p})": p for p in self.prop_paths})
        return inputs

    def load_models(self, device=None) -> tuple[list, dict | None]:
        """The source models (:class:`cgcnn.model.SourceModel`, regression checked) and, with ``slack``
        descriptors, the property models by name (:func:`cgcnn.transfer.load_property_models`; else None).

        Raises
        ------
        InputError
            A model missing, unreadable, not a regression model, or of the wrong property.
        """
        from cgcnn.model import SourceModel
        from cgcnn.transfer import load_property_models

        kwargs = {"device": device} if device else {}
        sources = [SourceModel.load(p, require_regression=True, **kwargs) for p in self.paths]
        props = load_property_models(self.prop_paths, device=device) if self.descriptors == "slack" else None
        return sources, props


def model_paths(modelpath: str) -> list[str]:
    """The comma-separated source models of ``MODELPATH``.

    Raises
    ------
    InputError
        It names no model.
    """
    paths = [p for p in str(modelpath).split(",") if p]
    if not paths:
        raise InputError("MODELPATH names no model")
    return paths


def _property_paths(property_models: str | None, first_source: str) -> list[Path]:
    from cgcnn.transfer import default_property_models

    if property_models:
        return [Path(p) for p in property_models.split(",") if p]
    return default_property_models(first_source)


def fit_route(modelpath: str, last_layer_type: str | None = None, descriptors: str | None = None,
              property_models: str | None = None, members: str = "auto", original: bool = False) -> Route:
    """The route ``--train 1`` takes for these options (module docstring).

    Raises
    ------
    InputError
        ``original`` with another last-layer type or descriptor level; no model named.
    """
    if original:
        if last_layer_type not in (None, "mlp") or descriptors not in (None, "none"):
            raise InputError("--original means --last-layer-type mlp --descriptors none; give one or the other")
        kind, level = "mlp", "none"
    else:
        kind, level = last_layer_type or "auto", descriptors or "slack"
    paths = model_paths(modelpath)
    prop_paths = _property_paths(property_models, paths[0]) if level == "slack" else []
    note = None
    if descriptors is None and not property_models and level == "slack" and not all(p.is_file() for p in prop_paths):
        note = (f"no property models ({', '.join(p.name for p in prop_paths)}) beside {paths[0]}: "
                "descriptors 'structure'")
        level, prop_paths = "structure", []
    if level == "slack" and members == "auto" and len(paths) == 1 and not property_models:
        from cgcnn.transfer import with_members

        paths, prop_paths = with_members(paths, prop_paths)
    return Route(kind, level, paths, prop_paths, note)


def predict_route(modelpath: str, layer, property_models: str | None = None) -> Route:
    """The models a fitted last layer needs (``--train 0``): the property models and ensemble members it
    records, by name, beside the first source model of ``modelpath`` (unless ``property_models``)."""
    paths = model_paths(modelpath)
    level = layer.inputs.get("descriptors", "none")
    prop_paths = _property_paths(property_models, paths[0]) if level == "slack" else []
    if layer.inputs.get("property_models") and not property_models:
        names = [s["name"] for s in layer.inputs["property_models"]]
        folders = layer.inputs.get("member_folders", [])
        if len(paths) == 1 and folders:
            base = Path(paths[0]).parent
            paths = paths + [str(base / f / Path(paths[0]).name) for f in folders]
        dirs = [Path(p).parent for p in paths]
        prop_paths = [dirs[min(i // 3, len(dirs) - 1)] / name for i, name in enumerate(names)]
    return Route(layer.kind, level, paths, prop_paths)
