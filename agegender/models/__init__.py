"""Model builders. Importing this package registers the custom layers, so saved ``.keras``
models load with ``keras.models.load_model(path, safe_mode=True)``, and fills the one registry of
models and backbones (:mod:`agegender.models.registry`: ``create_model``, ``list_models``,
``get_backbone``, ``list_backbones``)."""

from agegender.models import lrn  # noqa: F401  (registers LocalResponseNormalization)
from agegender.models import backbones, transformer  # noqa: F401  (PixelPreprocess, TransformerEncoder, ...)
from agegender.models import face_resnets, loss_weighting  # noqa: F401  (LossWeighting, MultiTaskLossModel, ...)
from agegender.models import dual_cnn, levi_hassner, xception_transfer  # noqa: F401  (register their models)
from agegender.models import efficientnet_groups, mtl_head, multihead  # noqa: F401  (register models, backbones)
