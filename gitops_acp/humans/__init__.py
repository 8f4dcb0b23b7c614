"""Humans in the loop through git: approval branches, their files, and the decisions read from `main`."""
