"""``python -m agegender``: predict age, gender and race on photographs and video; export a trained model.

Subcommands:

``predict``       detect faces (MTCNN), crop them as the model was trained, predict, and write
                  annotated PNGs, JSON and optionally CSV;
``export``        write a serving artefact (SavedModel or TensorFlow Lite; ONNX with tf2onnx)
                  that takes uint8 face crops of any size, with the preprocessing inside;
``face-geometry`` measure where MTCNN's box sits in a folder of training face crops: the
                  ``face`` block of a record's preprocessing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from agegender.errors import DataError

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

MODEL_HELP = ("a run folder <out>/<reproduction>/<experiment>/<run_id> (holding model.keras and record.json), "
              "or a MODEL.keras file (its record.json is looked up next to it); the record's 'preprocessing' "
              "block says how faces are cropped and scaled and how the outputs are read")
PREPROCESSING_HELP = ("a JSON file with a preprocessing block (or a whole record.json holding one), used instead "
                      "of the record's; for runs recorded before records carried it")


def _parser() -> argparse.ArgumentParser:
    from agegender.predict import DEFAULT_THRESHOLDS, MTCNN_BASE_FACE

    parser = argparse.ArgumentParser(prog="python -m agegender", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    predict = sub.add_parser(
        "predict", help="predict age, gender and race of every face in images, folders and videos",
        description="Detect faces with MTCNN (or take each image as one face with --detector none), crop them "
                    "with the margin and alignment the model was trained on, preprocess them exactly as the "
                    "evaluation pipeline does, predict in batches and write: an annotated PNG per image (per "
                    "predicted frame for a video, in a folder named after it), JSON {model: the run that made the "
                    "model, warnings, results: one entry per input (per predicted frame) {input, faces: [{box: "
                    "[x, y, w, h], det_score, age, gender, gender_prob, race?, race_prob?}]}}, and optionally a CSV "
                    "with one row per face. A smoke-run model or one trained on generated faces is warned "
                    "about first. An input "
                    "that cannot be read, or has no face, is reported on one line and the run goes on (exit "
                    "status 1 when an input could not be read, 0 otherwise).")
    predict.add_argument("inputs", nargs="+", metavar="INPUT",
                         help="image files (JPEG, PNG, BMP, GIF, WebP), folders (searched recursively for images "
                              "and videos) or video files (MP4, AVI, MOV, MKV, WebM ..., read with OpenCV)")
    predict.add_argument("--model", required=True, metavar="RUN_DIR|MODEL.keras", help=MODEL_HELP)
    predict.add_argument("--out", default="predictions", metavar="DIR",
                         help="folder for the annotated PNGs and, unless --json says otherwise, predictions.json "
                              "(default: ./predictions)")
    predict.add_argument("--json", default=None, metavar="FILE",
                         help="write the JSON results here (default: DIR/predictions.json)")
    predict.add_argument("--csv", default=None, metavar="FILE",
                         help="also write a CSV, one row per face (input, frame, box, scores, age, gender, race); "
                              "an input without faces gets one row with its error or note")
    predict.add_argument("--detector", choices=("mtcnn", "none"), default="mtcnn",
                         help="mtcnn (default): find faces with MTCNN and crop them with the record's face "
                              "geometry; none: each image (frame) is one face, used as is, like a dataset crop")
    predict.add_argument("--min-face", type=int, default=MTCNN_BASE_FACE, metavar="PX",
                         help=f"smallest face to find, in pixels of the input (default {MTCNN_BASE_FACE}); "
                              "larger values are faster and ignore small background faces")
    predict.add_argument("--det-thresholds", type=float, nargs=3, default=list(DEFAULT_THRESHOLDS),
                         metavar=("P", "R", "O"),
                         help="MTCNN confidence thresholds of its three stages (default "
                              f"{' '.join(map(str, DEFAULT_THRESHOLDS))}); lower them (e.g. 0.5 0.5 0.5) for "
                              "drawn or poor-quality faces, at the cost of more false detections")
    predict.add_argument("--tta", action="store_true",
                         help="test-time augmentation: average the predictions over the mirrored face and, when the "
                              "model was trained on random crops of a larger image (load_size > input_size), "
                              "Levi & Hassner's centre and four corner crops (10 views); slower")
    predict.add_argument("--batch-size", type=int, default=32, metavar="N",
                         help="faces per model call, gathered across images and frames (default 32)")
    predict.add_argument("--every", type=int, default=1, metavar="N",
                         help="video only: predict frames 0, N, 2N, ... (N-1 frames skipped between predictions; "
                              "default 1, every frame)")
    predict.add_argument("--preprocessing", default=None, metavar="SPEC.json", help=PREPROCESSING_HELP)
    predict.add_argument("--no-annotate", action="store_true", help="do not write annotated PNGs (JSON/CSV only)")
    predict.add_argument("--quiet", action="store_true", help="no progress bars")

    export = sub.add_parser(
        "export", help="write a serving artefact with the preprocessing inside",
        description="Export a trained model with its preprocessing (resize to load_size, centre crop, pixel "
                    "scaling) and its head decoding inside. The artefact takes uint8 RGB face crops of any size "
                    "([batch, height, width, 3], one size per call) and returns the raw outputs (raw_<name>) and "
                    "decoded values (age_years; gender, gender_prob; race, race_prob; age_group, age_group_prob "
                    "for a groups head; indices into the labels of agegender.json, written beside it).")
    export.add_argument("model", metavar="RUN_DIR|MODEL.keras", help=MODEL_HELP)
    export.add_argument("--format", choices=("savedmodel", "tflite", "onnx"), default="savedmodel",
                        help="savedmodel (default): a TensorFlow SavedModel folder; tflite: a TensorFlow Lite file "
                             "(builtin ops when the model allows); onnx: needs the optional tf2onnx package")
    export.add_argument("--out", default=None, metavar="PATH",
                        help="where to write (default: RUN_DIR/export/savedmodel, RUN_DIR/export/model.tflite or "
                             "RUN_DIR/export/model.onnx); an existing non-empty PATH is refused unless --overwrite "
                             "is given; the working directory, the run folder and folders holding them never")
    export.add_argument("--overwrite", action="store_true",
                        help="replace an existing artefact at --out: the new one is written beside it and swapped in, "
                             "the old one removed last (a folder only if it is an earlier SavedModel export)")
    export.add_argument("--check-faces", default=None, metavar="DIR",
                        help="compare the artefact with the .keras model on up to 8 face crops of DIR (default: 8 "
                             "generated faces); the largest difference is printed and written to the sidecar")
    export.add_argument("--no-check", action="store_true", help="do not compare the artefact with the .keras model")
    export.add_argument("--preprocessing", default=None, metavar="SPEC.json", help=PREPROCESSING_HELP)

    geometry = sub.add_parser(
        "face-geometry", help="measure the face crop geometry of a folder of training images",
        description="Run MTCNN on a sample of training face crops and print the median geometry of the crops "
                    "relative to the detector box, as the 'face' block of a record's preprocessing (margin, "
                    "shift_y, aspect, alignment).")
    geometry.add_argument("folder", help="a folder of face crops (searched recursively)")
    geometry.add_argument("--limit", type=int, default=200, help="images to measure, spread over the folder "
                                                                 "(default 200)")
    return parser


def main(argv=None) -> int:
    """The command line; a data or file error prints one line (exit 2), Ctrl-C exits 130."""
    from agegender.cli import run_main

    return run_main(_run, argv)


def _run(argv=None) -> int:
    args = _parser().parse_args(argv)
    from agegender.backend import require_tensorflow

    require_tensorflow(f"python -m agegender {args.command} (MTCNN detection, SavedModel / TFLite export)",
                       fix="run it with KERAS_BACKEND=tensorflow and TensorFlow installed; a .keras model saved "
                           "under JAX loads there")
    if args.command == "predict":
        from agegender.predict import predict_paths

        summary = predict_paths(args.model, args.inputs, out_dir=args.out, json_path=args.json,
                                csv_path=args.csv, detector=args.detector, min_face=args.min_face,
                                thresholds=tuple(args.det_thresholds), tta=args.tta, batch_size=args.batch_size,
                                every=args.every, preprocessing=args.preprocessing, progress=not args.quiet,
                                annotate_images=not args.no_annotate)
        info = summary["model_info"]
        made_by = f" ({info['reproduction']}/{info['experiment']}/{info['run_id']})" if info.get("run_id") else ""
        print(f"model: {info['model']}{made_by}{'  [SMOKE RUN]' if info.get('smoke') else ''}")
        print(f"{summary['entries']} input(s)/frame(s), {summary['faces']} face(s), {summary['no_face']} without "
              f"a face, {summary['errors']} unreadable; detector {summary['detector']}, TTA {summary['tta']}; "
              f"{summary['seconds']:.1f} s")
        for key in ("json", "csv", "out"):
            if summary[key]:
                print(f"{key}: {summary[key]}")
        if summary["errors"] and summary["errors"] == summary["entries"]:
            print(f"error: none of the {summary['entries']} input(s) could be read (each is listed above) — fix: "
                  "pass image files (JPEG, PNG, BMP, GIF, WebP), folders holding them, or videos", file=sys.stderr)
        return 1 if summary["errors"] else 0
    if args.command == "export":
        from agegender.export import export_model

        result = export_model(args.model, args.format, args.out, preprocessing=args.preprocessing,
                              overwrite=args.overwrite, check=not args.no_check, check_faces=args.check_faces)
        print(json.dumps(result, indent=2))
        check = result.get("check")
        if check and check.get("checked"):
            print(f"checked against the .keras model on {check['faces']}: largest difference "
                  f"{check['max_abs_difference']:.2g} (tolerance {check['tolerance']:g})", file=sys.stderr)
        elif check:
            print(f"not checked against the .keras model: {check['reason']}", file=sys.stderr)
        return 0
    if args.command == "face-geometry":
        from pathlib import Path

        from agegender.predict import IMAGE_EXTS, measure_face_crop

        folder = Path(args.folder)
        if not folder.is_dir():
            raise DataError("not a folder", path=folder, fix="pass a folder of face crops")
        from agegender.data.samples import escaped_name, undecodable

        paths = [p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTS]
        for bad in [p for p in paths if undecodable(str(p))]:  # reported escaped, never fatal
            print(f"skipped {escaped_name(str(bad))}: file name is not valid UTF-8 (rename it)", file=sys.stderr)
        paths = [p for p in paths if not undecodable(str(p))]
        print(json.dumps(measure_face_crop(paths, limit=args.limit), indent=2))
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
