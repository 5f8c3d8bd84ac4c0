"""``make demo``: two reproductions end to end on generated faces, at smoke scale, on 2 CPU cores.

1. **Speziali (paper 000)**: generated faces in the UTKFace layout -> ``read_utkface`` ->
   Speziali split (70/30, 70/30, KS test) -> tf.data pipeline with the paper's augmentation ->
   the **dual-task CNN** (``agegender.models.dual_cnn``) -> run record, tables, Figs. 1-19.
2. **Jørgensen (paper 001)**: generated faces in the Adience layout (5 subject-exclusive
   folds) -> ``read_adience`` -> fold 0 as test, held-out users as validation -> the reduced
   Levi-Hassner **multi-task CNN** with LRN (``agegender.models.levi_hassner``) -> run record,
   Table 3 row with one-off and over-sampled accuracy, confusion matrices.

Both run the reproductions' own code through the shared runner (``reproductions.utkface_dual_cnn.run``,
``reproductions.adience_levi.run``) with each paper's experiment dataclass changed only
where a 2-core CPU demands it (``dataclasses.replace``; every change is listed in
:class:`DemoExperiment`). The tables are regenerated next to the published values, and the
printout puts every reproduced score next to its chance level (majority class, mean age):
both models must clearly beat it. These are numbers on generated faces: they show that the
path learns, not what the papers' models reach on real data.

    python -m reproductions.demo --out build/demo        # about 3 minutes on 2 idle cores
    python -m reproductions.demo --fresh                 # a rerun reads the finished runs back; this retrains

It lives with the reproductions (it runs two of them); the library ``agegender`` imports neither
``reproductions`` nor ``results``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@dataclasses.dataclass(frozen=True)
class DemoExperiment:
    """The demo's scale; each field is a departure from a paper, made for a 2-core CPU."""

    utkface_faces: int = 1000     # generated UTKFace-layout faces (the paper: 23,708 real ones)
    utkface_face_size: int = 64   # side of the written JPEGs; the pipeline resizes to speziali_input
    speziali_input: int = 32      # paper 128x128 (Sec. III-B); the 5x5x128 convolution dominates on CPU
    speziali_batch: int = 32      # paper 64: twice the steps per epoch on a small set
    speziali_lr: float = 3e-4     # paper 0.01 diverges at this scale (reproductions/utkface_dual_cnn/README.md)
    speziali_epochs: int = 8      # paper: up to early stopping (patience 3), 8-10 epochs on 11,617 faces
    adience_faces: int = 1000     # generated Adience-layout faces over 5 folds (the paper: 19,487 rows)
    adience_face_size: int = 96   # side of the written JPEGs (real aligned faces are 816x816)
    adience_input: int = 64       # paper: random 227 crops of 256x256 (Table 1); here 64 crops of 72x72
    adience_batch: int = 32       # paper 128 (Sec. 3.4)
    adience_lr: float = 1e-3      # paper 1e-4 (Sec. 3.4): too slow to show learning in a few epochs
    adience_epochs: int = 6       # paper: up to 100 with patience 10 (Sec. 3.4)
    adience_fold: int = 0         # the test fold; the paper runs all five
    seed: int = 0


def speziali_experiment(demo: DemoExperiment):
    """The Speziali experiment at the demo's scale (``dataclasses.replace`` of the paper's)."""
    from reproductions.utkface_dual_cnn import SpezialiExperiment

    return dataclasses.replace(SpezialiExperiment(), input_size=demo.speziali_input, batch_size=demo.speziali_batch,
                               lr_dual=demo.speziali_lr, epochs=demo.speziali_epochs, seed=demo.seed)


def adience_experiment(demo: DemoExperiment):
    """The Jørgensen multi-task experiment at the demo's scale (``dataclasses.replace`` of the paper's)."""
    from reproductions.adience_levi import EXPERIMENTS, smoke

    return dataclasses.replace(smoke(EXPERIMENTS["multitask"]), image_size=demo.adience_input,
                               load_size=demo.adience_input + 8, batch_size=demo.adience_batch,
                               learning_rate=demo.adience_lr, epochs=demo.adience_epochs, max_rows_per_fold=None,
                               patience=3, seed=demo.seed)


def _generate(layout: str, root: Path, n: int, seed: int, size: int) -> None:
    from agegender.data.synth import synthesize

    marker = root / "agegender-synth.json"
    if marker.is_file():
        import json

        written = json.loads(marker.read_text())
        if (written.get("n"), written.get("seed"), written.get("size")) == (n, seed, size):
            return
    synthesize(layout, root, n, seed, size=size)


