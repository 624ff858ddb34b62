"""What a run may take of the machine: the memory budget, model and data sizing, threads."""
