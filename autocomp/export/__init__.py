"""``autocomp export``: rebuild a finished trial's artifact, write it in a format, and its card."""

from autocomp.export.trial import export_trial

__all__ = ["export_trial"]
