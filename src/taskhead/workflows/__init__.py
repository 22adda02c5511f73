"""Workflows: what a command does from end to end (validate, train, predict, export) and the files they
write (the run directory, the scratch model)."""
