"""Exporters: `prometheus` (direct pull) and the push readers (`otlp`, `console`)."""
