"""``autocomp export``: rebuild a finished trial's artifact, write it in a format, and its card."""
