"""Speziali: the data and split, the three networks, their evaluation and the table cells."""

from __future__ import annotations


import numpy as np

from agegender.errors import DataError
from reproductions.utkface_dual_cnn.config import GENDER_LABELS, NETWORKS, Network, SpezialiExperiment

# ----------------------------------------------------------------------------------------------
# data


def load_split(data_dir, exp: SpezialiExperiment, tfds_dir=None):
    """Read UTKFace under ``data_dir`` (or the prepared TFDS data in ``tfds_dir``) and apply the Speziali
    split; returns (samples, frame used, split)."""
    from agegender.cli import read_samples
    from agegender.data.splits import make_split

    samples = read_samples("utkface", data_dir, tfds_dir)
    frame = samples.frame
    if exp.max_images is not None and exp.max_images < len(frame):
        frame = frame.sample(n=exp.max_images, random_state=exp.seed).sort_values("file").reset_index(drop=True)
    split = make_split(frame, "speziali", seed=exp.seed, test_fraction=exp.test_fraction,
                       val_fraction=exp.val_fraction, keep_duplicates_together=exp.keep_duplicates_together)
    counts = split.counts()
    if min(counts.values()) == 0:
        raise DataError(f"too few usable faces for a train/validation/test split (split sizes {counts})",
                        path=data_dir if tfds_dir is None else tfds_dir,
                        fix="point --data-dir at a folder with more UTKFace images (at least ~10)")
    return samples, frame, split


def ks_statistic(a, b) -> float:
    """Two-sample Kolmogorov-Smirnov statistic: the largest gap between the two empirical CDFs."""
    a, b = np.sort(np.asarray(a, dtype="float64")), np.sort(np.asarray(b, dtype="float64"))
    grid = np.concatenate([a, b])
    cdf_a = np.searchsorted(a, grid, side="right") / len(a)
    cdf_b = np.searchsorted(b, grid, side="right") / len(b)
    return float(np.max(np.abs(cdf_a - cdf_b)))


def split_shares(counts: dict) -> dict:
    """The paper's two shares (Sec. III-A) from split counts, in percent."""
    total = sum(counts.values())
    trainval = counts["train"] + counts["val"]
    return {"train_test": (100.0 * trainval / total, 100.0 * counts["test"] / total),
            "train_val": (100.0 * counts["train"] / trainval, 100.0 * counts["val"] / trainval)}


def _heads(tasks) -> dict:
    """The declared heads of ``tasks`` (:mod:`agegender.heads`): age in years, unscaled (README.md), MSE;
    gender 0 male / 1 female for the 2-way softmax, sparse cross-entropy."""
    from agegender.heads import TASKS

    return {task: TASKS[f"speziali/{task}"] for task in tasks}


def _targets(tasks):
    return {task: spec.target() for task, spec in _heads(tasks).items()}


def make_datasets(split, exp: SpezialiExperiment, tasks, skipped: list) -> dict:
    """Train (augmented, shuffled), validation and test datasets, plus un-augmented train for metrics.

    ``skipped`` receives one list per dataset of ``{file, reason}`` for the files left out (see
    :func:`merge_skipped`); a file that fails to decode is added to its list during the first pass.
    """
    from agegender.data.inputs import dataset
    from agegender.data.pipeline import Augment

    augment = Augment(flip=exp.flip, rotation_deg=exp.rotation_deg, brightness=exp.brightness,
                      contrast=exp.contrast, saturation=exp.saturation, hue=exp.hue)
    targets = _targets(tasks)
    out = {}
    for name, part, training in (("train", "train", True), ("val", "val", False), ("test", "test", False),
                                 ("train_eval", "train", False)):
        frame = split.part(part)
        report: list = []
        # tf.data or the numpy loader, by Keras backend; exact cardinality: see README.md (Keras 3 per-output losses)
        out[name] = dataset(frame, targets, image_size=exp.input_size, batch_size=exp.batch_size,
                            training=training, augment=augment if training else None, seed=exp.seed,
                            pixel_scale=1.0,  # the model rescales 0-255 itself
                            report=report)
        n = len(frame) - len(report)
        if name != "train_eval":
            skipped.append(report)  # merged after training: files that fail to decode are reported then
        out[f"n_{name}"] = n
    return out


