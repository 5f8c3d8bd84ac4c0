"""Batch-1 CPU latency of ``predict``: MTCNN detection plus crop, preprocessing and the model, on one photograph.

:func:`measure_latency` returns a dict for ``make bench``; ``python -m agegender.bench_predict
[RUN_DIR|MODEL.keras]`` prints it as JSON. Without a model it times a small random-weight CNN
(the detection cost does not depend on the model; the prediction part then is a floor).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time

__all__ = ["measure_latency"]


def _tiny_model(size: int = 64):
    import keras

    inputs = keras.Input((size, size, 3), name="image")
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    for filters in (16, 32, 64):
        x = keras.layers.Conv2D(filters, 3, strides=2, padding="same", activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = {"age": keras.layers.Dense(1, name="age")(x),
               "gender": keras.layers.Dense(1, activation="sigmoid", name="gender")(x),
               "race": keras.layers.Dense(5, activation="softmax", name="race")(x)}
    return keras.Model(inputs, outputs, name="bench_tiny")


def measure_latency(model=None, *, image=None, repeats: int = 10, warmup: int = 2, tta: bool = False,
                    threads: int | None = None) -> dict:
    """Median / p90 milliseconds of detection, of crop + preprocessing + prediction, and of both, at batch 1 on CPU.

    ``model``: a run folder or ``.keras`` file, a ``(keras model, Preprocessing)`` pair, or
    ``None`` (a small random CNN at 64 px). ``image``: uint8 RGB (default scikit-image's
    astronaut, 512x512, one face). Runs on the CPU even when a GPU is visible. ``threads``
    sets TensorFlow's intra-op threads (default: TensorFlow's choice).
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np
    import tensorflow as tf

    from agegender.predict import MTCNNDetector, Predictor, crop_face, load_run
    from agegender.preprocess import FACE_PRESETS, Head, Preprocessing

    if threads:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(int(threads))
        except RuntimeError:  # already initialised: keep TensorFlow's setting
            pass
    name = "tiny random CNN (64 px)"
    with tf.device("/CPU:0"):
        if model is None:
            keras_model = _tiny_model()
            spec = Preprocessing(input_size=64, pixel_scale=1.0, face=FACE_PRESETS["utkface"],
                                 heads={"age": Head.age_regression(), "gender": Head.gender_sigmoid(),
                                        "race": Head.race_softmax()})
        elif isinstance(model, tuple):
            keras_model, spec = model
            name = getattr(keras_model, "name", "model")
        else:
            keras_model, spec, model_path, _ = load_run(model)
            name = str(model_path)
        if image is None:
            import skimage.data

            image, image_name = skimage.data.astronaut(), "scikit-image astronaut"
        else:
            image_name = "given image"
        start = time.perf_counter()
        detector = MTCNNDetector()
        detector_load = time.perf_counter() - start
        predictor = Predictor(keras_model, spec, tta=tta, batch_size=1)
        detect_ms, predict_ms, total_ms = [], [], []
        faces = 0
        for i in range(warmup + repeats):
            t0 = time.perf_counter()
            found = detector.detect(image)
            t1 = time.perf_counter()
            crops = [crop_face(image, d, spec.face) for d in found[:1]] or [image]
            predictor.predict(crops)
            t2 = time.perf_counter()
            if i >= warmup:
                detect_ms.append(1000 * (t1 - t0))
                predict_ms.append(1000 * (t2 - t1))
                total_ms.append(1000 * (t2 - t0))
                faces = len(found)

    def stats(values):
        return {"median": round(statistics.median(values), 2), "p90": round(float(np.percentile(values, 90)), 2),
                "min": round(min(values), 2)}

    return {
        "device": "CPU", "cpu_count": os.cpu_count(), "platform": platform.platform(),
        "tensorflow": tf.__version__, "model": name, "input_size": spec.input_size, "tta": predictor.tta_mode,
        "image": f"{image_name} {image.shape[1]}x{image.shape[0]}", "faces_found": faces,
        "repeats": repeats, "warmup": warmup, "detector_load_s": round(detector_load, 2),
        "detect_ms": stats(detect_ms), "predict_ms": stats(predict_ms), "total_ms": stats(total_ms),
    }


def main(argv=None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m agegender.bench_predict", description=__doc__)
    parser.add_argument("model", nargs="?", default=None, help="run folder or .keras file (default: a tiny CNN)")
    parser.add_argument("--repeats", type=int, default=10, help="timed repetitions (default 10)")
    parser.add_argument("--tta", action="store_true", help="time with test-time augmentation")
    args = parser.parse_args(argv)
    from agegender.cli import run_main

    def run(_):
        print(json.dumps(measure_latency(args.model, repeats=args.repeats, tta=args.tta), indent=2))
        return 0

    return run_main(run)


if __name__ == "__main__":
    sys.exit(main())
