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

Nothing is lost
---------------
``export`` never removes what it did not create. An existing non-empty ``--out`` (or TFLite /
ONNX sidecar) is refused unless ``--overwrite`` is given; then the new artefact is written beside
it (a hidden temporary folder in the same folder), swapped into place with renames, and the old
one is removed last, so an export that fails half-way leaves the old artefact as it was. Even
with ``--overwrite``, ``--out`` may not be the working directory, the run folder, the model file
or any folder that holds one of them (``--out .`` is refused), and an existing folder is
replaced only if it is an earlier SavedModel export (it holds ``saved_model.pb``).

Checked against the ``.keras`` model
------------------------------------
Before it is swapped into place, the artefact is loaded back (TensorFlow / the TFLite
interpreter / ``onnxruntime`` when installed) and run on faces: generated ones
(:func:`agegender.data.synth.draw_face`, at two sizes) or, with ``check_faces`` (``--check-faces
DIR``), up to 8 real face crops. Its raw outputs are compared with the ``.keras`` model's on the
same faces preprocessed as the evaluation pipeline does (:class:`agegender.predict.Predictor`):
the largest absolute difference per output and overall is returned under ``check`` and written
into the sidecar; over the tolerance (1e-4 for a SavedModel; 1e-2 for TFLite / ONNX, whose resize
may round one grey level differently) a warning says so.
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
    """Write a SavedModel to ``path``, which must not exist yet (a fresh temporary folder's child)."""
    import keras
    import tensorflow as tf

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serve", serving_fn(model, spec, resize=resize),
                         input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")])
    archive.write_out(str(path), verbose=False)
    _follow_umask(path)
    return path


def _follow_umask(path: Path) -> None:
    """TensorFlow writes some files 0600 / folders 0700: give the artefact the modes the umask gives."""
    from agegender import atomic

    file_mode, folder_mode = atomic.file_mode(), atomic.folder_mode()
    if path.is_file():
        os.chmod(path, file_mode)
        return
    os.chmod(path, folder_mode)
    for folder, dirs, files in os.walk(path):
        for name in dirs:
            os.chmod(os.path.join(folder, name), folder_mode)
        for name in files:
            os.chmod(os.path.join(folder, name), file_mode)


def _non_empty(path: Path) -> bool:
    if path.is_symlink() or path.is_file():
        return path.is_symlink() or path.stat().st_size > 0
    if path.is_dir():
        return any(path.iterdir())
    return path.exists()


def _check_out(path: Path, fmt: str, overwrite: bool, protected: list[Path]) -> list[Path]:
    """Refuse an ``--out`` that would remove what export did not create; the paths it will replace."""
    target = path.resolve()
    where = {"the working directory": Path.cwd().resolve()}
    where.update({f"the {what}": p.resolve() for what, p in protected})
    for what, inside in where.items():
        if inside == target or inside.is_relative_to(target):
            holds = "is" if inside == target else "holds"
            raise DataError(f"--out {holds} {what}; export would replace it", path=path,
                            fix="pass a new path for the artefact, e.g. --out exported/savedmodel (the default is "
                                "RUN_DIR/export/)")
    targets = [path] + ([Path(f"{path}.json")] if fmt != "savedmodel" else [])
    for item in targets:
        if not _non_empty(item):
            continue
        if not overwrite:
            kind = "folder" if item.is_dir() else "file"
            raise DataError(f"--out exists and is a non-empty {kind}; export does not replace it unless asked",
                            path=item, fix="pass --overwrite to replace it (the old one is removed only once the new "
                                           "one is in place), or choose another --out")
        if item.is_dir() and not item.is_symlink() and not (item / "saved_model.pb").is_file():
            raise DataError("--out is a folder that is not an earlier SavedModel export (no saved_model.pb); "
                            "export replaces only its own artefacts, even with --overwrite", path=item,
                            fix="choose another --out, or move the folder away yourself if it should go")
    return targets


def _swap_into_place(staged: Path, path: Path, scratch: Path) -> None:
    """Rename ``staged`` to ``path``; an existing ``path`` is first renamed into ``scratch`` (removed later)."""
    old = None
    if path.exists() or path.is_symlink():
        old = scratch / f"old-{path.name}"
        os.rename(path, old)
    try:
        os.rename(staged, path)
    except BaseException:
        if old is not None:
            os.rename(old, path)  # put the old one back
        raise


