"""Example training functions shipped with trainflow (used by deployments/specs and the docs)."""
