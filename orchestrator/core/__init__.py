"""What the stages share, in rooms named for what they hold. Each room imports only the rooms
below it (pyproject.toml's `core rooms` contract, checked by lint-imports), so no import cycle
can form between them:

    serving        models served and talked to: servers, endpoints, agents, GPU memory
    llamafactory   the contract with LLaMA-Factory: rendered configs, its parser, launch, GPTQ
    data           the competition's data: its format, fixes, sources, prompts, few-shot
    run_folders    what runs/<name>/ holds: a role's paths, the trained manifest, the trace
    recipes        the typed recipes: schema, reading a file, `extends:` loading, `--set`
    project        the project state (.orchestrator/state.yaml), identity by content, the plan's records
    common         the ground floor: errors, files, paths, processes, progress, the ledger

Core never imports a stage, the CLI or click."""
