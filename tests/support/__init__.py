"""One home for the tests' shared helpers; test modules import from here only."""
