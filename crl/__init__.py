"""crl: a JAX/Flax codebase for causal-representation learning."""

__version__ = "0.1.0"
