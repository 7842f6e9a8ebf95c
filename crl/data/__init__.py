"""Datasets: procedural generators from explicit causal models, and TFDS input.

`causal_shapes` is the embedded default image-classification dataset (a pure
JAX generator with named interventions); `multi_domain` draws its shapes in
four domains (and the 70-class pretraining source); `tfds_input` serves any
TFDS image classification dataset and `domain_folder` any DomainBed-style
folder under the same batch conventions; `pipeline` turns any of them into
sharded global batches; `augment` holds the device-side augmentations.
"""
