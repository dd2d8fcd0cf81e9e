"""The one error type a user's mistake raises; the CLI prints it as one line and exits 2."""

from __future__ import annotations


class AutocompError(Exception):
    """A problem with the user's input (file, key, path, model, data), not a bug.

    The message is a single line that names what is wrong and where.
    """


class ArtifactError(AutocompError, ValueError):
    """A file given as an ``.acz`` artifact is not a valid one (docs/artifact.md says what is)."""


class TrialFailed(Exception):
    """A trial could not produce a valid artifact (NaN loss, export error, timeout)."""
