"""`python -m nnmark`."""

from nnmark.cli import main

main()
