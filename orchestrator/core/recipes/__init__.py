"""Recipes: the typed schema, reading a recipe file, `extends:` loading, `--set` overrides."""
