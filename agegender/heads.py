"""Task heads, each declared once: what a model output is, how its labels are encoded, how it is read back.

A :class:`TaskSpec` holds everything the rest of the suite needs to know about one output:

============  ==============================================================================
builders      ``units``, ``activation`` (:meth:`TaskSpec.layer`: the float32 output layer)
pipeline      ``column``, ``encoding``, ``scale``, ``offset`` (:meth:`TaskSpec.target`, an
              :class:`agegender.data.pipeline.Target`: how a label becomes the training target)
compile       ``loss`` and ``metrics`` (:meth:`TaskSpec.keras_loss`, :meth:`TaskSpec.keras_metrics`)
predict,      ``decoding``, ``labels``, ``values`` (:meth:`TaskSpec.head`, an
export       :class:`agegender.preprocess.Head`: how an output becomes years or a class; it goes
              into each run record's ``preprocessing``, which ``predict`` and ``export`` read)
============  ==============================================================================

The heads of the five papers are below (:data:`TASKS`, and the factories for the parametrised
ones); the builders' output tables and the reproductions' targets, compile steps and
preprocessing records are all read off them, so the four can never disagree.
"""

from __future__ import annotations

import dataclasses

from agegender.data.samples import ADIENCE_AGE_GROUPS, GENDERS, RACES
from agegender.preprocess import ADIENCE_GROUP_AGES

ENCODINGS = ("regression", "binary", "sparse", "onehot")  # agegender.data.pipeline.Target kinds
DECODINGS = ("regression", "sigmoid", "groups", "softmax")  # agegender.preprocess.Head kinds
ACTIVATIONS = ("linear", "sigmoid", "softmax")


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """One model output: its layer, its training target, its loss and metrics, and how it is decoded.

    ``task``: the role (``age``, ``gender``, ``race``); ``output``: the model output's name (default
    the role; Dey & Aggarwal call the race head ``ethnicity``). Encoding: the label in ``column`` of
    the sample table becomes ``(value - offset) * scale`` (``regression``), a 0/1 float (``binary``),
    a class index (``sparse``) or a one-hot vector of ``units`` (``onehot``); rows without a label
    get weight 0. Decoding: ``regression`` (``years = value / scale + decoded_offset``), ``sigmoid``
    (age: ``years = value / scale``; gender: the probability of ``labels[1]``), ``groups`` (a softmax
    over age groups ``labels``, each standing for ``values`` years) or ``softmax`` (over ``labels``).
    """

    task: str
    units: int
    activation: str
    loss: str
    metrics: tuple[str, ...]
    column: str
    encoding: str
    decoding: str
    output: str = ""
    scale: float = 1.0
    offset: float = 0.0
    decoded_offset: float | None = None  # None: ``offset`` (an age label that is not the age itself differs)
    max_age: float | None = None  # a sigmoid age head: years = value * max_age (the target is age / max_age)
    labels: tuple = ()
    values: tuple = ()

    def __post_init__(self):
        if not self.output:
            object.__setattr__(self, "output", self.task)
        problems = [f"{name} {value!r} not in {choices}" for name, value, choices in (
            ("encoding", self.encoding, ENCODINGS), ("decoding", self.decoding, DECODINGS),
            ("activation", self.activation, ACTIVATIONS)) if value not in choices]
        if self.decoding in ("groups", "softmax") and len(self.labels) != self.units:
            problems.append(f"{len(self.labels)} labels for {self.units} units")
        if self.decoding == "groups" and len(self.values) != len(self.labels):
            problems.append("an age group decoding needs one value (years) per label")
        if self.encoding == "binary" and (self.units, self.activation) != (1, "sigmoid"):
            problems.append("a binary target needs one sigmoid unit")
        if self.decoding == "sigmoid" and self.task == "age" and not self.max_age:
            problems.append("a sigmoid age head needs max_age")
        if problems:
            raise ValueError(f"task {self.output}: " + "; ".join(problems))

    @property
    def regression(self) -> bool:
        """A numeric target (age in years or scaled), not a class."""
        return self.encoding == "regression"

    @property
    def classes(self) -> tuple[str, ...]:
        """The class names of a classification head (empty for a regression)."""
        return () if self.regression else tuple(self.labels)

    # ---------------------------------------------------------------------------- the four users

    def layer(self, name: str | None = None):
        """The output layer: ``Dense(units, activation)`` in float32 (losses see float32 under mixed precision)."""
        import keras

        return keras.layers.Dense(self.units, activation=self.activation, dtype="float32", name=name or self.output)

    def target(self):
        """The pipeline's :class:`~agegender.data.pipeline.Target` for this output."""
        from agegender.data.pipeline import Target

        return Target(self.column, self.encoding, num_classes=self.units if self.encoding == "onehot" else None,
                      scale=self.scale, offset=self.offset)

    def head(self):
        """``predict`` / ``export``'s :class:`~agegender.preprocess.Head` for this output."""
        from agegender.preprocess import Head

        decoded = self.offset if self.decoded_offset is None else self.decoded_offset
        if self.decoding == "regression":
            return Head.age_regression(self.output, scale=self.scale, offset=decoded)
        if self.decoding == "sigmoid" and self.task == "age":
            return Head.age_sigmoid(self.max_age, self.output, offset=decoded)
        if self.decoding == "groups":
            return Head.age_groups(self.labels, self.values, self.output)
        return Head(self.decoding, self.output, labels=tuple(self.labels))

    def keras_loss(self):
        """The loss ``compile`` takes for this output (a Keras loss name)."""
        return self.loss

    def keras_metrics(self) -> list:
        """The metrics ``compile`` takes for this output, named as the history keys read them (``accuracy``,
        ``mae``, ``r2``)."""
        import keras

        accuracy = {"binary": keras.metrics.BinaryAccuracy, "sparse": keras.metrics.SparseCategoricalAccuracy,
                    "onehot": keras.metrics.CategoricalAccuracy}
        made = {"mae": lambda: keras.metrics.MeanAbsoluteError(name="mae"),
                "r2": lambda: keras.metrics.R2Score(name="r2"),
                "accuracy": lambda: accuracy[self.encoding](name="accuracy")}
        return [made[name]() for name in self.metrics]


