"""The shop of examples/shop/ as a Flask app (WSGI)."""
