"""The transfer (T. Zhu et al., Energy Environ. Sci. 14, 3559 (2021)): the inputs of the last layer
(frozen source models' ``crys_fea`` and Slack's physical descriptors), the last-layer regressors, their
prediction intervals and applicability domain, and ``last_layer.sav`` read and written.

- :mod:`~cgcnn.transfer.features`: the last-layer inputs of a data folder or a batch of crystals
  (:func:`compute_features`, :class:`Features`), the property models (:func:`load_property_models`) and
  ensemble members (:func:`with_members`);
- :mod:`~cgcnn.transfer.descriptors`: Slack's formula and its inputs (:func:`structure_descriptors`,
  :func:`slack_descriptors`);
- :mod:`~cgcnn.transfer.estimators`: the regressor of each ``--last-layer-type`` (:func:`make_estimator`)
  and its cross-validation;
- :mod:`~cgcnn.transfer.intervals`: CV+ prediction intervals and the applicability domain;
- :mod:`~cgcnn.transfer.lastlayer`: :class:`LastLayer`, the fitted regressor with its record;
- :mod:`~cgcnn.transfer.bte`: the phonon-BTE value (``cgcnn.refine``) as one more input, a second model fit on
  the crystals that have one (:func:`read_bte`, :func:`fit_bte`, :func:`predict_routes`);
- :mod:`~cgcnn.transfer.layerfile`: ``last_layer.sav`` read without running code from it;
- :mod:`~cgcnn.transfer.layertypes`: the exact classes a ``last_layer.sav`` may hold, and the check of a
  loaded one.

Layer: above :mod:`cgcnn.model`.
"""

from cgcnn.transfer.bte import (
    BTE_COLUMN,
    BTE_MODES,
    ROUTE_COLUMNS,
    BTEValues,
    bte_columns,
    bte_groups,
    check_bte_use,
    fit_bte,
    folder_bte,
    plain_oof,
    predict_routes,
    read_bte,
    reason_counts,
    stack_coefficients,
)
from cgcnn.transfer.descriptors import (
    SLACK_DESCRIPTORS,
    STRUCTURE_DESCRIPTORS,
    debye_from_moduli,
    gruneisen_from_poisson,
    slack_descriptors,
    slack_kappa,
    structure_descriptors,
    structure_facts,
    structure_type,
    symmetry_dataset,
)
from cgcnn.transfer.estimators import (
    CANDIDATES,
    LAST_LAYER_TYPES,
    ColumnKernel,
    MemberAverage,
    cv_mae,
    make_estimator,
    quiet_fit,
    quiet_predict,
    quietly,
    repeated_folds,
)
from cgcnn.transfer.features import (
    DESCRIPTOR_SETS,
    PROPERTY_MODEL_FILES,
    PROPERTY_TARGETS,
    Features,
    assemble_features,
    compute_features,
    default_property_models,
    features_from_datasets,
    inputs_record,
    load_property_models,
    member_folders,
    source_order_problem,
    source_record,
    with_members,
)
from cgcnn.transfer.intervals import (
    check_level,
    conformal_folds,
    domain_distance,
    fit_conformal,
    fit_domain,
    interval_cv,
    interval_fold,
    interval_folds,
    with_level,
)
from cgcnn.transfer.lastlayer import (
    LastLayer,
    Prediction,
)
from cgcnn.transfer.layerfile import (
    MOVED_MODULES,
    check_fitted,
    load_pickle,
    load_skops,
    skops_io,
    v1_fields,
)
from cgcnn.transfer.layertypes import (
    LAYER_CLASSES,
    PICKLE_GLOBALS,
    SKOPS_LOADERS,
    check_loaded,
)

__all__ = [
    "BTE_COLUMN", "BTE_MODES", "BTEValues", "ROUTE_COLUMNS", "bte_columns", "bte_groups", "check_bte_use",
    "fit_bte", "folder_bte", "plain_oof", "predict_routes", "read_bte", "reason_counts", "stack_coefficients",
    "v1_fields",
    "CANDIDATES", "ColumnKernel", "DESCRIPTOR_SETS", "Features", "LAST_LAYER_TYPES", "LAYER_CLASSES",
    "LastLayer", "MOVED_MODULES", "MemberAverage", "PICKLE_GLOBALS", "PROPERTY_MODEL_FILES", "PROPERTY_TARGETS",
    "Prediction", "SKOPS_LOADERS", "SLACK_DESCRIPTORS", "STRUCTURE_DESCRIPTORS", "assemble_features",
    "check_fitted", "check_level", "check_loaded", "compute_features", "conformal_folds", "cv_mae",
    "debye_from_moduli", "default_property_models", "domain_distance", "features_from_datasets",
    "fit_conformal", "fit_domain", "gruneisen_from_poisson", "inputs_record", "interval_cv", "interval_fold",
    "interval_folds", "load_pickle", "load_property_models", "load_skops", "make_estimator", "member_folders",
    "quiet_fit", "quiet_predict", "quietly", "repeated_folds", "skops_io", "slack_descriptors", "slack_kappa",
    "source_order_problem", "source_record", "structure_descriptors", "structure_facts", "structure_type",
    "symmetry_dataset", "with_level", "with_members",
]
