"""``python -m agegender.data``: generate faces in a dataset's native layout, audit a dataset folder, prepare
it once as TFDS records, or pack it compactly (WebP at the load size) for a machine without TensorFlow."""

from __future__ import annotations

import argparse
import json
import sys

from agegender.errors import DataError

LAYOUTS = ("utkface", "adience", "celeba", "imdb_wiki")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m agegender.data", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    synth = sub.add_parser(
        "synth", help="draw procedural faces and write them in a dataset's native layout",
        description="Draw procedural faces whose look depends on age, gender and race, and write them in the "
                    "native layout of a dataset so that its reader reads them unchanged.")
    synth.add_argument("--layout", required=True, choices=LAYOUTS, help="which dataset's folder layout to write")
    synth.add_argument("--out", required=True, help="folder to write into (created if absent)")
    synth.add_argument("--n", type=int, default=2000, help="number of faces (default 2000)")
    synth.add_argument("--seed", type=int, default=0, help="random seed; the same seed writes identical files")
    synth.add_argument("--size", type=int, default=None,
                       help="image side in pixels (default: the dataset's own, e.g. 200 for UTKFace)")
    synth.add_argument("--adience-folds", default=None, metavar="DIR",
                       help="adience only: copy the rows of these real fold_{0..4}_data.txt files and draw one "
                            "image per row from its labels")

    audit = sub.add_parser(
        "audit", help="read a dataset folder and report samples, skipped files, duplicates and splits",
        description="Read a dataset folder with its reader, print a readable report and optionally write "
                    "it as JSON (keys documented in README.md, 'Audit').")
    audit.add_argument("dataset", choices=LAYOUTS, help="which reader to use")
    audit.add_argument("--data-dir", required=True, help="the dataset root in its native layout (see README)")
    audit.add_argument("--protocol", default=None,
                       help="split protocol to report (speziali, adience_folds, gu_yang, dey, coral, celeba, "
                            "random; default: the dataset's usual one)")
    audit.add_argument("--coral-csv-dir", default=None, metavar="DIR",
                       help="folder with utk_train.csv and utk_test.csv (needed by --protocol coral)")
    audit.add_argument("--seed", type=int, default=0, help="seed for random protocols (default 0)")
    audit.add_argument("--no-hash", action="store_true", help="skip hashing files to find byte-identical duplicates")
    audit.add_argument("--remap-stray-ages", action="store_true",
                       help="adience only: map stray age labels to canonical groups (see read_adience)")
    audit.add_argument("--keep-duplicates-together", action="store_true",
                       help="report the split as made with --keep-duplicates-together (each group of byte-identical "
                            "files in one split); default: the protocol as the paper made it")
    audit.add_argument("--no-image-check", action="store_true",
                       help="count every image the reader accepts as usable, without the file check training applies "
                            "(empty, HTML, truncated, too large ...); faster on slow storage")
    audit.add_argument("--json", default=None, metavar="OUT",
                       help="also write the report as JSON to OUT (its folder must be writable: checked first)")

    prepare = sub.add_parser(
        "prepare", help="read a dataset folder once and write it as TFDS records (tfds.load-able)",
        description="Read a dataset folder with its reader, skip unusable images (listed in skipped.json) and "
                    "write TFRecord shards with TensorFlow Datasets, once: a second call reuses them. Builder "
                    "names: utk_face, adience_faces, celeb_a_faces, imdb_wiki_faces.")
    prepare.add_argument("dataset", choices=LAYOUTS, help="which dataset (and reader)")
    prepare.add_argument("--data-dir", required=True, help="the raw dataset root in its native layout (manual_dir)")
    prepare.add_argument("--tfds-dir", required=True, help="TFDS data_dir to write the prepared records into")

    pack = sub.add_parser(
        "pack", help="write the usable images at their load size as WebP, with labels and provenance (a pack)",
        description="Read a dataset folder with its reader, drop the images training cannot use (listed in the "
                    "manifest with the reason), resize each to --size as the pipeline does and write it as WebP, "
                    "with the label table, the reader's report, the source's fingerprint and the grey-level "
                    "difference the re-encoding costs. Readers accept the pack folder like the raw one "
                    "(agegender.data.pack).")
    pack.add_argument("dataset", choices=LAYOUTS, help="which dataset (and reader)")
    pack.add_argument("--data-dir", required=True, help="the raw dataset root in its native layout")
    pack.add_argument("--size", required=True, help="side in pixels every image is resized to (the protocol's load "
                      "size, e.g. 128 for Speziali), or 'native' to keep images that are already square and of one "
                      "size (UTKFace: 200)")
    pack.add_argument("--out", required=True, help="the pack folder to write (new, empty, or an older pack)")
    pack.add_argument("--quality", type=int, default=80, help="WebP quality 0-100 (default 80)")
    pack.add_argument("--method", type=int, default=4, choices=range(7), metavar="0-6",
                      help="WebP encoder effort 0-6 (default 4; 6 is smaller and slower)")
    pack.add_argument("--workers", type=int, default=None, help="encoding processes (default: the cores, at most 16)")
    return parser


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _main(args)
    except (DataError, ValueError) as err:
        fix = "" if " — fix: " in str(err) else f" — fix: see python -m agegender.data {args.command} --help"
        print(f"error: {err}{fix}", file=sys.stderr)
        return 2
    except OSError as err:  # a folder or file no check foresaw (permissions, disk full ...)
        from agegender.cli import os_error_line

        print(f"error: {os_error_line(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130


def _size(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise DataError(f"--size {text!r} is not a number of pixels", fix="pass --size N (e.g. 128) or --size native") \
            from None


def _main(args) -> int:
    from pathlib import Path

    from agegender import atomic

    if args.command == "synth":
        atomic.check_writable(args.out)
        from agegender.data.synth import synthesize

        summary = synthesize(args.layout, args.out, args.n, args.seed, size=args.size,
                             adience_folds_dir=args.adience_folds)
        print(json.dumps(summary, indent=2, sort_keys=True, default=str))
        return 0
    if args.command == "prepare":
        from agegender.data.prepared import prepare

        atomic.check_writable(args.tfds_dir, flag="--tfds-dir")
        result = prepare(args.dataset, args.data_dir, args.tfds_dir)
        skipped = result.pop("skipped")
        result["skipped"] = {"count": len(skipped), "first": skipped[:10],
                             "all": str(Path(result["data_dir"]) / "skipped.json")}
        print(json.dumps(result, indent=2, default=str))
        return 0
    if args.command == "pack":
        from agegender.data.pack import write_pack

        size = None if args.size == "native" else _size(args.size)
        atomic.check_writable(Path(args.out).parent, flag="--out")
        manifest = write_pack(args.dataset, args.data_dir, args.out, size=size, quality=args.quality,
                              method=args.method, workers=args.workers)
        summary = {k: manifest.get(k) for k in ("dataset", "size", "quality", "images", "bytes", "reencoding",
                                                 "reused")}
        summary.update(out=args.out, megabytes=round(manifest["bytes"] / 1e6, 1), skipped=len(manifest["skipped"]))
        print(json.dumps(summary, indent=2, default=str))
        return 0
    from agegender.data.audit import audit, format_report

    if args.remap_stray_ages and args.dataset != "adience":
        raise DataError("--remap-stray-ages applies to adience only", fix="leave it out for other datasets")
    if args.json:  # a read-only folder stops the audit before its work, not after
        atomic.check_writable(Path(args.json).parent, flag="--json")
    options = {"remap_stray_ages": True} if args.remap_stray_ages else {}
    result = audit(args.dataset, args.data_dir, protocol=args.protocol, coral_csv_dir=args.coral_csv_dir,
                   seed=args.seed, hash_duplicates=not args.no_hash, check_images=not args.no_image_check,
                   keep_duplicates_together=args.keep_duplicates_together, **options)
    print(format_report(result))
    if args.json:
        atomic.write_json(args.json, result)
        print(f"JSON report: {args.json}")
    if not result["samples"] and result["files_seen"]:
        raise DataError(f"none of the {result['files_seen']:,} files is a usable {args.dataset} image (the report "
                        "above gives each reason)", path=args.data_dir,
                        fix="point --data-dir at the real dataset folder (check that the download finished and "
                            "was unpacked)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
