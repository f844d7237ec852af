"""The competition's data: its format, submissions, fixes, training sources, prompts, few-shot."""
