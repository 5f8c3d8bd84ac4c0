"""Model builders. Importing this package registers the custom layers, so saved ``.keras``
models load with ``keras.models.load_model(path, safe_mode=True)``."""

from agegender.models import lrn  # noqa: F401  (registers LocalResponseNormalization)
from agegender.models import backbones, transformer  # noqa: F401  (PixelPreprocess, TransformerEncoder, ...)
from agegender.models import face_resnets, loss_weighting  # noqa: F401  (LossWeighting, MultiTaskLossModel, ...)
