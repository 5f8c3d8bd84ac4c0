"""The GPU kit's networks: which models it trains, with their papers' settings, and how it builds and splits them.

Shared by the kit's entry point (:mod:`agegender.gpu_kit`: ``run``) and its builder
(:mod:`agegender.gpu_kit_build`: the FLOP estimate), so that neither imports the other's command module.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class KitModel:
    """One network the kit trains, with its paper's settings (cited where the reproductions cite them)."""

    name: str
    paper: str
    variant: str  # Speziali: dual / gender / age; Dey: the backbone
    input_size: int
    batch_size: int
    protocol: str  # make_split protocol
    paper_epochs: int  # Speziali: early stopping ended at 8-10 of at most 50 (Sec. IV-B); Dey: 10 (Sec. 4.2)

    @property
    def tasks(self) -> tuple[str, ...]:
        if self.paper == "speziali":
            return {"dual": ("gender", "age"), "gender": ("gender",), "age": ("age",)}[self.variant]
        return ("age", "ethnicity", "gender")


MODELS = {f"speziali_{v}": KitModel(f"speziali_{v}", "speziali", v, 128, 64, "speziali", 9)
          for v in ("dual", "gender", "age")}  # Sec. III-B: 128 x 128 x 3, batch 64
MODELS.update({f"dey_{b}": KitModel(f"dey_{b}", "dey", b, 224, 16, "dey", 10)  # Sec. 3.2: 224; Sec. 4.2: 16, 10
               for b in ("vgg19", "resnet50", "inception_v3", "xception", "mobilenet", "transformer")})
DEFAULT_MODELS = ("speziali_dual", "dey_mobilenet")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
DEY_MAX_AGE = 65.0  # Sec. 3.2 and 4.1: age / the maximum age kept (10-65)


def _heads(spec: KitModel) -> dict:
    """The declared heads (:mod:`agegender.heads`) of ``spec``'s outputs, by output name, as its reproduction
    declares them (Speziali: age in years, sparse gender; Dey: age / 65 through a sigmoid, one-hot classes)."""
    from agegender.heads import tasks

    every = tasks("speziali" if spec.paper == "speziali" else "dey_aggarwal")
    assert spec.paper == "speziali" or every["age"].max_age == DEY_MAX_AGE
    return {task: every[task] for task in spec.tasks}


def _targets(spec: KitModel) -> dict:
    """The pipeline's labels of each output, from its declared head."""
    return {task: head.target() for task, head in _heads(spec).items()}


def _augment(spec: KitModel):
    from agegender.data.pipeline import Augment

    if spec.paper == "speziali":  # Sec. III-A: mirrored, rotated up to 10 degrees, colour jitter (sizes: our choice)
        return Augment(flip=True, rotation_deg=10.0, brightness=0.2, contrast=0.2, saturation=0.2, hue=0.05)
    return None  # Dey & Aggarwal name no augmentation


def build_model(spec: KitModel, input_size: int):
    """The network of ``spec``, compiled with its paper's optimiser and losses (as the reproductions compile it)."""
    import keras

    if spec.paper == "speziali":
        from agegender.models.dual_cnn import build_dual_cnn

        model = build_dual_cnn(spec.variant, input_size=input_size, dropout=0.25)
        bn = model.get_layer("block1_bn")
        bn.momentum, bn.epsilon = 0.9, 1e-5  # PyTorch's BatchNorm2d defaults, as reproductions.utkface_dual_cnn
        weights = {"age": 0.01, "gender": 1.0}  # Sec. IV-B: lambda_age = 0.01
        rate = 0.001 if spec.variant == "age" else 0.01  # Sec. III-B
        model.compile(optimizer=keras.optimizers.Adam(rate, epsilon=1e-8),
                      loss={t: h.keras_loss() for t, h in _heads(spec).items()}, loss_weights={t: weights[t] for t in spec.tasks})
        return model
    from agegender.models.multihead import build_multihead

    model = build_multihead(spec.variant, input_size=input_size, weights=None, preprocess="paper", units=128)
    model.compile(optimizer=keras.optimizers.RMSprop(learning_rate=1e-3, rho=0.9),  # Sec. 4.2
                  loss={t: h.keras_loss() for t, h in _heads(spec).items()})
    return model


def _split(samples, spec: KitModel, seed: int, max_images: int | None):
    from agegender.data.splits import make_split

    frame = samples.frame
    if max_images is not None and max_images < len(frame):
        frame = frame.sample(n=max_images, random_state=seed).sort_values("file").reset_index(drop=True)
    return make_split(frame, spec.protocol, seed=seed)
