"""The learned loss weighting of Sundriyal's multi-task network (``agegender.models.loss_weighting``): the
task weights stay a simplex and receive gradients, the lambda term is in the loss, the model's loss is Eq. 3.5
(the weights logged each epoch, learned, and saved and loaded with the model, lambda and optimizer), and AdamL2
is PyTorch's Adam with weight decay. The small model and batch come from ``tests/helpers.py``."""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers import _batch, _utk_model


# ---------------------------------------------------------------------------------------------- loss weights


def test_weights_stay_a_simplex_and_receive_gradients():
    import keras
    import tensorflow as tf

    from agegender.models.loss_weighting import LossWeighting

    layer = LossWeighting(("gender", "race", "age"), lam=0.1, seed=3)
    w0 = keras.ops.convert_to_numpy(layer.task_weights())
    assert np.all(w0 > 0) and w0.sum() == pytest.approx(1.0, abs=1e-6)
    assert len(set(np.round(w0, 4))) == 3  # "set randomly initially"
    assert [v.name for v in layer.trainable_weights] == ["logits"]
    losses = tf.constant([0.7, 1.6, 0.05])
    optimizer = keras.optimizers.SGD(0.5)
    for _ in range(25):
        with tf.GradientTape() as tape:
            total = layer(losses)
        grads = tape.gradient(total, layer.trainable_weights)
        assert np.abs(grads[0].numpy()).sum() > 0
        optimizer.apply_gradients(zip(grads, layer.trainable_weights))
        w = keras.ops.convert_to_numpy(layer.task_weights())
        assert np.all(w > 0) and w.sum() == pytest.approx(1.0, abs=1e-6)
    assert np.argmax(w) == 2 and w[2] > w0[2]  # weight moves to the smallest loss; lambda keeps the others > 0
    average = LossWeighting(("gender", "age"), mode="average")
    assert not average.trainable_weights
    assert keras.ops.convert_to_numpy(average.task_weights()).tolist() == [0.5, 0.5]
    assert float(average(tf.constant([1.0, 3.0]))) == pytest.approx(2.0)  # plain mean, no penalty


def test_lambda_term_is_in_the_loss():
    import tensorflow as tf

    from agegender.models.loss_weighting import LossWeighting

    losses = tf.constant([0.5, 1.5, 0.2])
    a = LossWeighting(("gender", "race", "age"), lam=0.0, seed=7)
    b = LossWeighting(("gender", "race", "age"), lam=0.7, seed=7)
    w = b.task_weights().numpy()
    assert float(a(losses)) == pytest.approx(float(np.dot(w, losses.numpy())), rel=1e-6)
    assert float(b(losses)) - float(a(losses)) == pytest.approx(0.7 * float(np.sum(w ** 2)), rel=1e-5)
    as_dict = {t: tf.constant(v) for t, v in zip(("age", "gender", "race"), (0.2, 0.5, 1.5))}  # any key order
    assert float(b(losses)) == pytest.approx(float(b(as_dict)), rel=1e-6)


def test_model_loss_is_eq_3_5_weights_are_logged_learned_and_saved(tmp_path):
    import keras

    from agegender.models.loss_weighting import AdamL2, MultiTaskLossModel

    model = _utk_model(lam=0.3)
    model.compile(optimizer=AdamL2(0.05, l2=1e-5))
    x, y = _batch()
    logs = model.evaluate(x, y, batch_size=32, return_dict=True, verbose=0)
    p = model.predict(x, verbose=0)
    w = model.loss_weights()
    ce = {t: float(np.mean(-np.log(p[t][np.arange(32), y[t]]))) for t in ("gender", "race")}
    half_mse = float(np.mean(0.5 * (y["age"] - p["age"]) ** 2))  # Eq. 3.2
    for task, value in {**ce, "age": half_mse}.items():
        assert logs[f"{task}_loss"] == pytest.approx(value, rel=1e-4)
    # Eq. 3.5 from numpy alone: w = softmax(the layer's logits), the task losses computed above
    logits = np.asarray(model.weighting.logits.numpy(), dtype="float64")
    w_np = dict(zip(model.weighting.tasks, np.exp(logits) / np.exp(logits).sum()))
    assert w == pytest.approx(w_np, rel=1e-6)
    losses = {**ce, "age": half_mse}
    expected = sum(w_np[t] * losses[t] for t in w_np) + 0.3 * sum(v * v for v in w_np.values())
    assert logs["loss"] == pytest.approx(expected, rel=1e-4)
    assert logs["loss_weight_penalty"] == pytest.approx(0.3 * sum(v * v for v in w_np.values()), rel=1e-5)
    before = dict(w)
    history = model.fit(x, y, batch_size=8, epochs=2, verbose=0).history
    for task in w:
        assert len(history[f"loss_weight_{task}"]) == 2
    assert sum(history[f"loss_weight_{t}"][-1] for t in w) == pytest.approx(1.0, abs=1e-5)
    after = model.loss_weights()
    assert max(abs(after[t] - before[t]) for t in w) > 1e-4  # the weights learn
    assert "logits" in [v.name for v in model.trainable_weights]
    # registered and serializable: a saved model comes back with its weights, lambda and optimizer
    model.save(tmp_path / "m.keras")
    again = keras.models.load_model(tmp_path / "m.keras")
    assert isinstance(again, MultiTaskLossModel) and again.weighting.lam == pytest.approx(0.3)
    assert again.loss_weights() == pytest.approx(after)
    assert np.allclose(again.predict(x, verbose=0)["age"], model.predict(x, verbose=0)["age"], atol=1e-6)
    assert again.optimizer.l2 == pytest.approx(1e-5)
    keras.backend.clear_session()


def test_adam_l2_is_pytorch_weight_decay():
    import keras

    from agegender.models.loss_weighting import AdamL2

    theta = np.array([1.0, -2.0, 0.5], dtype="float32")
    grad = np.array([0.1, 0.2, -0.3], dtype="float32")
    ours, ref = keras.Variable(theta), keras.Variable(theta)
    AdamL2(0.01, l2=0.5).apply_gradients([(keras.ops.convert_to_tensor(grad), ours)])
    keras.optimizers.Adam(0.01).apply_gradients([(keras.ops.convert_to_tensor(grad + 0.5 * theta), ref)])
    assert np.allclose(ours.numpy(), ref.numpy(), atol=1e-7)
    with pytest.raises(ValueError):
        AdamL2(0.01, weight_decay=0.1)
