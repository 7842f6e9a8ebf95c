"""Post-hoc analyses of finished runs: circuit graphs, module dropping, few-shot
adaptation (`python -m crl.analysis`)."""
