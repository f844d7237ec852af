"""The contract with LLaMA-Factory: rendered configs, its parser, launch, quantization."""
