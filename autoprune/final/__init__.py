"""The final step: re-scoring, pruning the best policy, recovery, schedules, checks, summary."""
