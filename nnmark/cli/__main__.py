"""`python -m nnmark.cli`."""

from nnmark.cli import main

main()
