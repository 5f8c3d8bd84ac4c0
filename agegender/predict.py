"""``python -m agegender predict``: age, gender and race of every face in photographs, folders and videos.

Steps, per input:

1. **Detect** faces with MTCNN (the PyPI ``mtcnn`` package, which ships its weights), or with
   ``--detector none`` take the whole image as the face (dataset crops).
2. **Crop** each face with the geometry the model was trained on (the run record's
   ``preprocessing.face``: margin, vertical shift, aspect, eye alignment), then preprocess
   it with :mod:`agegender.preprocess`, the same functions the evaluation pipeline uses.
3. **Predict** in batches of ``--batch-size`` faces (across inputs and video frames); with
   ``--tta`` average the flipped view and, when the model was trained on crops of a larger
   image (``load_size > input_size``), Levi & Hassner's five crops (10 views).
4. **Decode** the heads: age in years whatever the head type (a groups head also gives its
   group and probability), gender with its probability, race with its probability when the
   model has a race head.
5. **Write** an annotated PNG per image (per predicted frame for a video), a JSON document
   ``{model: {model, run, reproduction, experiment, run_id, paper, status, data_kind, smoke},
   warnings: [...], results: [...]}`` whose ``results`` hold one entry per input (per predicted
   frame for a video) ``{input, faces: [{box: [x, y, w, h], det_score, age, gender,
   gender_prob, race?, race_prob?}]}``, and optionally a CSV with one row per face (its
   ``model`` column names the run).

The model's record decides the warnings printed first and kept in the JSON: a ``--smoke`` run,
a model trained on generated faces, a run that did not finish. Problems with one input (an
unreadable image, a video that will not open, no face found, a file name that is not UTF-8,
shown with its bytes escaped) are reported on one line each and the run goes on; they are also
in the JSON (``error`` / ``note``). A model whose record lacks preprocessing information, or an
output folder that cannot be written, stops the run with a one-line error.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from agegender.data.samples import UNDECODABLE_REASON
from agegender.errors import DataError
from agegender.preprocess import FaceCrop, Preprocessing, decode_heads, from_record, load_faces, load_spec, \
    to_model_input, tta_views
from agegender.predict_faces import (  # noqa: F401
    DEFAULT_THRESHOLDS, DETECT_MAX_SIDE, IMAGE_EXTS, MTCNN_BASE_FACE, VIDEO_EXTS, Detection, MTCNNDetector,
    WholeImageDetector, _exif_upright, _has_gpu, _padded_slice, crop_face, expand_inputs, make_detector, read_image)
from agegender.predict_output import (  # noqa: F401
    _COLOURS, CSV_FIELDS, annotate, describe_model, face_label, write_csv, write_json)

__all__ = ["DEFAULT_THRESHOLDS", "Detection", "MTCNNDetector", "WholeImageDetector", "Predictor", "crop_face",
           "load_run", "measure_face_crop", "predict_paths", "read_image"]


# --------------------------------------------------------------------------------------------
# model and record


def _register_custom_layers() -> None:
    """Import every ``agegender.models`` module so its registered Keras layers deserialise."""
    import importlib
    import pkgutil

    import agegender.models as models

    for info in pkgutil.iter_modules(models.__path__):
        try:
            importlib.import_module(f"agegender.models.{info.name}")
        except Exception:  # noqa: BLE001 - a module that fails to import only matters if the model uses it
            pass


def resolve_run(model_arg) -> tuple[Path, Path]:
    """``(model.keras, record.json)`` paths for ``--model RUN_DIR`` or ``--model MODEL.keras``."""
    path = Path(model_arg)
    if path.is_dir():
        model_path, record_path = path / "model.keras", path / "record.json"
        if not model_path.is_file():
            raise DataError("run folder has no model.keras", path=path,
                            fix="point --model at a finished run folder (<out>/<reproduction>/<experiment>/<run_id>) "
                                "or at a .keras file")
        return model_path, record_path
    if path.suffix == ".keras":
        if not path.is_file():
            raise DataError("model file not found", path=path, fix="check the --model path")
        return path, path.parent / "record.json"
    if not path.exists():
        raise DataError("model not found", path=path, fix="pass a run folder or a .keras file to --model")
    raise DataError("not a run folder or a .keras model", path=path,
                    fix="pass a run folder (holding model.keras and record.json) or a .keras file")


def load_run(model_arg, preprocessing=None):
    """``(keras model, Preprocessing, model_path, record_path)`` for ``--model``.

    ``preprocessing``: a :class:`Preprocessing`, or a JSON file with one, used instead of the
    record's (for runs recorded before records carried it).
    """
    model_path, record_path = resolve_run(model_arg)
    if isinstance(preprocessing, Preprocessing):
        spec = preprocessing
    elif preprocessing is not None:
        spec = load_spec(preprocessing)
    else:
        if not record_path.is_file():
            raise DataError("no record.json next to the model, so its preprocessing is unknown", path=record_path,
                            fix="keep the model in its run folder, or pass --preprocessing SPEC.json")
        from agegender.records import read_record

        record = read_record(record_path)
        if record is None:
            raise DataError("run record is unreadable (not a JSON object)", path=record_path,
                            fix="restore record.json from the run, or pass --preprocessing SPEC.json")
        spec = from_record(record, record_path)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    _register_custom_layers()
    try:
        model = keras.saving.load_model(model_path, compile=False, safe_mode=True)
    except Exception as err:  # noqa: BLE001 - one line naming the file, whatever Keras raises
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DataError(f"model cannot be loaded ({type(err).__name__}: {message[:200]})", path=model_path,
                        fix="check that it is a Keras 3 .keras file written by this package") from None
    check_model(model, spec, model_path)
    return model, spec, model_path, record_path


def output_names(model) -> list[str]:
    outputs = model.outputs
    if isinstance(model.output, dict):
        return list(model.output)
    return list(getattr(model, "output_names", None) or [t.name.split("/")[0] for t in outputs])


def check_model(model, spec: Preprocessing, where=None) -> None:
    """The model's input size and output names must be those the spec describes."""
    shape = tuple(model.inputs[0].shape[1:3])
    if None not in shape and shape != (spec.input_size, spec.input_size):
        raise DataError(f"model input is {shape[0]}x{shape[1]} but the preprocessing says {spec.input_size}",
                        path=where, fix="correct input_size in the record's preprocessing block")
    names = output_names(model)
    for role, head in spec.heads.items():
        if head.output not in names:
            raise DataError(f"the {role} head reads output {head.output!r}, which the model lacks (outputs: "
                            f"{', '.join(names)})", path=where,
                            fix="correct heads.<role>.output in the record's preprocessing block")


