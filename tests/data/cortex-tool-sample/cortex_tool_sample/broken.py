"""An entry point whose module cannot be imported: the node must skip it and carry on."""

import cortex_tool_sample_missing_dependency  # noqa: F401

BrokenTool = None
