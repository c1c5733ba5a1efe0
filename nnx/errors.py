"""The exceptions nnx raises on purpose, each with a message that says what to do."""


class BackendUnavailableError(RuntimeError):
    """A backend was asked for by name but cannot run here (the cause is chained)."""


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or infinite loss; the model keeps its last finite parameters."""

    def __init__(self, message: str, pass_number: int):
        super().__init__(message)
        self.pass_number = pass_number
