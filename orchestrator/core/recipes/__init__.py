"""The recipes, YAML the user edits, as typed objects: the schema of every section (schema), a
recipe file read safely (reading), `--set` and the make variables (overrides), and loading a
recipe with its `extends:` chain into `Loaded`, which knows where every value came from
(loading). Imports only common."""
