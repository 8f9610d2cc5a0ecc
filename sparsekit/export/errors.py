"""The one error type of artifact loading."""
from sparsekit.errors import SparsekitError


class ArtifactError(SparsekitError, ValueError):
    """An artifact that cannot be loaded: missing, corrupt, tampered, or from another format version."""
