"""Tests of MLflow tracking, the registry gate, approval and promotion to serving."""
