"""Small applications tests start in real processes. The `otel-kit run` tests copy theirs to a
temporary directory first, so reloads and recycled workers touch nothing in the repository."""
