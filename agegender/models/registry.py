"""One registry of the suite's models and one of its backbones (``register_model`` / ``create_model`` /
``list_models``, as timm has them).

Models. Each builder module registers its models under ``<paper key>/<model>`` with the heads it
declares (:mod:`agegender.heads`) and the arguments of a small, weight-free build (what the
tests and the benchmarks build)::

    from agegender.models.registry import create_model, list_models
    list_models("dey_aggarwal/*")          # ['dey_aggarwal/inception_v3', ..., 'dey_aggarwal/xception']
    model = create_model("speziali/dual_cnn", input_size=64)
    model = create_model("jorgensen/levi_multitask", small=True)   # the entry's small build

Backbones. The three families register theirs under ``keras/<name>`` (Dey & Aggarwal's six,
:mod:`agegender.models.backbones`), ``face/<key>`` (Sundriyal's face-recognition ResNets and their
stand-ins, :mod:`agegender.models.face_resnets`) and ``efficientnet/<key>`` (Gu & Yang's B4-B7,
:mod:`agegender.models.efficientnet_groups`); :func:`get_backbone` looks any of them up by that
name, :func:`list_backbones` lists them. Each family keeps its own spec type (what it needs to
build one) and its own short-name lookup for its paper's command line.

Importing :mod:`agegender.models` (which importing this module does first) imports every
builder, so both registries are complete; this module imports no builder itself.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from typing import Any, Callable


@dataclasses.dataclass(frozen=True)
class ModelEntry:
    """A registered model: its builder with fixed arguments, its declared heads and a small build."""

    name: str
    build: Callable[..., Any]
    heads: dict  # output name -> agegender.heads.TaskSpec of the default build
    defaults: dict = dataclasses.field(default_factory=dict)  # arguments fixed for this entry
    small: dict = dataclasses.field(default_factory=dict)  # arguments of a small weight-free build (tests)
    paper: str = ""
    description: str = ""
    heavy: bool = False  # a small build still takes seconds on a CPU (EfficientNet, Xception, Inception)


@dataclasses.dataclass(frozen=True)
class BackboneEntry:
    """A registered backbone: its family's spec and a label (the paper's name for it)."""

    name: str
    family: str
    spec: Any
    label: str


_MODELS: dict[str, ModelEntry] = {}
_BACKBONES: dict[str, BackboneEntry] = {}


def register_model(name: str, build: Callable[..., Any] | None = None, *, heads: dict, defaults: dict | None = None,
                   small: dict | None = None, paper: str = "", description: str = "", heavy: bool = False):
    """Register ``build`` (called with ``defaults``, then the caller's arguments) as ``name``; usable as a
    decorator (``@register_model("x", heads=...)``). A name is registered once."""
    def add(fn):
        if name in _MODELS and _MODELS[name].build is not fn:
            raise ValueError(f"model {name!r} is registered already")
        _MODELS[name] = ModelEntry(name, fn, dict(heads), dict(defaults or {}), dict(small or {}),
                                   paper or name.split("/")[0], description or (fn.__doc__ or "").split("\n")[0],
                                   heavy)
        return fn

    return add(build) if build is not None else add


def model_entry(name: str) -> ModelEntry:
    """The registered model ``name``; a ValueError listing the registered names otherwise."""
    try:
        return _MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; registered: {', '.join(list_models())}") from None


def create_model(name: str, *, small: bool = False, **kwargs):
    """Build the registered model ``name``: its fixed arguments, then (``small``) its small build's, then
    ``kwargs``."""
    entry = model_entry(name)
    return entry.build(**{**entry.defaults, **(entry.small if small else {}), **kwargs})


def list_models(pattern: str = "*") -> list[str]:
    """The registered model names matching the shell ``pattern`` (``"jorgensen/*"``), sorted."""
    return sorted(n for n in _MODELS if fnmatch.fnmatch(n, pattern))


def register_backbone(family: str, key: str, spec, label: str) -> None:
    """Register a family's backbone ``spec`` as ``<family>/<key>``."""
    name = f"{family}/{key}"
    if name in _BACKBONES and _BACKBONES[name].spec is not spec:
        raise ValueError(f"backbone {name!r} is registered already")
    _BACKBONES[name] = BackboneEntry(name, family, spec, label)


def get_backbone(name: str) -> BackboneEntry:
    """The backbone ``<family>/<key>`` (``keras/xception``, ``face/senet50_128``, ``efficientnet/b4``)."""
    try:
        return _BACKBONES[name]
    except KeyError:
        raise ValueError(f"unknown backbone {name!r}; registered: {', '.join(list_backbones())}") from None


def list_backbones(family: str | None = None) -> list[str]:
    """The registered backbone names (of one ``family``: ``keras``, ``face``, ``efficientnet``), sorted."""
    return sorted(n for n, e in _BACKBONES.items() if family is None or e.family == family)


def family_lookup(family: str, key: str):
    """The spec of ``key`` in ``family`` (what a family's own ``get_backbone`` returns), or None."""
    entry = _BACKBONES.get(f"{family}/{key}")
    return None if entry is None else entry.spec
