"""Text engines behind one protocol (`protocol.py`), one module per backend, and the factory.

Backends: `vllm` (in-process AsyncLLM, continuous batching), `openai` (a remote OpenAI-compatible
server), `hf` (transformers generate). Routes and the service never know which one runs.
"""
