"""Atomic, idempotent push of a SavedModel into a TF Serving model base path."""
