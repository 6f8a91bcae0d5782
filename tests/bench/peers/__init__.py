"""eeveepy beside its single-process peers (Sopel, errbot): ``make bench-peers``."""
