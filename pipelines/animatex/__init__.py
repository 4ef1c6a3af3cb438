"""Animate-X (ICLR 2025): pose-driven animation of any character. Spec: shared/specs/animatex.md."""
