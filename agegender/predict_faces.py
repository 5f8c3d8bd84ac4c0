"""Face detection (MTCNN or the whole image), face cropping and reading input images; re-exported by :mod:`agegender.predict`."""

from __future__ import annotations

import dataclasses
import math
import os
import sys
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from agegender.data.samples import UNDECODABLE_REASON, escaped_name, undecodable
from agegender.errors import DataError
from agegender.preprocess import FaceCrop

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp"}
VIDEO_EXTS = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp", ".ts"}
#: MTCNN stage thresholds (P-Net, R-Net, O-Net): FaceNet's classic values (the ``mtcnn`` package's
#: defaults are 0.6 / 0.7 / 0.8). Lower them (``--det-thresholds 0.5 0.5 0.5``) for drawn or
#: low-quality faces, at the cost of more false detections.
DEFAULT_THRESHOLDS = (0.6, 0.7, 0.7)
MTCNN_BASE_FACE = 20  # the face size MTCNN's pyramid starts at; --min-face rescales the image to it
DETECT_MAX_SIDE = 2000  # larger photographs are downscaled for detection only (faces are cropped at full size)



# --------------------------------------------------------------------------------------------
# detection


@dataclasses.dataclass
class Detection:
    """A face: ``box`` ``(x, y, w, h)`` in image pixels (floats, may reach outside the image),
    detector confidence and MTCNN's five landmarks (``None`` for the whole-image detector)."""

    box: tuple
    score: float
    keypoints: dict | None = None

    def clipped_box(self, width: int, height: int) -> list[int]:
        """``[x, y, w, h]`` as integers, clipped to the image."""
        x, y, w, h = self.box
        x0, y0 = max(0, int(round(x))), max(0, int(round(y)))
        x1, y1 = min(width, int(round(x + w))), min(height, int(round(y + h)))
        return [x0, y0, max(0, x1 - x0), max(0, y1 - y0)]


class WholeImageDetector:
    """``--detector none``: the whole image is one face (dataset crops)."""

    name = "none"

    def detect(self, image: np.ndarray) -> list[Detection]:
        return [Detection((0.0, 0.0, float(image.shape[1]), float(image.shape[0])), 1.0, None)]


class MTCNNDetector:
    """MTCNN (``mtcnn`` package) with a working ``min_face`` and a cap on the detection resolution.

    ``mtcnn`` 1.0 builds its image pyramid as if the smallest face were 20 px: a larger
    ``min_face_size`` makes its last pyramid levels smaller than P-Net's 12 px window and the
    call fails. Instead the image is rescaled by ``20 / min_face`` (and so that its longer
    side is at most ``max_side``) and searched for faces of 20 px and more; boxes and
    landmarks are mapped back to the original pixels.
    """

    name = "mtcnn"

    def __init__(self, min_face: int = MTCNN_BASE_FACE, thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
                 max_side: int = DETECT_MAX_SIDE):
        if min_face < 4:
            raise DataError(f"--min-face {min_face} is too small", fix="pass --min-face 4 or more (pixels)")
        if len(thresholds) != 3 or not all(0 < t < 1 for t in thresholds):
            raise DataError(f"detector thresholds must be three numbers in (0, 1), got {list(thresholds)}",
                            fix="pass --det-thresholds P R O, e.g. 0.6 0.7 0.7")
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        from mtcnn import MTCNN

        self.min_face = int(min_face)
        self.thresholds = tuple(float(t) for t in thresholds)
        self.max_side = int(max_side)
        self._mtcnn = MTCNN(device="CPU:0" if not _has_gpu() else "GPU:0")

    def detect(self, image: np.ndarray) -> list[Detection]:
        import cv2

        height, width = image.shape[:2]
        factor = min(4.0, MTCNN_BASE_FACE / self.min_face, self.max_side / max(height, width))
        if min(height, width) * factor < MTCNN_BASE_FACE:  # no 20 px face fits: P-Net would fail
            return []
        work = image
        if abs(factor - 1.0) > 1e-6:
            size = (max(1, int(round(width * factor))), max(1, int(round(height * factor))))
            work = cv2.resize(image, size, interpolation=cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR)
            fx, fy = size[0] / width, size[1] / height
        else:
            fx = fy = 1.0
        p, r, o = self.thresholds
        try:
            found = self._mtcnn.detect_faces(np.ascontiguousarray(work), fit_to_image=False,
                                             min_face_size=MTCNN_BASE_FACE, threshold_pnet=p, threshold_rnet=r,
                                             threshold_onet=o)
        except (ValueError, IndexError) as err:  # mtcnn 1.0 fails on some degenerate pyramids: no face
            print(f"warning: MTCNN failed on a {width}x{height} image ({type(err).__name__}); no face taken",
                  file=sys.stderr)
            return []
        faces = []
        for face in found or []:
            x, y, w, h = (float(v) for v in face["box"])
            box = (x / fx, y / fy, w / fx, h / fy)
            if max(box[2], box[3]) < self.min_face:
                continue
            keypoints = {k: (float(v[0]) / fx, float(v[1]) / fy) for k, v in (face.get("keypoints") or {}).items()}
            faces.append(Detection(box, float(face["confidence"]), keypoints or None))
        return sorted(faces, key=lambda d: (d.box[0], d.box[1]))


