"""Distribution shifts: interventions, corruptions (in JAX), natural pairs."""