# -------------------------------------------------------------------------------------------- the papers' heads


def age_years(**changes) -> TaskSpec:
    """Age in years, one linear unit, MSE (Speziali, Sec. IV-B: the age loss is an MSE in years)."""
    return dataclasses.replace(TaskSpec("age", 1, "linear", "mse", ("mae", "r2"), "age", "regression", "regression"),
                               **changes)


def age_sigmoid(max_age: float) -> TaskSpec:
    """Age / ``max_age`` through one sigmoid unit, MSE (Dey & Aggarwal, Sec. 3.2 / 3.5)."""
    return TaskSpec("age", 1, "sigmoid", "mse", ("mae",), "age", "regression", "sigmoid", scale=1.0 / max_age,
                    max_age=float(max_age))


def age_groups(labels, values, column: str, **changes) -> TaskSpec:
    """A softmax over age groups (sparse cross-entropy), each group decoded as ``values`` years."""
    return dataclasses.replace(TaskSpec("age", len(labels), "softmax", "sparse_categorical_crossentropy",
                                        ("accuracy",), column, "sparse", "groups", labels=tuple(labels),
                                        values=tuple(float(v) for v in values)), **changes)


def gu_yang_groups(n_groups: int) -> TaskSpec:
    """Gu & Yang's 3 / 5 / 10 groups (:mod:`agegender.data.age_groups`), each at its middle age."""
    from agegender.data.age_groups import AGE_GROUP_EDGES, age_group_labels

    edges = AGE_GROUP_EDGES[n_groups]
    return age_groups(age_group_labels(n_groups), [(lo + hi - 1) / 2 for lo, hi in zip(edges, edges[1:])],
                      "gu_age_group")


def coral_age(age_scale: float, age_min: float) -> TaskSpec:
    """Sundriyal's UTKFace age (Sec. 3.3.2): the CORAL label (age - ``age_min``) / ``age_scale``, one linear unit."""
    return age_years(column="coral_label", scale=1.0 / age_scale, decoded_offset=float(age_min), metrics=("mae",))


def classes(task: str, labels, *, encoding: str = "sparse", output: str = "", column: str | None = None) -> TaskSpec:
    """A softmax over ``labels`` with categorical cross-entropy (``sparse`` labels or ``onehot`` vectors)."""
    loss = "sparse_categorical_crossentropy" if encoding == "sparse" else "categorical_crossentropy"
    return TaskSpec(task, len(labels), "softmax", loss, ("accuracy",), column or task, encoding, "softmax",
                    output=output, labels=tuple(labels))


TASKS: dict[str, TaskSpec] = {
    # Speziali (Sec. III-B): a 2-way softmax for gender, one linear neuron for age in years
    "speziali/age": age_years(),
    "speziali/gender": classes("gender", GENDERS),
    # Jørgensen (Table 1): one sigmoid unit for gender (P(female)), an 8-way softmax over the Adience groups
    "jorgensen/gender": TaskSpec("gender", 1, "sigmoid", "binary_crossentropy", ("accuracy",), "gender", "binary",
                                 "sigmoid", labels=GENDERS),
    "jorgensen/age": age_groups(ADIENCE_AGE_GROUPS, ADIENCE_GROUP_AGES, "age_group"),
    # Dey & Aggarwal (Sec. 3.5): age / 65 through a sigmoid; 5-way and 2-way softmax with one-hot labels
    "dey_aggarwal/age": age_sigmoid(65.0),
    "dey_aggarwal/ethnicity": classes("race", RACES, encoding="onehot", output="ethnicity"),
    "dey_aggarwal/gender": classes("gender", GENDERS, encoding="onehot"),
    # Gu & Yang (Sec. 2.1): softmax heads; the age groups are parametrised (gu_yang_groups(3 | 5 | 10))
    "gu_yang/age": gu_yang_groups(3),
    "gu_yang/gender": classes("gender", GENDERS),
    "gu_yang/race": classes("race", RACES),
    # Sundriyal (Sec. 3.3): UTKFace age = CORAL label (age - 21) / 40, regression; CelebA Young / Old
    "sundriyal/utkface/gender": classes("gender", GENDERS),
    "sundriyal/utkface/race": classes("race", RACES),
    "sundriyal/utkface/age": coral_age(40.0, 21.0),
    "sundriyal/celeba/gender": classes("gender", GENDERS),
    "sundriyal/celeba/age": age_groups(("young", "old"), (28, 55), "age_class"),
}


def task(name: str) -> TaskSpec:
    """The declared head ``name`` (a key of :data:`TASKS`); a ValueError listing them otherwise."""
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task head {name!r}; declared: {', '.join(TASKS)}") from None


def tasks(prefix: str) -> dict[str, TaskSpec]:
    """``{output name: spec}`` of every head declared under ``prefix`` (``speziali``, ``sundriyal/utkface``)."""
    prefix = prefix.rstrip("/") + "/"
    return {spec.output: spec for name, spec in TASKS.items()
            if name.startswith(prefix) and "/" not in name[len(prefix):]}
