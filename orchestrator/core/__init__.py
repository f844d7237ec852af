"""What the stages share: recipes, LLaMA-Factory, the competition format, endpoints, files.

Core never imports a stage or click."""
