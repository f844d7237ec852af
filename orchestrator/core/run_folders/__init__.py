"""What a run folder (runs/<name>/) holds: a role's paths, the trained-model manifest, the trace, the lock."""
