"""KerasTuner search over any registered model (hypermodels built from the
specs' search spaces). The search itself lands with the tuning issue; the
search spaces already live on each `zoo.ModelSpec.search_space`."""
