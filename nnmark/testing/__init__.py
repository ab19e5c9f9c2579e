"""Test helpers that ship with the package, so the tests and the benchmark share them."""
