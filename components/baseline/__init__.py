"""Chooses the model a candidate is compared against (the Evaluator's baseline)."""
