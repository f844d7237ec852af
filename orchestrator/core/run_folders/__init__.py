"""What a run folder (runs/<name>/) holds and how it is read: a role's paths and base model
(role_paths), what a training leaves there and its identity by content (trained), the trace an
infer run writes (trace), and the one-command-at-a-time lock (locks). Imports recipes and common."""
