"""`python -m camexp` (and `torchrun -m camexp`) run the CLI."""

from camexp.cli import main

main()
