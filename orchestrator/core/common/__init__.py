"""The ground floor, which every room may use and which imports none of them: the one error
type (errors), atomic writes and content hashes (files), where things live (paths), the
subprocesses we start (process), progress shown to people (progress), the crash-safe JSONL
ledger (ledger), sandboxed Jinja rendering (render), the API-key rules (api_keys), and the
tables, figures and statistics of reports (report, stats).

What belongs here knows nothing of recipes, the competition or LLaMA-Factory."""
