"""One module per command of `orchestrator`: each a plain function the CLI calls."""
