"""Hardware planning: parameter counts, FLOPs, memory and time estimates."""
