"""doe-sr: Taguchi orthogonal-array studies of Keras super-resolution networks."""

__version__ = "0.1.0"
