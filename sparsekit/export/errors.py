"""The one error type of artifact loading."""


class ArtifactError(ValueError):
    """An artifact that cannot be loaded: missing, corrupt, tampered, or from another format version."""
