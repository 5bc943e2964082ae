"""Video benchmark evaluation: lmms-eval-comparable prompts, answer extraction and scores (leanpo-eval)."""