def run_demo(demo: DemoExperiment, out: Path, *, verbose: int | str = 2, log=print, fresh: bool = False) -> dict:
    """Run both parts; return their test metrics with chance levels, and the paths written.

    Like every reproduction, a rerun reads complete runs back (and resumes an interrupted one);
    ``fresh`` trains again.
    """
    import reproductions.adience_levi as adience
    import reproductions.utkface_dual_cnn as speziali

    out = Path(out)
    t0 = time.time()
    utk_root, adience_root = out / "faces" / "utkface", out / "faces" / "adience"
    _generate("utkface", utk_root, demo.utkface_faces, demo.seed, demo.utkface_face_size)
    _generate("adience", adience_root, demo.adience_faces, demo.seed, demo.adience_face_size)
    log(f"[demo] generated {demo.utkface_faces} UTKFace-layout and {demo.adience_faces} Adience-layout faces "
        f"under {out / 'faces'} ({time.time() - t0:.0f} s)")

    log("[demo] 1/2 Speziali: the dual-task CNN (age regression + gender) on the UTKFace layout")
    spz = speziali.run(utk_root, speziali_experiment(demo), networks=("dual",), out=out,
                       data_kind_override="generated", verbose=verbose, log=log, fresh=fresh)
    dual = spz["metrics"]["dual"]["test"]

    log("[demo] 2/2 Jørgensen: the reduced Levi-Hassner multi-task CNN (8 age groups + gender) on the Adience layout")
    exp = adience_experiment(demo)
    levi_run = adience.run(exp, data_dir=adience_root, folds=[demo.adience_fold], out=out,
                           data_kind_override="generated", verbose=verbose, log=log, fresh=fresh,
                           build_record=False)  # Tables 1-2 (the Keras builds) are not part of the demo
    fold = levi_run["results"][exp.name][0]
    levi = fold["metrics"]["test"]

    metrics = {
        "dual_gender_accuracy": dual["gender_accuracy"], "dual_gender_majority": dual["gender_majority"],
        "dual_age_r2": dual["age_r2"], "dual_age_mae_years": dual["age_mae_years"],
        "dual_age_baseline_mae_years": dual["age_baseline_mae_years"],
        "levi_gender_accuracy": levi["gender"]["accuracy"], "levi_gender_majority": levi["gender"]["majority_baseline"],
        "levi_age_accuracy": levi["age"]["accuracy"], "levi_age_majority": levi["age"]["majority_baseline"],
        "levi_age_one_off": levi["age"]["one_off_accuracy"],
    }
    return {"metrics": metrics, "seconds": time.time() - t0,
            "records": {"dual": spz["records"]["dual"], "multitask": fold["record"]},
            "tables": {"speziali": out / "tables" / "speziali__test-metrics.md",
                       "jorgensen": out / "tables" / "jorgensen__table-3.md"},
            "figures": {"speziali": spz["figures_dir"], "jorgensen": Path(fold["record"]).parent},
            "models": {"dual": Path(spz["records"]["dual"]).parent / "model.keras",
                       "multitask": Path(fold["record"]).parent / "model.keras"},
            "readme": out / "README.md"}


def beats_chance(metrics: dict) -> dict[str, bool]:
    """The demo's claims: each model clearly above its chance level on the test faces."""
    m = metrics
    return {"dual gender": m["dual_gender_accuracy"] >= m["dual_gender_majority"] + 0.08,
            "dual age": m["dual_age_r2"] > 0.1,
            "multi-task gender": m["levi_gender_accuracy"] >= m["levi_gender_majority"] + 0.08,
            "multi-task age": m["levi_age_accuracy"] >= m["levi_age_majority"] + 0.05}


def main(argv=None) -> int:
    """The command line; errors a user can fix are one ``error:`` line (:func:`agegender.cli.run_main`)."""
    from agegender.cli import run_main

    return run_main(_main, argv)


def _main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reproductions.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="build/demo",
                        help="output folder: faces/, runs/, tables/, figures/, README.md (default build/demo)")
    parser.add_argument("--seed", type=int, default=DemoExperiment.seed,
                        help="seed of the generated faces, the splits and the weights (default 0)")
    parser.add_argument("--quiet", action="store_true", help="no per-epoch Keras lines")
    parser.add_argument("--fresh", action="store_true",
                        help="train again; by default a rerun reads the complete runs in --out back (seconds) and "
                             "resumes an interrupted one")
    args = parser.parse_args(argv)
    demo = dataclasses.replace(DemoExperiment(), seed=args.seed)
    result = run_demo(demo, Path(args.out), verbose=0 if args.quiet else 2, fresh=args.fresh)
    m = result["metrics"]
    print("\n[demo] test faces (generated), reproduced vs chance:")
    print(f"  dual-task CNN  gender accuracy {m['dual_gender_accuracy']:.3f}  (majority class "
          f"{m['dual_gender_majority']:.3f})")
    print(f"                 age R² {m['dual_age_r2']:.2f}, MAE {m['dual_age_mae_years']:.1f} years  "
          f"(predicting the train mean: R² 0, MAE {m['dual_age_baseline_mae_years']:.1f})")
    print(f"  multi-task CNN gender accuracy {m['levi_gender_accuracy']:.3f}  (majority class "
          f"{m['levi_gender_majority']:.3f})")
    print(f"                 age-group accuracy {m['levi_age_accuracy']:.3f}, one-off {m['levi_age_one_off']:.3f}  "
          f"(majority class {m['levi_age_majority']:.3f})")
    for name, path in result["tables"].items():
        print(f"[demo] table ({name}): {path}")
    for name, path in result["figures"].items():
        print(f"[demo] figures ({name}): {path}")
    for name, path in result["models"].items():
        print(f"[demo] model ({name}): {path}")
    print(f"[demo] index of every table: {result['readme']}")
    print(f"[demo] done in {result['seconds']:.0f} s")
    failed = [claim for claim, ok in beats_chance(m).items() if not ok]
    if failed:
        print(f"[demo] warning: not clearly above chance: {', '.join(failed)}; the generated faces or the "
              "seed may be unlucky, try --seed 1", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
