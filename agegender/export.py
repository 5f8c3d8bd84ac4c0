"""``python -m agegender export``: a serving artefact with the preprocessing inside.

Formats
-------
``savedmodel``
    A TensorFlow SavedModel folder. Signature ``serving_default`` (also ``serve``) takes
    ``images``: uint8 RGB face crops ``[batch, height, width, 3]`` of any size (one size per
    call) and returns the raw head outputs under the model's output names plus the decoded
    values (below). Preprocessing inside: :func:`agegender.preprocess.resize_uint8` to ``load_size``,
    round to uint8, centre crop to ``input_size``, ``* pixel_scale + pixel_offset``: the
    evaluation pipeline's ops (:mod:`agegender.preprocess`).
``tflite``
    A ``.tflite`` file with the same signature (``serving_default``; inputs of any size: the
    interpreter's signature runner resizes the input tensor). The resize is the
    matrix-product form of the same resize (TensorFlow Lite builtin ops only; at
    most 1 grey level from the SavedModel's after rounding). Float32 weights, no quantisation.
``onnx`` (optional)
    Via ``tf2onnx`` when it is installed (``pip install tf2onnx``), from the same graph as
    ``tflite``; input ``images`` uint8 ``[batch, height, width, 3]``.

Decoded outputs, when the model has the head: ``age_years`` ``[batch]``; ``age_group`` (index)
and ``age_group_prob`` for a groups head; ``gender`` (index into the labels) and
``gender_prob``; ``race`` / ``race_prob`` (index and probability). Labels, group ages and
the whole preprocessing spec are written beside the artefact as ``agegender.json`` (SavedModel:
inside the folder; TFLite / ONNX: ``<file>.json``). There is no test-time augmentation
inside the artefact, and no face detection: feed face crops taken as
:func:`agegender.predict.crop_face` takes them.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

from agegender.errors import DataError
from agegender.preprocess import Preprocessing, centre_crop, resize_uint8, scale_pixels

__all__ = ["FORMATS", "export_model", "serving_fn"]

FORMATS = ("savedmodel", "tflite", "onnx")


def serving_fn(model, spec: Preprocessing, *, resize: str = "tf"):
    """``fn(images uint8 [B, H, W, 3]) -> {name: tensor}``: preprocessing, the model and the head decoding."""
    import tensorflow as tf

    from agegender.predict import output_names

    names = output_names(model)

    def serve(images):
        loaded = resize_uint8(images, spec.load_size, method=resize)
        if spec.load_size != spec.input_size:
            loaded = centre_crop(loaded, spec.input_size)
        x = scale_pixels(loaded, spec.pixel_scale, spec.pixel_offset)
        out = model(x, training=False)
        if not isinstance(out, dict):
            out = dict(zip(names, out if isinstance(out, (list, tuple)) else [out]))
        result = {f"raw_{k}": tf.cast(v, tf.float32) for k, v in out.items()}
        result.update(_decode_tf(out, spec))
        return result

    return serve


def _decode_tf(out: dict, spec: Preprocessing) -> dict:
    """The decoding of :func:`agegender.preprocess.decode_heads`, as TensorFlow ops."""
    import tensorflow as tf

    decoded = {}
    for role, head in spec.heads.items():
        value = tf.cast(out[head.output], tf.float32)
        value = tf.reshape(value, (tf.shape(value)[0], -1))
        if role == "age" and head.kind == "regression":
            decoded["age_years"] = value[:, 0] / head.scale + head.offset
        elif role == "age" and head.kind == "sigmoid":
            decoded["age_years"] = value[:, 0] * head.max_age + head.offset
        else:
            if head.kind == "sigmoid":
                p1 = tf.clip_by_value(value[:, 0], 0.0, 1.0)
                probs = tf.stack([1.0 - p1, p1], axis=1)
            else:
                probs = tf.maximum(value, 0.0)
                probs = probs / tf.maximum(tf.reduce_sum(probs, axis=1, keepdims=True), 1e-12)
            name = "age_group" if role == "age" else role
            decoded[name] = tf.cast(tf.argmax(probs, axis=1), tf.int32)
            decoded[f"{name}_prob"] = tf.reduce_max(probs, axis=1)
            if role == "age":
                decoded["age_years"] = tf.reduce_sum(probs * tf.constant(head.values, tf.float32)[None], axis=1)
    return decoded


def _sidecar(spec: Preprocessing, model, fmt: str, resize: str, source) -> dict:
    from agegender.predict import output_names

    return {
        "format": fmt,
        "source_model": str(source),
        "input": {"name": "images", "dtype": "uint8", "shape": [None, None, None, 3],
                  "meaning": "RGB face crops (one size per call), cropped from photos as "
                             "agegender.predict.crop_face does with preprocessing.face"},
        "resize": "tf.image.resize, antialiased from a 2x downscale" if resize == "tf" else
            "the same triangle-kernel resize as matrix products",
        "outputs": {"raw": [f"raw_{n}" for n in output_names(model)],
                    "decoded": sorted(k for k in _decoded_names(spec))},
        "labels": {role: list(head.labels) for role, head in spec.heads.items() if head.labels},
        "group_ages": {role: list(head.values) for role, head in spec.heads.items() if head.values},
        "preprocessing": spec.to_dict(),
    }


def _decoded_names(spec: Preprocessing) -> set:
    names = set()
    for role, head in spec.heads.items():
        if role == "age":
            names.add("age_years")
            if head.kind == "groups":
                names |= {"age_group", "age_group_prob"}
        else:
            names |= {role, f"{role}_prob"}
    return names


def _write_savedmodel(model, spec: Preprocessing, path: Path, resize: str) -> Path:
    import keras
    import tensorflow as tf

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serve", serving_fn(model, spec, resize=resize),
                         input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")])
    if path.exists():
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    archive.write_out(str(path), verbose=False)
    return path


def export_model(model_arg, fmt: str = "savedmodel", out=None, *, preprocessing=None, log=None) -> dict:
    """Export ``--model`` (run folder or .keras) as ``fmt``; returns ``{format, path, sidecar, ...}``."""
    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    if fmt not in FORMATS:
        raise DataError(f"unknown export format {fmt!r}", fix=f"use --format {' or '.join(FORMATS)}")
    if fmt == "onnx":
        try:
            import tf2onnx  # noqa: F401
        except ImportError:
            raise DataError("ONNX export needs tf2onnx, which is not installed",
                            fix="pip install tf2onnx (optional), or export --format savedmodel / tflite") from None
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from agegender.predict import load_run

    if isinstance(model_arg, tuple):
        model, spec = model_arg
        model_path = Path("<in-memory model>")
        base = Path(out) if out is not None else None
        if base is None:
            raise DataError("an in-memory model needs an output path", fix="pass out=PATH")
    else:
        model, spec, model_path, _ = load_run(model_arg, preprocessing)
        base = model_path.parent / "export"
    default = {"savedmodel": base / "savedmodel", "tflite": base / "model.tflite", "onnx": base / "model.onnx"}
    path = Path(out) if out is not None else default[fmt]
    path.parent.mkdir(parents=True, exist_ok=True)
    result = {"format": fmt, "path": str(path), "source": str(model_path)}
    if fmt == "savedmodel":
        _write_savedmodel(model, spec, path, "tf")
        sidecar = path / "agegender.json"
    elif fmt == "tflite":
        result["ops"] = _write_tflite(model, spec, path, log)
        sidecar = Path(f"{path}.json")
    else:
        _write_onnx(model, spec, path)
        sidecar = Path(f"{path}.json")
    info = _sidecar(spec, model, fmt, "tf" if fmt == "savedmodel" else "matmul", model_path)
    if "ops" in result:
        info["ops"] = result["ops"]
    from agegender import atomic

    atomic.write_json(sidecar, info)
    result["sidecar"] = str(sidecar)
    return result


def _write_tflite(model, spec: Preprocessing, path: Path, log) -> str:
    import tensorflow as tf

    with tempfile.TemporaryDirectory(prefix="agegender-export-") as tmp:
        saved = _write_savedmodel(model, spec, Path(tmp) / "savedmodel", "matmul")
        errors = []
        for ops, label in (([tf.lite.OpsSet.TFLITE_BUILTINS], "builtins"),
                           ([tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS], "builtins+select_tf_ops")):
            converter = tf.lite.TFLiteConverter.from_saved_model(str(saved), signature_keys=["serving_default"])
            converter.target_spec.supported_ops = ops
            try:
                blob = converter.convert()
            except Exception as err:  # noqa: BLE001 - try the next op set, report both if neither works
                errors.append(f"{label}: {str(err).strip().splitlines()[0][:200] if str(err).strip() else err}")
                continue
            if label != "builtins":
                log(f"note: the model needs TensorFlow ops that TensorFlow Lite lacks; the .tflite file uses "
                    f"SELECT_TF_OPS (the Flex delegate) ({errors[0]})")
            from agegender import atomic

            with atomic.atomic_path(path) as target:
                target.write_bytes(blob)
            return label
    raise DataError(f"TensorFlow Lite conversion failed ({'; '.join(errors)})", path=path,
                    fix="export --format savedmodel instead")


def _write_onnx(model, spec: Preprocessing, path: Path) -> None:
    import tensorflow as tf
    import tf2onnx

    fn = tf.function(serving_fn(model, spec, resize="matmul"))
    signature = [tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")]
    try:
        tf2onnx.convert.from_function(fn, input_signature=signature, opset=17, output_path=str(path))
    except Exception as err:  # noqa: BLE001
        raise DataError(f"ONNX conversion failed ({type(err).__name__}: {str(err)[:200]})", path=path,
                        fix="export --format savedmodel or tflite instead") from None


def load_tflite(path):
    """A callable ``fn(images uint8 [B, H, W, 3]) -> {name: ndarray}`` for an exported ``.tflite`` file."""
    import warnings

    import tensorflow as tf

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation notice (LiteRT reads the same file)
        interpreter = tf.lite.Interpreter(model_path=str(path))
    runner = interpreter.get_signature_runner("serving_default")

    def run(images):
        return dict(runner(images=images))

    return run
