"""Serving: batch scores, marketing lists and the HTTP API. Reads registered models; never trains."""
