"""The competition's data: its format (competition), submissions and their matching
(submission), label fixes (fixes) and the fallback letter (fallback), where training questions
come from (sources), LLaMA-Factory-format sets mixed into training (mixed_datasets), the
held-out split (heldout), the prompts and their worked examples (prompts, fewshot), the teacher
cache (teacher_cache), and reading a letter from a reply (answers).

Nothing here talks to LLaMA-Factory or a model; it may use run_folders, recipes and common."""
