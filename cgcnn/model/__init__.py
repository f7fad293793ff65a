"""The network (upstream CGCNN's ``cgcnn.model``): the crystal graph convolutional neural network, its
checkpoint format, the source model that turns crystals into ``crys_fea``, and the training loop.

- :mod:`~cgcnn.model.network`: :class:`CrystalGraphConvNet`, :class:`ConvLayer` (Xie & Grossman, PRL 120,
  145301 (2018), Eq. 5; state_dict keys and shapes of upstream's checkpoints);
- :mod:`~cgcnn.model.checkpoint`: checkpoints loaded safely and saved (:func:`load_checkpoint`,
  :func:`make_checkpoint`, :func:`save_checkpoint`), the target :class:`Normalizer`, :class:`ModelInfo`;
- :mod:`~cgcnn.model.source`: :class:`SourceModel`, a trained network applied to crystals (``crys_fea``,
  predictions) on the CPU or a GPU;
- :mod:`~cgcnn.model.stack`: several source models on the same batches (:class:`ModelSet`,
  :func:`run_batches`) with fixed torch threads (:func:`network_threads`), networks of one
  architecture as one batched call (:class:`NetworkStack`);
- :mod:`~cgcnn.model.settings`, :mod:`~cgcnn.model.fit`: training settings and loop (upstream ``main.py``;
  staged fine-tuning of ParAIsite, :func:`finetune`).

Layer: above :mod:`cgcnn.data`.
"""

from cgcnn.model.checkpoint import (
    NORMALIZER_SAMPLE,
    PROJECT_KEYS,
    ModelInfo,
    Normalizer,
    load_checkpoint,
    make_checkpoint,
    normalizer_from_checkpoint,
    save_checkpoint,
    state_dict_mismatch,
)
from cgcnn.model.fit import (
    EpochCallback,
    finetune,
    fit_network,
    freeze_layers,
    make_optimizer,
    run_epoch,
)
from cgcnn.model.network import (
    ConvLayer,
    CrystalGraphConvNet,
    batch_index,
)
from cgcnn.model.settings import (
    FitSettings,
    NetworkSettings,
    SplitSettings,
    TrainSettings,
)
from cgcnn.model.source import (
    SourceModel,
    choose_atom_init,
    default_device,
)
from cgcnn.model.stack import (
    NETWORK_THREADS,
    SLICE_ATOMS,
    SLICE_CRYSTALS,
    ModelSet,
    NetworkStack,
    network_threads,
    run_batches,
)

__all__ = [
    "ConvLayer", "CrystalGraphConvNet", "EpochCallback", "FitSettings", "ModelInfo", "ModelSet",
    "NETWORK_THREADS", "NORMALIZER_SAMPLE", "NetworkSettings", "NetworkStack", "Normalizer", "PROJECT_KEYS",
    "SLICE_ATOMS", "SLICE_CRYSTALS", "SourceModel", "SplitSettings", "TrainSettings",
    "batch_index", "choose_atom_init", "default_device", "finetune", "fit_network", "freeze_layers",
    "load_checkpoint", "make_checkpoint", "make_optimizer", "network_threads", "normalizer_from_checkpoint",
    "run_batches", "run_epoch", "save_checkpoint", "state_dict_mismatch",
]
