"""The shop from the product brief, instrumented with one line: `setup_metrics(app)`."""