def _has_gpu() -> bool:
    import tensorflow as tf

    return bool(tf.config.list_logical_devices("GPU"))


def make_detector(name: str = "mtcnn", *, min_face: int = MTCNN_BASE_FACE,
                  thresholds: Sequence[float] = DEFAULT_THRESHOLDS):
    if hasattr(name, "detect"):  # an already built detector
        return name
    if name == "none":
        return WholeImageDetector()
    if name == "mtcnn":
        return MTCNNDetector(min_face=min_face, thresholds=thresholds)
    raise DataError(f"unknown detector {name!r}", fix="use --detector mtcnn or --detector none")


# --------------------------------------------------------------------------------------------
# cropping


def crop_face(image: np.ndarray, detection: Detection, face: FaceCrop, *, whole_image: bool = False) -> np.ndarray:
    """The face crop (uint8 RGB, native resolution) the model expects for ``detection``.

    ``whole_image`` (the ``none`` detector): the image itself, untouched, as a dataset crop.
    Otherwise the :class:`~agegender.preprocess.FaceCrop` rectangle around the box, rotated
    to level the eyes when ``face.alignment == "eyes"`` and landmarks are known; pixels
    outside the image are padded (``face.pad``).
    """
    if whole_image:
        return image
    import cv2

    x, y, w, h = detection.box
    side = max(w, h) * (1.0 + 2.0 * face.margin)
    out_w = max(1, int(round(side)))
    out_h = max(1, int(round(side * face.aspect)))
    cx, cy = x + w / 2.0, y + h / 2.0 + face.shift_y * out_h
    angle = 0.0
    if face.alignment == "eyes" and detection.keypoints and {"left_eye", "right_eye"} <= set(detection.keypoints):
        (lx, ly), (rx, ry) = detection.keypoints["left_eye"], detection.keypoints["right_eye"]
        angle = math.degrees(math.atan2(ry - ly, rx - lx))
    border = cv2.BORDER_REPLICATE if face.pad == "edge" else cv2.BORDER_CONSTANT
    if abs(angle) < 0.5:  # axis-aligned: copy pixels, no resampling
        x0, y0 = int(round(cx - out_w / 2.0)), int(round(cy - out_h / 2.0))
        return _padded_slice(image, x0, y0, out_w, out_h, border)
    matrix = cv2.getRotationMatrix2D((cx, cy), angle, 1.0)  # counter-clockwise by the eye-line angle: level eyes
    matrix[0, 2] += out_w / 2.0 - cx
    matrix[1, 2] += out_h / 2.0 - cy
    return cv2.warpAffine(image, matrix, (out_w, out_h), flags=cv2.INTER_LINEAR, borderMode=border,
                          borderValue=(0, 0, 0))


