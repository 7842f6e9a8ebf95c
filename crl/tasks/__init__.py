"""Tasks: what the generic loop in `crl.train` trains and evaluates."""
