"""Model families of crl (NAC and the layers shared by comparison models)."""
