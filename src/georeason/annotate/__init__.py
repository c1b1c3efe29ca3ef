"""Question/answer generation for new EarthReason-style datasets (`georeason annotate`).

Implements the dataset generation pipeline of paper Sec. 3.2 / App. A.1; see docs/annotate.md. Submodules:
pipeline (the command), backends (chat endpoints and local models), cache, validate, prompts.toml.
"""
