"""One module per integration; each adds only what upstream lacks."""
