"""Pruning a model: channel surgery by a policy, masks, the sparse format, export."""
