"""The reference worker runtime: the seed's long-lived process pool (DESIGN, top; §2, §3)."""
