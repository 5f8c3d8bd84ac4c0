"""agegender: Keras 3 / TensorFlow reproductions of multi-task age, gender and race studies."""

__version__ = "0.1.0"