class Predictor:
    """Batched prediction on uint8 face crops, with optional test-time augmentation."""

    def __init__(self, model, spec: Preprocessing, *, tta: bool = False, batch_size: int = 32):
        import tensorflow as tf

        self.model, self.spec, self.tta = model, spec, bool(tta)
        self.batch_size = max(1, int(batch_size))
        self.names = output_names(model)
        size = spec.input_size
        signature = [tf.TensorSpec([None, size, size, 3], tf.float32)]
        self._call = tf.function(self._forward, input_signature=signature, reduce_retracing=True)

    def _forward(self, x):
        out = self.model(x, training=False)
        if isinstance(out, dict):
            return out
        out = out if isinstance(out, (list, tuple)) else [out]
        return dict(zip(self.names, out))

    @property
    def tta_mode(self) -> str:
        if not self.tta:
            return "none"
        return "flip+10crop" if self.spec.load_size > self.spec.input_size else "flip"

    def raw(self, crops: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
        """Head outputs (TTA-averaged) keyed by output name for a list of uint8 crops."""
        parts: dict[str, list] = {}
        for start in range(0, len(crops), self.batch_size):
            loaded = load_faces(list(crops[start:start + self.batch_size]), self.spec)
            if self.tta:
                views = tta_views(loaded, self.spec, flip=True, oversample=True)
                n, v = int(views.shape[0]), int(views.shape[1])
                out = self._call(_flatten_views(views))
                out = {k: np.asarray(t).reshape(n, v, -1).mean(axis=1) for k, t in out.items()}
            else:
                out = {k: np.asarray(t) for k, t in self._call(to_model_input(loaded, self.spec)).items()}
            for k, t in out.items():
                parts.setdefault(k, []).append(np.asarray(t, dtype="float32").reshape(len(t), -1))
        return {k: np.concatenate(v) for k, v in parts.items()}

    def predict(self, crops: Sequence[np.ndarray]) -> list[dict]:
        """One decoded dict per crop (see :func:`agegender.preprocess.decode_heads`)."""
        if not len(crops):
            return []
        return decode_heads(self.raw(crops), self.spec)


def _flatten_views(views):
    import tensorflow as tf

    shape = tf.shape(views)
    return tf.reshape(views, tf.concat([[shape[0] * shape[1]], shape[2:]], axis=0))


# --------------------------------------------------------------------------------------------
# running over inputs


@dataclasses.dataclass
class _Pending:
    entry: dict
    image: np.ndarray | None
    detections: list
    crops: list
    png: Path | None


class Runner:
    """Detect, crop, predict (batched across inputs) and write outputs; see :func:`predict_paths`."""

    def __init__(self, predictor: Predictor, detector, *, out_dir=None, annotate: bool = True,
                 progress: bool = True, every: int = 1, log=None):
        self.predictor, self.detector = predictor, detector
        self.every = max(1, int(every))
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.annotate = annotate and self.out_dir is not None
        self.progress = progress
        self.log = log or (lambda line: print(line, file=sys.stderr, flush=True))
        self.entries: list[dict] = []
        self._pending: list[_Pending] = []
        self._names: set[str] = set()
        self.whole = isinstance(detector, WholeImageDetector)

    # -- public
    def run(self, inputs) -> list[dict]:
        items = expand_inputs(inputs)
        show = self.progress and (len(items) > 1 or any(Path(i).is_dir() for i in inputs))
        from tqdm.auto import tqdm

        bar = tqdm(items, desc="predict", unit="input", disable=not show, file=sys.stderr)
        for path, kind, problem in bar:
            if problem:
                self._error({"input": path, "faces": []}, problem,
                            fix="rename it to a UTF-8 name" if problem == UNDECODABLE_REASON else "check the path")
            elif kind == "video":
                self._video(path)
            else:
                self._image(path)
        bar.close()
        self._flush(force=True)
        return self.entries

    # -- per input
    def _image(self, path: str) -> None:
        try:
            image = read_image(path)
        except DataError as err:
            self.entries.append({"input": path, "faces": [], "error": str(err)})
            self.log(f"error: {err}")
            return
        entry = {"input": path, "width": int(image.shape[1]), "height": int(image.shape[0]), "faces": []}
        self._add(entry, image, self._png_path(Path(path).stem))

    def _video(self, path: str) -> None:
        import cv2

        every = self.every
        capture = cv2.VideoCapture(path)
        if not capture.isOpened():
            self._error({"input": path, "faces": []},
                        "video will not open (OpenCV cannot read it: not a video, an unsupported codec, or damaged)",
                        fix="convert it to H.264 MP4 (ffmpeg -i IN -c:v libx264 OUT.mp4) or pass frames as images")
            return
        fps = capture.get(cv2.CAP_PROP_FPS) or 0.0
        total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        from tqdm.auto import tqdm

        bar = tqdm(total=total or None, desc=Path(path).name, unit="frame", disable=not self.progress,
                   file=sys.stderr, leave=False)
        index, predicted = 0, 0
        stem = self._png_dir(Path(path).stem)
        try:
            while True:
                ok, frame = capture.read()
                if not ok:
                    break
                if index % every == 0:
                    rgb = np.ascontiguousarray(frame[:, :, ::-1])
                    entry = {"input": path, "frame": index, "time_s": round(index / fps, 3) if fps else None,
                             "width": int(rgb.shape[1]), "height": int(rgb.shape[0]), "faces": []}
                    png = None if stem is None else stem / f"frame_{index:06d}.png"
                    self._add(entry, rgb, png)
                    predicted += 1
                index += 1
                bar.update()
        finally:
            bar.close()
            capture.release()
        if predicted == 0:
            self._error({"input": path, "faces": []}, "video has no readable frames (empty or damaged)",
                        fix="check the file, or convert it to H.264 MP4")

    def _error(self, entry: dict, message: str, fix: str) -> None:
        err = DataError(message, path=entry["input"], fix=fix)
        self.entries.append({**entry, "error": str(err)})
        self.log(f"error: {err}")

    def _add(self, entry: dict, image: np.ndarray, png: Path | None) -> None:
        detections = self.detector.detect(image)
        crops = [crop_face(image, d, self.predictor.spec.face, whole_image=self.whole) for d in detections]
        self._pending.append(_Pending(entry, image, detections, crops, png))
        self.entries.append(entry)
        self._flush()

    def _flush(self, force: bool = False) -> None:
        waiting = sum(len(p.crops) for p in self._pending)
        if not self._pending or (waiting < self.predictor.batch_size and not force and len(self._pending) < 16):
            return
        crops = [c for p in self._pending for c in p.crops]
        decoded = self.predictor.predict(crops)
        k = 0
        for item in self._pending:
            height, width = item.image.shape[:2]
            faces = []
            for det in item.detections:
                face = {"box": det.clipped_box(width, height), "det_score": round(float(det.score), 4)}
                face.update(_rounded(decoded[k]))
                faces.append(face)
                k += 1
            item.entry["faces"] = faces
            if not faces:
                item.entry["note"] = f"{item.entry['input']}: no face found"
                where = f" (frame {item.entry['frame']})" if "frame" in item.entry else ""
                self.log(f"note: {item.entry['input']}{where}: no face found")
            if self.annotate and item.png is not None:
                annotate(item.image, faces, item.png)
                item.entry["annotated"] = str(item.png)
        self._pending = []

    # -- output names
    def _unique(self, stem: str) -> str:
        name, n = stem, 1
        while name in self._names:
            n += 1
            name = f"{stem}-{n}"
        self._names.add(name)
        return name

    def _png_path(self, stem: str) -> Path | None:
        return None if self.out_dir is None else self.out_dir / f"{self._unique(stem)}.png"

    def _png_dir(self, stem: str) -> Path | None:
        return None if self.out_dir is None else self.out_dir / self._unique(stem)


def _rounded(face: dict) -> dict:
    out = {}
    for key, value in face.items():
        out[key] = round(value, 2 if key == "age" else 4) if isinstance(value, float) else value
    return out


# --------------------------------------------------------------------------------------------
# the command


def predict_paths(model, inputs, *, out_dir="predictions", json_path=None, csv_path=None, detector="mtcnn",
                  min_face: int = MTCNN_BASE_FACE, thresholds=DEFAULT_THRESHOLDS, tta: bool = False,
                  batch_size: int = 32, every: int = 1, preprocessing=None, progress: bool = True,
                  annotate_images: bool = True, log=None) -> dict:
    """Everything ``python -m agegender predict`` does; returns a summary dict.

    ``model``: a run folder or ``.keras`` file (or an already loaded ``(keras model,
    Preprocessing)`` pair); ``inputs``: image files, folders and video files. ``json_path``
    defaults to ``<out_dir>/predictions.json``. ``every``: predict video frames 0, N, 2N, ...
    """
    if every < 1:
        raise DataError(f"--every must be 1 or more, got {every}", fix="pass --every 1 (every frame) or more")
    if batch_size < 1:
        raise DataError(f"--batch-size must be 1 or more, got {batch_size}", fix="pass --batch-size 32")
    started = time.time()
    if isinstance(model, tuple):
        keras_model, spec = model
        model_path = record_path = None
    else:
        keras_model, spec, model_path, record_path = load_run(model, preprocessing)
    out = Path(out_dir) if out_dir is not None else None
    json_path = Path(json_path) if json_path else (out / "predictions.json" if out is not None else None)
    from agegender import atomic

    for folder, flag in ((out, "--out"), (None if json_path is None else json_path.parent, "--json"),
                         (Path(csv_path).parent if csv_path else None, "--csv")):
        if folder is not None:  # a read-only folder stops the run before any prediction
            atomic.check_writable(folder, flag=flag)
    model_info, warnings = describe_model(model_path, record_path)
    say = log or (lambda line: print(line, file=sys.stderr, flush=True))
    for line in warnings:
        say(f"warning: {line}")
    found = make_detector(detector, min_face=min_face, thresholds=thresholds)
    predictor = Predictor(keras_model, spec, tta=tta, batch_size=batch_size)
    runner = Runner(predictor, found, out_dir=out, annotate=annotate_images, progress=progress, every=every,
                    log=log)
    entries = runner.run(inputs)
    if json_path is not None:
        write_json(entries, json_path, model_info, warnings)
    if csv_path:
        write_csv(entries, csv_path, model_info.get("run") or model_info["model"])
    return {
        "model": None if model_path is None else str(model_path),
        "record": None if record_path is None else str(record_path),
        "model_info": model_info, "warnings": warnings,
        "detector": found.name, "tta": predictor.tta_mode, "entries": len(entries),
        "faces": sum(len(e.get("faces", [])) for e in entries),
        "no_face": sum(1 for e in entries if not e.get("faces") and not e.get("error")),
        "errors": sum(1 for e in entries if e.get("error")),
        "json": None if json_path is None else str(json_path), "csv": None if not csv_path else str(csv_path),
        "out": None if out is None else str(out), "seconds": round(time.time() - started, 2),
        "results": entries,
    }


# --------------------------------------------------------------------------------------------
# measuring the crop geometry of a dataset


def measure_face_crop(paths, *, detector: MTCNNDetector | None = None, limit: int = 200) -> dict:
    """The :class:`~agegender.preprocess.FaceCrop` of a folder of training face crops, measured with MTCNN.

    Runs MTCNN on up to ``limit`` images (evenly spread over the sorted list) and takes medians
    of: the crop side over the box's longer side (-> ``margin``), the crop centre's offset
    below the box centre (-> ``shift_y``), height / width (-> ``aspect``) and the eye-line
    angle (a median under 2 degrees -> ``alignment="eyes"``: the dataset was aligned).
    Returns ``{"face": FaceCrop dict, "measured": n, "tried": m, ...spreads}``.
    """
    paths = sorted(str(p) for p in paths)
    if not paths:
        raise DataError("no images to measure", fix="pass a folder of training face crops")
    step = max(1, len(paths) // limit)
    chosen = paths[::step][:limit]
    detector = detector or MTCNNDetector()
    sides, shifts, aspects, angles, unreadable = [], [], [], [], []
    for path in chosen:
        try:
            image = read_image(path)
        except DataError as err:
            unreadable.append(str(err).split(" — fix: ")[0])
            continue
        faces = detector.detect(image)
        if not faces:
            continue
        face = max(faces, key=lambda d: d.score * d.box[2] * d.box[3])
        x, y, w, h = face.box
        height, width = image.shape[:2]
        sides.append(width / max(w, h))
        shifts.append((height / 2 - (y + h / 2)) / height)
        aspects.append(height / width)
        if face.keypoints and {"left_eye", "right_eye"} <= set(face.keypoints):
            (lx, ly), (rx, ry) = face.keypoints["left_eye"], face.keypoints["right_eye"]
            angles.append(abs(math.degrees(math.atan2(ry - ly, rx - lx))))
    if len(unreadable) == len(chosen):
        raise DataError(f"none of the {len(chosen)} images tried could be read (e.g. {unreadable[0]})",
                        fix="pass a folder of readable face crops (JPEG / PNG)")
    if not sides:
        raise DataError(f"MTCNN found no face in the {len(chosen)} images tried",
                        fix="pass a folder of face crops (faces at least 20 px)")
    angle = float(np.median(angles)) if angles else float("nan")
    margin = (float(np.median(sides)) - 1.0) / 2.0
    crop = FaceCrop(margin=round(margin, 3), shift_y=round(float(np.median(shifts)), 3),
                    aspect=round(float(np.median(aspects)), 4),
                    alignment="eyes" if angles and angle < 2.0 else "none",
                    note=f"measured: MTCNN on {len(sides)} of {len(chosen)} images (median eye-line angle "
                         f"{angle:.1f} deg)")
    return {"face": crop.to_dict(), "measured": len(sides), "tried": len(chosen),
            "margin_p10_p90": [round((float(q) - 1) / 2, 3) for q in np.percentile(sides, [10, 90])],
            "shift_y_p10_p90": [round(float(q), 3) for q in np.percentile(shifts, [10, 90])],
            "eye_angle_median_deg": round(angle, 2)}
