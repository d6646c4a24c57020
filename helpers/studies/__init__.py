"""The experiment behind each notebook (sweeps 03/04, lowdata 05, recipe, routes and headline 06,
results 08, explorer 09) and the studies run apart (benchmark, budget)."""
