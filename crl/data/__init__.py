"""Datasets: procedural generators from explicit causal models, and TFDS input.

`causal_shapes` is the embedded default image-classification dataset (a pure
JAX generator with named interventions); `tfds_input` serves any TFDS image
classification dataset under the same batch conventions; `pipeline` turns
either into sharded global batches.
"""
