"""Deployable artifacts: export a student to ``.acz``, load it back, open an ORT session.

Example::

    info = export(student, x[:1], calibration=[x[:32].numpy()], path="model.acz")
    session = open_session("model.acz", threads=1)
"""

from autocomp.artifact.build import ArtifactInfo, export
from autocomp.artifact.container import load_model, to_bytes
from autocomp.artifact.session import open_session

__all__ = ["ArtifactInfo", "export", "load_model", "open_session", "to_bytes"]
