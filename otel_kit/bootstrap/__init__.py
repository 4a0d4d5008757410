"""The directory `otel-kit run` puts first on PYTHONPATH: its `sitecustomize` module bootstraps
otel-kit in every Python process of the command (see `otel_kit._bootstrap`)."""