def merge_skipped(reports: list) -> list[dict]:
    """The ``{file, reason}`` entries of every dataset's report, each once."""
    merged: list[dict] = []
    for report in reports:
        for item in (report if isinstance(report, list) else [report]):
            if item not in merged:
                merged.append(item)
    return merged


# ----------------------------------------------------------------------------------------------
# models


def build_network(network: Network | str, exp: SpezialiExperiment, strategy=None):
    """Build and compile one network with the paper's optimiser, losses and lambda_age.

    ``strategy``: a ``tf.distribute`` strategy (:func:`agegender.distribute.make_strategy`) whose
    scope the model is built and compiled under; None: the current one.
    """
    import contextlib

    network = NETWORKS[network] if isinstance(network, str) else network
    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        return _build_network(network, exp)


def _build_network(network: Network, exp: SpezialiExperiment):
    import keras

    from agegender.models.dual_cnn import build_dual_cnn

    model = build_dual_cnn(network.variant, input_size=exp.input_size, dropout=exp.dropout)
    bn = model.get_layer("block1_bn")
    bn.momentum, bn.epsilon = exp.bn_momentum, exp.bn_epsilon  # PyTorch defaults (README.md)
    heads = _heads(network.tasks)  # losses and metrics (age MAE, R²; gender accuracy) as the heads declare them
    age_weight = exp.lambda_age if (network.key == "dual" or exp.scale_single_age_loss) else 1.0
    weights = {"age": age_weight, "gender": 1.0}
    model.compile(optimizer=keras.optimizers.Adam(getattr(exp, network.lr_field), epsilon=exp.adam_epsilon),
                  loss={t: spec.keras_loss() for t, spec in heads.items()},
                  loss_weights={t: weights[t] for t in network.tasks},
                  weighted_metrics={t: spec.keras_metrics() for t, spec in heads.items()})
    return model


def preprocessing(network: Network, exp: SpezialiExperiment, data_kind: str):
    """How ``python -m agegender predict`` feeds a face to ``network``: 0-255 pixels at ``input_size``."""
    from agegender.preprocess import Preprocessing, face_preset

    return Preprocessing(input_size=exp.input_size, pixel_scale=1.0, face=face_preset(data_kind, "utkface"),
                         heads={t: spec.head() for t, spec in _heads(network.tasks).items()})


