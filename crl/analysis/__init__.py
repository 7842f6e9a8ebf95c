"""Analysis of trained models and evaluation results: circuit graphs, module
dropping, plots (`crl.analysis.plots`) and reports."""