def _padded_slice(image: np.ndarray, x0: int, y0: int, w: int, h: int, border: int) -> np.ndarray:
    import cv2

    height, width = image.shape[:2]
    sx0, sy0, sx1, sy1 = max(0, x0), max(0, y0), min(width, x0 + w), min(height, y0 + h)
    if sx1 <= sx0 or sy1 <= sy0:  # entirely outside: a blank crop
        return np.zeros((h, w, 3), np.uint8)
    part = image[sy0:sy1, sx0:sx1]
    pads = (sy0 - y0, y0 + h - sy1, sx0 - x0, x0 + w - sx1)
    if any(pads):
        part = cv2.copyMakeBorder(np.ascontiguousarray(part), *pads, border, value=(0, 0, 0))
    return np.ascontiguousarray(part)


# --------------------------------------------------------------------------------------------
# reading inputs


def read_image(path) -> np.ndarray:
    """uint8 RGB pixels of an image file, decoded as the training pipeline decodes (TensorFlow), EXIF-rotated.

    Raises a one-line :class:`DataError` naming the cause when the file is not a usable image.
    """
    from agegender.data.pipeline import check_images

    path = Path(path)
    checked = check_images([path])
    fix = "check the file (re-download or re-export it as JPEG/PNG), or leave it out"
    if checked.skipped:
        raise DataError(f"unreadable image ({checked.skipped[0]['reason']})", path=path, fix=fix)
    import tensorflow as tf

    try:
        data = tf.io.read_file(str(path))
        image = tf.io.decode_image(data, channels=3, expand_animations=False, dtype=tf.uint8).numpy()
    except (tf.errors.OpError, ValueError) as err:
        from agegender.data.pipeline import _tf_message

        raise DataError(f"unreadable image (TensorFlow cannot decode it: {_tf_message(err)})", path=path,
                        fix=fix) from None
    return _exif_upright(path, image)


def _exif_upright(path: Path, image: np.ndarray) -> np.ndarray:
    """Apply the EXIF orientation (phone photographs store pixels sideways); TensorFlow ignores it."""
    try:
        from PIL import Image

        with Image.open(path) as handle:
            orientation = handle.getexif().get(0x0112, 1)
    except Exception:  # noqa: BLE001 - no EXIF: as decoded
        return image
    ops = {2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
           5: lambda a: np.transpose(a, (1, 0, 2)), 6: lambda a: np.rot90(a, -1),
           7: lambda a: np.rot90(a, -1)[::-1], 8: lambda a: np.rot90(a, 1)}  # as PIL's ImageOps.exif_transpose
    op = ops.get(orientation)
    return np.ascontiguousarray(op(image)) if op else image


def expand_inputs(inputs: Iterable) -> list[tuple[str, str, str | None]]:
    """``(path, kind, problem)`` per input: kind ``image`` / ``video`` / ``missing``; folders are walked (sorted)."""
    out = []
    for item in inputs:
        path = Path(item)
        if undecodable(str(path)):  # bytes that are not UTF-8 in the name: reported escaped, never fatal
            out.append((escaped_name(str(path)), "missing", UNDECODABLE_REASON))
        elif path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")
                           and p.suffix.lower() in IMAGE_EXTS | VIDEO_EXTS)
            if not found:
                out.append((str(path), "missing", "folder holds no images or videos "
                                                  f"({', '.join(sorted(IMAGE_EXTS | VIDEO_EXTS))})"))
            out.extend((escaped_name(str(p)), "missing", UNDECODABLE_REASON) if undecodable(str(p)) else
                       (str(p), "video" if p.suffix.lower() in VIDEO_EXTS else "image", None) for p in found)
        elif path.is_file():
            out.append((str(path), "video" if path.suffix.lower() in VIDEO_EXTS else "image", None))
        else:
            out.append((str(path), "missing", "file not found"))
    return out