def export_model(model_arg, fmt: str = "savedmodel", out=None, *, preprocessing=None, log=None,
                 overwrite: bool = False, check: bool = True, check_faces=None) -> dict:
    """Export ``--model`` (run folder or .keras) as ``fmt``; returns ``{format, path, sidecar, check, ...}``.

    ``overwrite``: replace an existing non-empty ``out`` (module docstring, "Nothing is lost").
    ``check``: compare the artefact with the Keras model (``check_faces``: a folder of real face
    crops; default generated faces) and return the largest difference under ``check``.
    """
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

    from agegender import atomic

    protected = []
    if isinstance(model_arg, tuple):
        model, spec = model_arg
        model_path = Path("<in-memory model>")
        base = Path(out) if out is not None else None
        if base is None:
            raise DataError("an in-memory model needs an output path", fix="pass out=PATH")
    else:
        model_path, record_path = _resolve(model_arg)
        protected = [("run folder", model_path.parent), ("model file", model_path), ("run record", record_path)]
        base = model_path.parent / "export"
    default = {"savedmodel": base / "savedmodel", "tflite": base / "model.tflite", "onnx": base / "model.onnx"}
    path = Path(out) if out is not None else default[fmt]
    if path.name in ("", ".", ".."):
        path = path.resolve()
    targets = _check_out(path, fmt, overwrite, protected)  # before the model loads: a refusal is quick
    atomic.check_writable(path.parent)
    if not isinstance(model_arg, tuple):
        model, spec, model_path, _ = load_run(model_arg, preprocessing)
    result = {"format": fmt, "path": str(path), "source": str(model_path)}
    replaced = [str(t) for t in targets if _non_empty(t)]
    scratch = atomic.make_temp_dir(path.parent, f".{path.name}.export-")
    try:
        staged = scratch / path.name
        if fmt == "savedmodel":
            _write_savedmodel(model, spec, staged, "tf")
            staged_sidecar = staged / "agegender.json"
        elif fmt == "tflite":
            result["ops"] = _write_tflite(model, spec, staged, log)
            staged_sidecar = scratch / f"{path.name}.json"
        else:
            _write_onnx(model, spec, staged)
            _follow_umask(staged)
            staged_sidecar = scratch / f"{path.name}.json"
        info = _sidecar(spec, model, fmt, "tf" if fmt == "savedmodel" else "matmul", model_path)
        if "ops" in result:
            info["ops"] = result["ops"]
        if check:
            result["check"] = info["check"] = check_export(model, spec, fmt, staged, check_faces, log)
        atomic.write_json(staged_sidecar, info)
        _swap_into_place(staged, path, scratch)
        sidecar = path / "agegender.json" if fmt == "savedmodel" else Path(f"{path}.json")
        if fmt != "savedmodel":
            _swap_into_place(staged_sidecar, sidecar, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)  # the old artefact (if replaced) goes last
    result["replaced"] = replaced
    result["sidecar"] = str(sidecar)
    return result


def _resolve(model_arg):
    from agegender.predict import resolve_run

    return resolve_run(model_arg)


CHECK_TOLERANCE = {"savedmodel": 1e-4, "tflite": 1e-2, "onnx": 1e-2}


def _check_images(check_faces) -> tuple[list, str]:
    """Face crops to compare on: up to 8 images of the folder ``check_faces``, else 8 generated faces."""
    import numpy as np

    if check_faces is not None:
        from agegender.predict import IMAGE_EXTS, read_image

        folder = Path(check_faces)
        if not folder.is_dir():
            raise DataError("not a folder of face crops", path=folder, fix="pass a folder of face images to "
                                                                            "--check-faces, or leave it out")
        files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTS)[:8]
        if not files:
            raise DataError("no images in the folder", path=folder, fix="pass a folder of face images")
        return [read_image(p) for p in files], f"{len(files)} face crops of {folder.name}/"
    from agegender.data.synth import draw_face

    rng = np.random.default_rng(0)
    faces = [draw_face(float(age), g, r, rng, size=size)
             for size, (age, g, r) in zip((200, 200, 200, 200, 97, 97, 97, 97),
                                          ((4, 0, 0), (23, 1, 1), (37, 0, 2), (52, 1, 3), (61, 0, 4), (75, 1, 0),
                                           (18, 0, 1), (45, 1, 2)))]
    return faces, "8 generated faces (agegender.data.synth.draw_face; 200 and 97 px)"


def check_export(model, spec: Preprocessing, fmt: str, path: Path, check_faces=None, log=None) -> dict:
    """Largest absolute difference between the artefact at ``path`` and the Keras model on the same faces."""
    import numpy as np

    from agegender.predict import Predictor

    faces, source = _check_images(check_faces)
    if fmt == "savedmodel":
        import tensorflow as tf

        serve = tf.saved_model.load(str(path)).signatures["serving_default"]
        run = lambda batch: serve(images=tf.constant(batch))  # noqa: E731
    elif fmt == "tflite":
        run = load_tflite(path)
    else:
        try:
            import onnxruntime
        except ImportError:
            return {"checked": False, "reason": "onnxruntime is not installed (pip install onnxruntime to check)"}
        session = onnxruntime.InferenceSession(str(path))
        names = [o.name for o in session.get_outputs()]
        run = lambda batch: dict(zip(names, session.run(None, {session.get_inputs()[0].name: batch})))  # noqa: E731
    by_shape: dict = {}
    for face in faces:
        by_shape.setdefault(face.shape, []).append(face)
    predictor = Predictor(model, spec)
    worst: dict[str, float] = {}
    for batch in by_shape.values():
        batch = np.stack(batch).astype(np.uint8)
        expected = predictor.raw(list(batch))
        got = {k: np.asarray(v) for k, v in run(batch).items()}
        for name, value in expected.items():
            diff = float(np.max(np.abs(np.asarray(got[f"raw_{name}"], dtype="float64").reshape(value.shape)
                                       - np.asarray(value, dtype="float64"))))
            worst[f"raw_{name}"] = max(worst.get(f"raw_{name}", 0.0), diff)
    largest = max(worst.values()) if worst else 0.0
    result = {"checked": True, "faces": source, "compared_with": "the .keras model through the evaluation "
              "preprocessing (agegender.predict.Predictor)", "max_abs_difference": largest,
              "per_output": worst, "tolerance": CHECK_TOLERANCE[fmt],
              "within_tolerance": largest <= CHECK_TOLERANCE[fmt]}
    if not result["within_tolerance"] and log is not None:
        log(f"warning: the exported {fmt} model differs from the .keras model by up to {largest:.3g} "
            f"(tolerance {CHECK_TOLERANCE[fmt]:g}) on {source}")
    return result


def _write_tflite(model, spec: Preprocessing, path: Path, log) -> str:
    import tensorflow as tf

    from agegender import atomic

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
