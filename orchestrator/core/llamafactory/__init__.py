"""The contract with LLaMA-Factory: what we render for it (configs), its own parser run on that
(parser) and the checks built on it (checks), the quantization a base declares and what serving
it loads (quantization), how a training is launched (launch, with cpu_ddp/), the chat template
on every serving path (chat_template), the GPTQ export (gptq) and LlamaBoard (llamaboard).

It may use data, run_folders, recipes and common; never serving."""
