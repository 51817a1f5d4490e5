"""`python -m marlin_convert`: the same as the `marlin-convert` command."""
from .cli import entry

entry()
