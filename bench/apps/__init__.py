"""One module per benchmarked variant; each defines the same FastAPI `app`."""
