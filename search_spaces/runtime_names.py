"""The names of the runtimes a model can be timed in (light: the CLI's flags offer them; search_spaces.runtimes
builds them)."""

RUNTIMES = ("eager", "compiled", "aoti", "onnxruntime")
