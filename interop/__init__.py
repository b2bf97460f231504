"""Drives the real npm packages (interop tests, benchmark). Not part of the installed library."""
