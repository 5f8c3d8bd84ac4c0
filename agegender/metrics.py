"""Evaluation metrics computed from predictions, the same way for every reproduction.

Accuracy, one-off accuracy (Adience: the predicted group is the true one or adjacent, Levi &
Hassner Sec. 4), confusion matrices, per-class precision / recall / F1, MAE (in the caller's
units), the coefficient of determination R² (Speziali's age metric), and two checks on a trained
network: :func:`collapse_check` (constant outputs) and :func:`dead_units` (ReLU units no face activates).
"""

from __future__ import annotations

import numpy as np


def classification_report(y_true, y_pred, num_classes: int) -> dict:
    """Accuracy, one-off accuracy, confusion matrix (rows true, columns predicted), per-class P/R/F1."""
    y_true = np.asarray(y_true, dtype=int).ravel()
    y_pred = np.asarray(y_pred, dtype=int).ravel()
    matrix = np.zeros((num_classes, num_classes), dtype=int)
    np.add.at(matrix, (y_true, y_pred), 1)
    support = matrix.sum(axis=1)
    predicted = matrix.sum(axis=0)
    tp = np.diag(matrix)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / np.maximum(predicted, 1), 0.0)
        recall = np.where(support > 0, tp / np.maximum(support, 1), 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0.0)
    n = max(len(y_true), 1)
    return {
        "n": int(len(y_true)),
        "accuracy": float(tp.sum() / n),
        "one_off_accuracy": float(np.mean(np.abs(y_true - y_pred) <= 1)) if len(y_true) else 0.0,
        "confusion_matrix": matrix.tolist(),
        "precision": precision.tolist(),
        "recall": recall.tolist(),
        "f1": f1.tolist(),
        "macro_f1": float(np.mean(f1)) if num_classes else 0.0,
        "majority_baseline": float(support.max() / n) if len(y_true) else 0.0,
    }


def regression_report(y_true, y_pred, train_mean: float | None = None) -> dict:
    """MAE, RMSE and R² (1 - SS_res / SS_tot); ``mean_baseline_mae`` predicts ``train_mean``."""
    y_true = np.asarray(y_true, dtype="float64").ravel()
    y_pred = np.asarray(y_pred, dtype="float64").ravel()
    residual = y_true - y_pred
    ss_tot = float(np.sum((y_true - y_true.mean()) ** 2)) if len(y_true) else 0.0
    baseline = y_true.mean() if train_mean is None else train_mean
    return {
        "n": int(len(y_true)),
        "mae": float(np.mean(np.abs(residual))) if len(y_true) else float("nan"),
        "rmse": float(np.sqrt(np.mean(residual**2))) if len(y_true) else float("nan"),
        "r2": float(1 - np.sum(residual**2) / ss_tot) if ss_tot > 0 else float("nan"),
        "mean_baseline_mae": float(np.mean(np.abs(y_true - baseline))) if len(y_true) else float("nan"),
    }


def collapse_check(*, age_true=None, age_pred=None, gender_true=None, gender_prob=None,
                   spread_share: float = 0.05, min_prob_std: float = 0.01) -> list[str]:
    """Why a trained network looks collapsed to constant outputs (empty list: it does not).

    A network that collapsed (dead ReLUs after a diverging first step, say) gives nearly the same
    output for every face. Age: the spread (std) of the predictions is under ``spread_share`` of
    the labels' spread. Gender: one class is predicted for (almost) every face, or the predicted
    probability of the second class hardly varies (std under ``min_prob_std``) while the accuracy
    is no better than the majority share. A network that is merely slow to learn keeps a spread
    and is not called collapsed.
    """
    reasons = []
    if age_true is not None and age_pred is not None:
        truth, pred = np.ravel(np.asarray(age_true, float)), np.ravel(np.asarray(age_pred, float))
        if not np.all(np.isfinite(pred)):
            reasons.append("age predictions are not finite")
        elif np.std(pred) < spread_share * np.std(truth):
            reasons.append(f"age predictions nearly constant (std {np.std(pred):.3g} vs labels {np.std(truth):.3g})")
    if gender_true is not None and gender_prob is not None:
        truth = np.ravel(np.asarray(gender_true, int))
        prob = np.asarray(gender_prob, float)
        second = prob[:, 1] if prob.ndim == 2 and prob.shape[-1] > 1 else np.ravel(prob)
        pred = (second > 0.5).astype(int) if prob.ndim == 1 or prob.shape[-1] == 1 else np.argmax(prob, axis=-1)
        share = max(np.mean(pred == 0), np.mean(pred == 1))
        majority = max(np.mean(truth == 0), np.mean(truth == 1))
        accuracy = float(np.mean(pred == truth))
        if not np.all(np.isfinite(second)):
            reasons.append("gender probabilities are not finite")
        elif share > 0.98:
            reasons.append(f"gender: one class predicted for {share:.1%} of the faces")
        elif np.std(second) < min_prob_std and accuracy <= majority + 0.02:
            reasons.append(f"gender probabilities nearly constant (std {np.std(second):.3g}), accuracy {accuracy:.3f} "
                           f"at the majority share {majority:.3f}")
    return reasons


def dead_units(activations) -> float:
    """Share of a ReLU layer's units that no face activates: zero (or below) for every row of ``activations``
    (faces x units). Such a unit passes no gradient back, so it stays dead for the rest of training (the
    "dying ReLU"); a head whose hidden units are mostly dead keeps only the few that are left."""
    a = np.asarray(activations, float).reshape(len(activations), -1)
    return float(np.mean(np.max(a, axis=0) <= 0))
