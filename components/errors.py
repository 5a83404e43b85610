"""Errors a person can fix, shown by the CLI as one message (exit code 2). Kept apart from the stage
modules so that importing them costs nothing."""


class NotEnoughImages(RuntimeError):
    """Fewer photos survived curation than the configured minimum."""


class ModelNotAvailable(RuntimeError):
    """The named model is neither a built-in tiny model, a local folder, nor in the local hub cache."""


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


class CheckpointMismatch(RuntimeError):
    """The checkpoint was made with another config or other inputs than this run."""


class UnsupportedModel(RuntimeError):
    """The model folder is not a diffusers pipeline of a supported model family."""
