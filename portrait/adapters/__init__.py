"""Adapters: commands that turn a known export into a data set folder in the contract."""
