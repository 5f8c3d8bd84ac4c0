"""Plain helpers (no fixtures) shared by more than one test module, imported as ``from tests.helpers import ...``:
the tiny backbone, random batch and small MTL model of the Sundriyal tests (``test_loss_weighting``,
``test_early_freeze``, ``test_sundriyal_networks``); the repository root, the TensorFlow blocker
(``tests/without_tensorflow.py``) and the environment of a JAX subprocess for the backend tests
(``test_backends``, ``test_jax_training_logic``, ``test_jax_real_faces``); and the tiny random-weight model,
preprocessing spec and fake run folder of the predict tests (``test_preprocess``, ``test_predict``,
``test_export``, ``test_cli_errors`` and the ``run_dir`` fixture of ``tests/conftest.py``)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from agegender.preprocess import FACE_PRESETS, Head, Preprocessing


# ------------------------------------------------------------------------------------------------- Sundriyal


def _tiny_backbone(size=16):
    import keras

    inputs = keras.Input((size, size, 3), name="image")
    x = keras.layers.Rescaling(1 / 255.0, name="rescale")(inputs)
    x = keras.layers.Conv2D(4, 3, strides=2, name="c1")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, x, name="backbone")


def _batch(n=32, size=16, seed=0, tasks=("gender", "race", "age")):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 255, (n, size, size, 3)).astype("float32")
    every = {"gender": rng.integers(0, 2, n).astype("int32"), "race": rng.integers(0, 5, n).astype("int32"),
             "age": rng.uniform(0, 1, (n, 1)).astype("float32")}
    return x, {t: every[t] for t in tasks}


def _utk_model(lam=0.1, seed=1, loss="weighted", method="mtl"):
    import keras

    from agegender.models.mtl_head import TASKS, HeadConfig, build_model

    keras.utils.set_random_seed(0)
    tasks = TASKS["utkface"] if method == "mtl" else {"gender": TASKS["utkface"]["gender"]}
    return build_model(_tiny_backbone(), tasks, method, loss=loss, lam=lam, seed=seed,
                       head=HeadConfig(shared_units=(8,), task_units=4))


# -------------------------------------------------------------------------------------------------- backends


REPO = Path(__file__).resolve().parents[1]
BLOCKER = REPO / "tests" / "without_tensorflow.py"


def _env(**extra) -> dict:
    env = {**os.environ, "KERAS_BACKEND": "jax", "AGEGENDER_LOADER_WORKERS": "0", "CUDA_VISIBLE_DEVICES": "",
           "JAX_PLATFORMS": "cpu", "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    env.update(extra)
    return env


# ---------------------------------------------------------------------------------------- predict and export


def _tiny_model(size=32, *, race_name="race", gender_units=1):
    import keras

    inputs = keras.Input((size, size, 3), name="image")
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    x = keras.layers.Conv2D(4, 3, strides=2, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = {"age": keras.layers.Dense(1, name="age")(x),
               "gender": keras.layers.Dense(gender_units, activation="sigmoid" if gender_units == 1 else "softmax",
                                            name="gender")(x),
               race_name: keras.layers.Dense(5, activation="softmax", name=race_name)(x)}
    return keras.Model(inputs, outputs)


def _spec(**changes):
    base = dict(input_size=32, load_size=40, pixel_scale=1.0, face=FACE_PRESETS["utkface"],
                heads={"age": Head.age_regression(scale=0.1, offset=30), "gender": Head.gender_sigmoid(),
                       "race": Head.race_softmax()})
    base.update(changes)
    return Preprocessing(**base)


def _write_run(folder: Path, model, spec: Preprocessing | None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    model.save(folder / "model.keras")
    record = {"schema": 1, "reproduction": "test", "experiment": "tiny", "status": "complete"}
    if spec is not None:
        record["preprocessing"] = spec.to_dict()
    (folder / "record.json").write_text(json.dumps(record), encoding="utf-8")
    return folder


# ------------------------------------------------------------------------------------------- shared fixtures


def generated_faces(tmp_path_factory, layout: str, n: int, *, size: int, name: str | None = None) -> Path:
    """A fresh folder of ``n`` generated faces in ``layout``'s file layout (seed 0), for module-scoped fixtures."""
    from agegender.data.synth import synthesize

    root = tmp_path_factory.mktemp(name or layout)
    synthesize(layout, root, n, seed=0, size=size)
    return root


def echo_python(folder: Path) -> tuple[Path, Path]:
    """(a stand-in ``python`` that appends its arguments to a log, that log): what ``make PY=...`` would run."""
    log = folder / "calls.log"
    stub = folder / "python"
    stub.write_text(f'#!/bin/sh\necho "$@" >> {log}\n')
    stub.chmod(0o755)
    return stub, log