def _iteration_logger(n_train: int, batch_size: int, keys):
    """Keras callback turning the running epoch means at each batch end into per-batch losses."""
    import keras

    class IterationLoss(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.rows: list[dict] = []
            self.iteration = 0

        def get_resume_state(self) -> dict:  # saved with the training state at each epoch end
            return {"rows": self.rows, "iteration": self.iteration}

        def set_resume_state(self, state: dict) -> None:
            self.rows, self.iteration = list(state["rows"]), int(state["iteration"])

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch, self.seen, self.batches = epoch + 1, 0, 0
            self.totals = {k: 0.0 for k in keys}
            self.rows = [r for r in self.rows if r["epoch"] <= epoch]  # a resumed run redoes the epochs after
            self.iteration = len(self.rows)

        def on_train_batch_end(self, batch, logs=None):
            logs = logs or {}
            size = max(1, min(batch_size, n_train - self.seen))
            seen, batches = self.seen + size, self.batches + 1
            self.iteration += 1
            row = {"iteration": self.iteration, "epoch": self.epoch}
            for key in keys:
                if key not in logs:
                    continue
                # the total loss is a Mean weighted by batch size; per-output losses weight each batch once
                weight, cumulative = (size, seen) if key == "loss" else (1, batches)
                total = float(logs[key]) * cumulative
                row[key] = (total - self.totals[key]) / weight
                self.totals[key] = total
            self.seen, self.batches = seen, batches
            self.rows.append(row)

    return IterationLoss()


# ----------------------------------------------------------------------------------------------
# evaluation


def _gender_ce(labels, probabilities) -> float:
    p = np.clip(np.asarray(probabilities, dtype="float64"), 1e-7, 1 - 1e-7)  # Keras's clipping
    return float(np.mean(-np.log(p[np.arange(len(labels)), np.asarray(labels, dtype=int)])))


def evaluate(model, network: Network, datasets: dict, exp: SpezialiExperiment, train_age_mean: float,
             say=None) -> dict:
    """Per split: losses, age R² / MAE / RMSE, gender accuracy and confusion matrix; raw predictions kept; ``say``
    hears the progress."""
    from agegender.metrics import classification_report, regression_report
    from agegender.training import collect_predictions

    out = {}
    age_weight = exp.lambda_age if (network.key == "dual" or exp.scale_single_age_loss) else 1.0
    for split, key in (("train", "train_eval"), ("val", "val"), ("test", "test")):
        progress = (lambda text, split=split: say(f"{network.title}: evaluating the {split} split: {text}")) \
            if say else None
        y, p, _ = collect_predictions(model, datasets[key], progress)
        m: dict = {"n": int(len(next(iter(y.values()))))}
        loss = 0.0
        if "age" in network.tasks:
            age = regression_report(y["age"], p["age"], train_mean=train_age_mean)
            mse = float(np.mean((np.ravel(y["age"]) - np.ravel(p["age"])) ** 2))
            m.update(age_r2=age["r2"], age_mae_years=age["mae"], age_rmse_years=age["rmse"],
                     age_baseline_mae_years=age["mean_baseline_mae"], age_mse=mse)
            loss += age_weight * mse
        if "gender" in network.tasks:
            gender = classification_report(y["gender"], np.argmax(p["gender"], axis=-1), 2)
            ce = _gender_ce(y["gender"], p["gender"])
            m.update(gender_accuracy=gender["accuracy"], gender_majority=gender["majority_baseline"],
                     gender_confusion=gender["confusion_matrix"], gender_ce=ce, gender_f1=gender["f1"])
            loss += ce
        m["loss"] = loss
        out[split] = m
        out[f"_{split}_predictions"] = (y, p)
    return out


def network_cells(network: Network, history: list[dict], seconds: float, metrics: dict,
                  exp: SpezialiExperiment) -> list[dict]:
    """The paper-table cells one trained network reproduces (labels as in speziali.csv)."""
    last = history[-1] if history else {}
    row, col = network.row, network.column
    cells = [
        {"table": "Time (sec)", "row": row, "column": col, "value": seconds, "unit": "seconds"},
        {"table": "Num. of epochs", "row": row, "column": col, "value": len(history), "unit": "epochs"},
    ]
    for table, key in (("Last loss value (training)", "loss"), ("Last loss value (validation)", "val_loss")):
        if key in last:
            cells.append({"table": table, "row": row, "column": col, "value": last[key], "unit": "loss"})
        if network.key == "dual":
            prefix = "" if key == "loss" else "val_"
            if f"{prefix}age_loss" in last:
                cells.append({"table": table, "row": row, "column": "Age task (lambda_age x MSE part)",
                              "value": exp.lambda_age * last[f"{prefix}age_loss"], "unit": "loss"})
            if f"{prefix}gender_loss" in last:
                cells.append({"table": table, "row": row, "column": "Gender task (CE part)",
                              "value": last[f"{prefix}gender_loss"], "unit": "loss"})
    for table, split in (("Training Metrics", "train"), ("Validation Metrics", "val"), ("Test Metrics", "test")):
        m = metrics[split]
        if "age" in network.tasks:
            cells.append({"table": table, "row": row, "column": "Age task (R2)", "value": m["age_r2"], "unit": "r2"})
            cells.append({"table": table, "row": row, "column": "Age task (MAE, years)",
                          "value": m["age_mae_years"], "unit": "mae-years"})
        if "gender" in network.tasks:
            cells.append({"table": table, "row": row, "column": "Gender task (Accuracy)",
                          "value": m["gender_accuracy"], "unit": "accuracy"})
    if "gender" in network.tasks:
        figure = "Fig. 13" if network.key == "dual" else "Fig. 12"
        matrix = metrics["test"]["gender_confusion"]
        for i, true in enumerate(GENDER_LABELS):
            for j, pred in enumerate(GENDER_LABELS):
                cells.append({"table": figure, "row": f"true {true}", "column": f"predicted {pred}",
                              "value": int(matrix[i][j]), "unit": "count"})
    return cells


def protocol_cells(split, n_images: int, exp: SpezialiExperiment, model) -> list[dict]:
    """Section III-A (data, split, KS), III-B and IV-B (hyper-parameters read from the model) cells."""
    shares = split_shares(split.counts())
    ks = split.info.get("ks_train_val", {})
    a, b, c = "Section III-A", "Section III-B", "Section IV-B"
    conv1, conv2 = model.get_layer("block1_conv"), model.get_layer("block2_conv")
    pool, fc, drop = model.get_layer("block1_pool"), model.get_layer("gender_fc"), model.get_layer("gender_dropout")
    height, width, channels = model.inputs[0].shape[1:]
    padding = (conv1.kernel_size[0] - 1) // 2 if conv1.padding == "same" else 0
    cells = [
        (a, "UTKFace", "images", n_images, "count"),
        (a, "train/test split", "train share", shares["train_test"][0], "percent"),
        (a, "train/test split", "test share", shares["train_test"][1], "percent"),
        (a, "train/validation split", "train share", shares["train_val"][0], "percent"),
        (a, "train/validation split", "validation share", shares["train_val"][1], "percent"),
        (a, "augmentation", "max rotation", exp.rotation_deg, "degrees"),
        (b, "input", "height", height, "pixels"),
        (b, "input", "width", width, "pixels"),
        (b, "input", "channels", channels, "count"),
        (b, "conv 1", "filters", conv1.filters, "count"),
        (b, "conv 1", "kernel size", conv1.kernel_size[0], "pixels"),
        (b, "conv 1", "padding", padding, "pixels"),
        (b, "conv", "stride", conv1.strides[0], "pixels"),
        (b, "conv 2", "kernel size", conv2.kernel_size[0], "pixels"),
        (b, "max pooling", "window", pool.pool_size[0], "pixels"),
        (b, "max pooling", "stride", pool.strides[0], "pixels"),
        (b, "fully connected", "units", fc.units, "count"),
        (b, "dropout", "rate", drop.rate, "scalar"),
        (b, "Multi-task CNN", "learning rate", exp.lr_dual, "scalar"),
        (b, "Single-task CNN gender", "learning rate", exp.lr_gender, "scalar"),
        (b, "Single-task CNN age", "learning rate", exp.lr_age, "scalar"),
        (b, "both architectures", "batch size", exp.batch_size, "count"),
        (c, "early stopping", "patience", exp.patience, "epochs"),
        (c, "age loss", "lambda_age", exp.lambda_age, "scalar"),
    ]
    if "p_value" in ks:
        cells.append((a, "Kolmogorov-Smirnov test", "p-value", ks["p_value"], "p-value"))
    out = [{"table": t, "row": r, "column": col, "value": float(v), "unit": u} for t, r, col, v, u in cells]
    for cell in out:
        if (cell["table"], cell["row"], cell["column"]) in SETTINGS:
            cell["setting"] = True  # echoes a configuration constant: shown, never counted as reproduced
    return out


# cells that only echo a training setting of SpezialiExperiment (not computed from data or read off the model)
SETTINGS = {("Section III-A", "augmentation", "max rotation"),
            ("Section III-B", "Multi-task CNN", "learning rate"),
            ("Section III-B", "Single-task CNN gender", "learning rate"),
            ("Section III-B", "Single-task CNN age", "learning rate"),
            ("Section III-B", "both architectures", "batch size"),
            ("Section IV-B", "early stopping", "patience"),
            ("Section IV-B", "age loss", "lambda_age")}
