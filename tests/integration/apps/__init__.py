"""Small applications the `otel-kit run` tests start in real processes (copied to a temporary
directory first, so reloads and recycled workers touch nothing in the repository)."""
