"""Scoring a policy: the evaluator, training primitives, the rungs, the chance watch."""
