"""Reports: the files a trainer writes at the end of a run (tables, plots, pictures)."""
